"""The package's shape: small modules, no import cycle, no reaching into private members,
every module on the architecture page.

Both structural checks read the syntax tree, not the text, and each is shown catching a
made-up violation (the ``test_*_catches_*`` tests), so that a check that quietly stopped
seeing anything would fail.

The rule on private names: an underscore member of an object or class (``x._y``,
``Cls._y``, ``f()._y``, ``getattr(x, "_y")``) is its class's own business, read through
``self`` or ``cls`` only. A module-level underscore name of a private module (``_codec``'s
``_x``) is its package's business: modules of the same package may import it, nobody else.
The private modules themselves (``from . import _codec``) are the project's to import
anywhere inside the project. The few exceptions on the standard library's names are listed
below with their reasons.

Every touch of a dependency's private members (grpclib, h2, betterproto2) is listed, with
why, in one place: ``sandboxclient._wire._dependencies``. The guard finds each kind of
touch (``x._y``, ``super()._y``, ``getattr(x, "_y")``, ``cls._y`` outside a class,
``self._y`` or an override of ``_y`` in a subclass of a dependency's class where ``_y`` is
the dependency's, ``f(_y=...)`` to a dependency's callable, a name from a dependency's
private module) and fails on one that is not listed, on a listed one no longer made, and
on an installed dependency outside the versions the list was verified on (the checks beyond
``x._y`` live in ``tests/support/dependency_touches.py``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sandboxclient
from sandboxclient._wire import _dependencies
from tests.support.dependency_touches import dependency_touches, methods, version_problems

PACKAGE = Path(sandboxclient.__file__).parent
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
MAX_LINES = 500

# Underscore members that are a public protocol of the standard library, on any owner.
PROTOCOL_MEMBERS = {
    "_replace": "namedtuple's public API (grpclib's handlers are namedtuples)",
    "_asdict": "namedtuple's public API",
    "_name_": "enum's documented sunder attribute, set in a _missing_ hook",
    "_value_": "enum's documented sunder attribute, set in a _missing_ hook",
}
# Underscore names of other modules, by the module's full name.
MODULE_MEMBERS = {
    "os._exit": "the supervisor's exit that must skip the interpreter's clean-up",
}
# Every touch of a dependency's private members, by module and touch as the guard says it.
KNOWN_REACHES: dict[tuple[str, str], str] = {
    (touch.module, touch.touch): touch.why for touch in _dependencies.TOUCHES
}
_ATTR_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "_proto" in path.relative_to(PACKAGE).parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    anchor = package.split(".")
    anchor = anchor[: len(anchor) - node.level + 1]
    return ".".join([*anchor, node.module] if node.module else anchor)


def _imports(module: str, source: str, known: set[str], is_package: bool) -> set[str]:
    """The package's modules ``module`` imports, TYPE_CHECKING imports and lazy ones included
    (the generated ``_proto`` is left out: it imports nothing of the project's).

    ``from P import m`` of a submodule is an edge to ``P.m``; of any other name, an edge to
    ``P`` itself, whose ``__init__`` must have run to define it, parent packages included.
    """
    package = _package_of(module, is_package)
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.append(child if child in known else base)
        out.update(t for t in targets if t in known and t != module)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk of ``graph``, as the cycle it closes."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return cycles


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _may_import(importer_package: str, module: str, name: str, known: set[str]) -> bool:
    """Whether a module of ``importer_package`` may use ``module``'s private ``name``."""
    if f"{module}.{name}" in known:
        return True  # a private module of the project
    owner_package, _, leaf = module.rpartition(".")
    return module in known and leaf.startswith("_") and owner_package == importer_package


def _bound_modules(tree: ast.AST, package: str, known: set[str]) -> dict[str, str]:
    """Local names bound to modules by imports (the project's, and plain ``import m``)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    head = alias.name.partition(".")[0]
                    bound[head] = head
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def _reaches(tree: ast.AST) -> Iterator[tuple[int, ast.expr, str]]:
    """Every access to an underscore member: line, owner expression, member."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            yield node.lineno, node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTR_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            yield node.lineno, node.args[0], node.args[1].value


def _own_members(tree: ast.AST) -> set[int]:
    """The ``self._y``/``cls._y`` reaches (by node id) made through a method's first
    parameter or a name ``self``: its class's own business, unless the class is a
    dependency's subclass. (A ``cls`` that is no method's is anybody's.)"""
    own = {id(n) for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "self"}
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        for method in methods(cls):
            if not method.args.args:
                continue
            first = method.args.args[0].arg
            for node in ast.walk(method):
                if isinstance(node, ast.Name) and node.id == first:
                    own.add(id(node))
    return own


def private_reaches(
    module: str,
    source: str,
    known: set[str],
    is_package: bool,
    used: set[str] | None = None,
    namespace: Mapping[str, Any] | None = None,
) -> list[str]:
    """The accesses to other objects' and other packages' private names in ``source``, and
    the touches of a dependency's (``namespace``, the module's globals, finds those made
    through ``self`` in its classes); ``used`` collects the :data:`KNOWN_REACHES` met."""
    tree = ast.parse(source)
    package = _package_of(module, is_package)
    bound = _bound_modules(tree, package, known)
    own = _own_members(tree)
    found: list[tuple[int, str]] = []

    def report(line: int, touch: str) -> None:
        if (module, touch) in KNOWN_REACHES:
            if used is not None:
                used.add(f"{module}: {touch}")
        else:
            found.append((line, f"{module}:{line}: {touch}"))

    for line, owner, member in _reaches(tree):
        if id(owner) in own or member in PROTOCOL_MEMBERS:
            continue
        if isinstance(owner, ast.Name) and owner.id in bound:
            target = bound[owner.id]
            if f"{target}.{member}" in MODULE_MEMBERS or _may_import(
                package, target, member, known
            ):
                continue
        report(line, f"{ast.unparse(owner)}.{member}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            for alias in node.names:
                if _is_private(alias.name) and not _may_import(package, base, alias.name, known):
                    report(node.lineno, f"from {base} import {alias.name}")
    for line, touch in dependency_touches(tree, namespace):
        report(line, touch)
    return [where for _, where in sorted(set(found))]


def test_no_module_is_over_500_lines() -> None:
    big = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: _imports(name, path.read_text(), known, path.name == "__init__.py")
        for name, path in modules.items()
    }


def test_no_import_cycle() -> None:
    assert find_cycles(_graph()) == []


def test_the_import_graph_keeps_edges_to_parent_packages() -> None:
    # `from .. import __version__` needs sandboxclient's __init__ to have run.
    assert "sandboxclient" in _graph()["sandboxclient._cli._parser"]


def test_the_cycle_check_catches_a_cycle_through_a_package_init() -> None:
    known = {"pkg", "pkg._a", "pkg._b"}
    sources = {
        ("pkg", True): "from ._a import thing\n",
        ("pkg._a", False): "from ._b import other\nthing = other\n",
        ("pkg._b", False): "from . import VERSION\nother = VERSION\n",
    }
    graph = {name: _imports(name, src, known, init) for (name, init), src in sources.items()}
    assert find_cycles(graph) == [["pkg", "pkg._a", "pkg._b", "pkg"]]
    # A submodule imported through its package is no edge to the package.
    assert _imports("pkg._b", "from . import _a\n", known, False) == {"pkg._a"}


def test_no_object_reaches_into_another_objects_private_members() -> None:
    modules = _modules()
    known = set(modules)
    used: set[str] = set()
    found = [
        reach
        for name, path in sorted(modules.items())
        for reach in private_reaches(
            name,
            path.read_text(),
            known,
            path.name == "__init__.py",
            used,
            vars(importlib.import_module(name)),
        )
    ]
    assert found == []
    # An exception nobody needs any more goes.
    assert used == {f"{module}: {reach}" for module, reach in KNOWN_REACHES}


_VIOLATIONS = """\
import os
from grpclib import client
from grpclib.protocol import _Closing
from . import _codec
from ._codec import _FIELDS
from .sub._x import _y
from .sub import _x

class Box:
    def __init__(self, other):
        self._mine = 1
        other._theirs = 2
        Box._shared = 3
        make()._state = 4
        getattr(other, "_hidden")
        client.Channel._protocol_factory
        _codec._table
        os._wrap_close
        self.pair._replace(a=1)
        os._exit(0)
        _x._fine_or_not
"""


def test_the_private_member_check_catches_each_kind_of_reach() -> None:
    known = {"pkg", "pkg._codec", "pkg._box", "pkg.sub", "pkg.sub._x"}
    found = private_reaches("pkg._box", _VIOLATIONS, known, False)
    assert [f.partition(": ")[2] for f in found] == [
        "from grpclib.protocol import _Closing",
        "from pkg.sub._x import _y",
        "other._theirs",
        "Box._shared",
        "make()._state",
        "other._hidden",
        "client.Channel._protocol_factory",
        "os._wrap_close",
        "_x._fine_or_not",
    ]
    # A private module's name imported, or reached, from its own package is allowed.
    assert private_reaches("pkg.sub._z", "from ._x import _y\n", known, False) == []
    assert private_reaches("pkg._box", "from .sub import _x\n_x.f()\n", known, False) == []


def test_the_installed_dependencies_are_those_the_inventory_was_verified_on() -> None:
    installed = {v.package: importlib.metadata.version(v.package) for v in _dependencies.VERSIONS}
    assert version_problems(installed) == []


def test_the_version_check_catches_a_dependency_outside_its_range() -> None:
    problems = version_problems({"grpclib": "0.5.0", "h2": "4.4.1", "betterproto2": "0.10.0"})
    assert len(problems) == 1
    assert problems[0].startswith("grpclib 0.5.0 is outside")


def _touches_of(snippet: str) -> list[str]:
    """What the guard finds in ``snippet``, run as the module ``pkg._box``."""
    namespace: dict[str, Any] = {"__name__": "pkg._box"}
    exec(compile(snippet, "<snippet>", "exec"), namespace)
    found = private_reaches("pkg._box", snippet, {"pkg", "pkg._box"}, False, None, namespace)
    return [f.partition(": ")[2] for f in found]


def test_the_dependency_check_catches_an_inherited_private_member() -> None:
    snippet = """\
from grpclib.client import Channel

class Mine(Channel):
    def __init__(self) -> None:
        self._mine = 1

    def codec(self) -> object:
        return self._mine, self._codec, self._made_up
"""
    # _codec is grpclib's; _made_up is defined by no class of the project's, so it can only
    # be the dependency's (set where the syntax does not show it); _mine is the class's own.
    assert _touches_of(snippet) == ["Mine: self._codec", "Mine: self._made_up"]


def test_the_dependency_check_catches_an_override_of_a_private_hook() -> None:
    snippet = """\
from grpclib.client import Channel

class Mine(Channel):
    def _protocol_factory(self):
        return super()._protocol_factory()

    def _helper(self):
        return None
"""
    assert _touches_of(snippet) == ["Mine: def _protocol_factory", "super()._protocol_factory"]


def test_the_dependency_check_catches_a_subclass_of_a_subclass() -> None:
    snippet = """\
from grpclib.client import Stream

class Base(Stream):
    pass

class Leaf(Base):
    def done(self):
        return self._trailers_only
"""
    assert _touches_of(snippet) == ["Leaf: self._trailers_only"]


def test_the_dependency_check_catches_cls_outside_a_class() -> None:
    snippet = """\
def plan(cls):
    return cls._betterproto

class Box:
    @classmethod
    def make(cls):
        return cls._cache
"""
    assert _touches_of(snippet) == ["cls._betterproto"]


def test_the_dependency_check_catches_getattr_and_private_keywords() -> None:
    snippet = """\
import grpclib.config
from grpclib.client import Channel
from grpclib.config import Configuration

def hook():
    return getattr(Channel, "_protocol_factory", None)

def config():
    Configuration(_keepalive_time=1.0, http2_stream_window_size=2**16)
    return grpclib.config.Configuration(_keepalive_timeout=1.0)

def mine(**options):
    return mine(_private=1)
"""
    assert _touches_of(snippet) == [
        "Channel._protocol_factory",
        "Configuration(_keepalive_time=)",
        "grpclib.config.Configuration(_keepalive_timeout=)",
    ]


def test_the_dependency_check_catches_an_import_from_a_private_module() -> None:
    snippet = """\
import grpclib._typing
from grpclib._typing import IServable
from grpclib.protocol import _Headers
"""
    assert _touches_of(snippet) == [
        "import grpclib._typing",
        "from grpclib._typing import IServable",
        "from grpclib.protocol import _Headers",
    ]


def _documented(text: str) -> set[str]:
    """The modules the page names, as ``sub._mod``: in backquotes or parentheses, as a path
    (``oci/_caps.py``) or, under a heading naming a subpackage (``sandboxer/``), as a name
    of the subpackage's."""
    named: set[str] = set()
    section: list[str] = []
    for line in text.splitlines():
        if line.startswith("## "):
            heading = re.search(r"`(\w+)/`", line)
            section = [heading.group(1)] if heading else []
        for quoted, bracketed in re.findall(r"`([^`]+)`|\(([\w/]+)\)", line):
            for path in re.findall(r"[\w/]+", quoted or bracketed):
                parts = [p for p in path.removesuffix(".py").split("/") if p]
                named.add(".".join(parts if len(parts) > 1 else [*section, *parts]))
    return named


def test_every_module_is_on_the_architecture_page() -> None:
    named = _documented(ARCHITECTURE.read_text())
    missing = [
        name.removeprefix("sandboxclient.")
        for name, path in sorted(_modules().items())
        if path.name not in ("__init__.py", "__main__.py")
        and name.removeprefix("sandboxclient.") not in named
    ]
    assert missing == []


# -- the layers -----------------------------------------------------------------------------------
#
# docs/architecture.md draws them: the public handles at the root, what they are built on
# (`_plumbing/`) below them, the wire below that, the generated code below it; what the
# sandboxer and the stand-in share beside them; the facts every layer shares (`_facts/`) at
# the bottom, importing none of them.


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


WIRE = "sandboxclient._wire"
SERVE = "sandboxclient._serve"
FACTS = "sandboxclient._facts"
OCI = "sandboxclient.oci"
PLUMBING = "sandboxclient._plumbing"
# What the wire may import besides itself and the generated code: the errors and the records
# it converts messages to, and the leaf modules of facts every layer shares. The rule follows
# their imports too, so a record module that started importing a handle would break it.
WIRE_MAY_IMPORT = frozenset(
    {
        "sandboxclient.errors",
        "sandboxclient._models",
        "sandboxclient._image_models",
        "sandboxclient._process_models",
        "sandboxclient._sandbox_metrics",
        *(name for name in _modules() if _within(name, FACTS)),
    }
)
# What the facts may import besides one another: the errors, and the records (for a type:
# ``_network`` names ``SandboxStatus``), whose own imports the rule follows too. Never a
# handle, the wire or ``_serve``.
FACTS_MAY_IMPORT = frozenset({"sandboxclient.errors", "sandboxclient._models"})
# What the plumbing below the handles may import besides itself: what the wire may, the wire,
# the public ``oci``, and the subpackages below the handles that are built on it (the images'
# ``_imageops``, the members' ``_members``). The rule follows their imports too, so one of them
# that started importing a handle would break it.
PLUMBING_MAY_IMPORT = frozenset(
    {
        *WIRE_MAY_IMPORT,
        *(
            name
            for name in _modules()
            if any(
                _within(name, package)
                for package in (WIRE, OCI, "sandboxclient._imageops", "sandboxclient._members")
            )
        ),
    }
)
# The only packages, besides _serve itself, that may import _serve.
SERVE_USERS = ("sandboxclient.sandboxer", "sandboxclient.testing")
# Protobuf code: the generated stubs and their runtime.
PROTOBUF = ("sandboxclient._proto", "betterproto2")


def escapes(graph: dict[str, set[str]], layer: str, allowed: frozenset[str]) -> list[str]:
    """Every module outside ``layer`` and ``allowed`` that a module of ``layer`` reaches,
    directly or through ``allowed`` ones, as the import path that reaches it."""
    found: dict[str, str] = {}
    for start in sorted(m for m in graph if _within(m, layer)):
        parent: dict[str, str] = {}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for nxt in sorted(graph.get(node, ())):
                if nxt in parent or nxt == start:
                    continue
                parent[nxt] = node
                if _within(nxt, layer) or nxt in allowed:
                    queue.append(nxt)
                elif nxt not in found:
                    path = [nxt]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    found[nxt] = " -> ".join(reversed(path))
    return sorted(found.values())


def importers_outside(graph: dict[str, set[str]], layer: str, users: tuple[str, ...]) -> list[str]:
    """The imports of ``layer``'s modules by modules outside it and outside ``users``."""
    return sorted(
        f"{importer} -> {imported}"
        for importer, imports in graph.items()
        if not _within(importer, layer) and not any(_within(importer, u) for u in users)
        for imported in imports
        if _within(imported, layer)
    )


def _raw_imports(module: str, source: str, is_package: bool) -> set[str]:
    """Every module ``source`` names in an import, the project's or not, absolute."""
    package = _package_of(module, is_package)
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def forbidden_reaches(
    graph: dict[str, set[str]],
    raw: dict[str, set[str]],
    layer: str,
    forbidden: tuple[str, ...],
) -> list[str]:
    """The imports of ``forbidden`` modules by ``layer``'s modules or any module they reach."""
    seen = {m for m in graph if _within(m, layer)}
    queue = sorted(seen)
    while queue:
        for nxt in graph.get(queue.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return sorted(
        f"{module} imports {name}"
        for module in seen
        for name in raw.get(module, ())
        if any(_within(name, f) for f in forbidden)
    )


def test_the_wire_imports_no_handle() -> None:
    assert escapes(_graph(), WIRE, WIRE_MAY_IMPORT) == []


def test_the_wire_rule_catches_a_handle_reached_directly_or_through_a_record() -> None:
    graph = {
        "pkg._wire": set(),
        "pkg._wire._codec": {"pkg._wire._pb", "pkg._models"},
        "pkg._wire._pb": {"pkg._client"},
        "pkg._models": {"pkg._sandbox", "pkg.errors"},
        "pkg.errors": set(),
        "pkg._sandbox": {"pkg._wire._codec"},
        "pkg._client": set(),
    }
    allowed = frozenset({"pkg._models", "pkg.errors"})
    assert escapes(graph, "pkg._wire", allowed) == [
        "pkg._wire._codec -> pkg._models -> pkg._sandbox",
        "pkg._wire._codec -> pkg._wire._pb -> pkg._client",
    ]
    assert escapes({"pkg._wire._a": {"pkg.errors"}}, "pkg._wire", allowed) == []


def test_the_plumbing_imports_no_handle() -> None:
    graph = _graph()
    assert any(_within(m, PLUMBING) for m in graph)
    assert escapes(graph, PLUMBING, PLUMBING_MAY_IMPORT) == []


def test_the_plumbing_rule_catches_a_handle_reached_directly_or_through_a_subpackage() -> None:
    graph = {
        "pkg._plumbing": set(),
        "pkg._plumbing._connection": {"pkg._wire._transport", "pkg.errors"},
        "pkg._plumbing._wait": {"pkg._plumbing._connection", "pkg._process"},
        "pkg._plumbing._store": {"pkg._members._ending", "pkg._models"},
        "pkg._members._ending": {"pkg._plumbing._sandbox_io", "pkg._sandbox"},
        "pkg._plumbing._sandbox_io": set(),
        "pkg._wire._transport": set(),
        "pkg._models": set(),
        "pkg.errors": set(),
        "pkg._process": {"pkg._plumbing._wait"},
        "pkg._sandbox": {"pkg._plumbing._store"},
    }
    allowed = frozenset(
        {"pkg._wire._transport", "pkg._models", "pkg.errors", "pkg._members._ending"}
    )
    assert escapes(graph, "pkg._plumbing", allowed) == [
        "pkg._plumbing._store -> pkg._members._ending -> pkg._sandbox",
        "pkg._plumbing._wait -> pkg._process",
    ]
    # Handles importing the plumbing (and a subpackage importing it back) are the way down.
    graph["pkg._plumbing._wait"] = {"pkg._plumbing._connection", "pkg._models"}
    graph["pkg._members._ending"] = {"pkg._plumbing._sandbox_io", "pkg.errors"}
    assert escapes(graph, "pkg._plumbing", allowed) == []


def test_the_facts_import_no_handle_wire_or_serve() -> None:
    graph = _graph()
    assert any(_within(m, FACTS) for m in graph)
    assert escapes(graph, FACTS, FACTS_MAY_IMPORT) == []


def test_the_wire_may_import_the_facts() -> None:
    assert {m for m in _modules() if _within(m, FACTS)} <= WIRE_MAY_IMPORT


def test_the_facts_rule_catches_a_handle_wire_or_serve_import() -> None:
    graph = {
        "pkg._facts": set(),
        "pkg._facts._clock": set(),
        "pkg._facts._golang": {"pkg._facts._clock", "pkg.errors"},
        "pkg._facts._network": {"pkg._models", "pkg._wire._pb"},
        "pkg._facts._sizes": {"pkg._serve._fields"},
        "pkg._models": {"pkg._facts._golang", "pkg._sandbox"},
        "pkg.errors": set(),
        "pkg._wire._pb": set(),
        "pkg._serve._fields": set(),
        "pkg._sandbox": set(),
    }
    allowed = frozenset({"pkg.errors", "pkg._models"})
    assert escapes(graph, "pkg._facts", allowed) == [
        "pkg._facts._network -> pkg._models -> pkg._sandbox",
        "pkg._facts._network -> pkg._wire._pb",
        "pkg._facts._sizes -> pkg._serve._fields",
    ]


def test_only_the_sandboxer_and_the_stand_in_import_serve() -> None:
    assert importers_outside(_graph(), SERVE, SERVE_USERS) == []


def test_the_serve_rule_catches_a_client_module_importing_it() -> None:
    graph = {
        "pkg._serve": set(),
        "pkg._serve._server": {"pkg._serve._fields"},
        "pkg._serve._fields": set(),
        "pkg.sandboxer._base": {"pkg._serve._server"},
        "pkg.testing._fake": {"pkg._serve"},
        "pkg._client": {"pkg._serve._fields"},
        "pkg._server_info": set(),
        "pkg._cli._serve": {"pkg._server_info"},
    }
    users = ("pkg.sandboxer", "pkg.testing")
    assert importers_outside(graph, "pkg._serve", users) == ["pkg._client -> pkg._serve._fields"]


def test_oci_loads_no_protobuf_code() -> None:
    modules = _modules()
    raw = {
        name: _raw_imports(name, path.read_text(), path.name == "__init__.py")
        for name, path in modules.items()
    }
    assert forbidden_reaches(_graph(), raw, OCI, PROTOBUF) == []


def test_the_protobuf_rule_catches_an_import_at_any_depth() -> None:
    known = {"pkg", "pkg.oci", "pkg.oci._fs", "pkg._options", "pkg._wire", "pkg._wire._pb"}
    sources = {
        ("pkg.oci", True): "from ._fs import with_root\n",
        ("pkg.oci._fs", False): "def with_root():\n    from .._options import x\n",
        ("pkg._options", False): "from ._wire import _pb\n",
        ("pkg._wire._pb", False): "from .._proto.containerd import types\nimport betterproto2\n",
    }
    graph = {name: _imports(name, src, known, init) for (name, init), src in sources.items()}
    raw = {name: _raw_imports(name, src, init) for (name, init), src in sources.items()}
    assert forbidden_reaches(graph, raw, "pkg.oci", ("pkg._proto", "betterproto2")) == [
        "pkg._wire._pb imports betterproto2",
        "pkg._wire._pb imports pkg._proto.containerd",
        "pkg._wire._pb imports pkg._proto.containerd.types",
    ]
    # The rule reads imports, not text: a docstring naming betterproto2 is no import.
    raw["pkg._options"] = _raw_imports("pkg._options", '"""betterproto2"""\n', False)
    graph["pkg._options"] = set()
    assert forbidden_reaches(graph, raw, "pkg.oci", ("pkg._proto", "betterproto2")) == []
