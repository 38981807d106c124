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
on an installed dependency outside the versions the list was verified on.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sandboxclient
from sandboxclient._wire import _dependencies

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
DEPENDENCIES = frozenset(v.package for v in _dependencies.VERSIONS) | {"hpack"}
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
        for method in _methods(cls):
            if not method.args.args:
                continue
            first = method.args.args[0].arg
            for node in ast.walk(method):
                if isinstance(node, ast.Name) and node.id == first:
                    own.add(id(node))
    return own


def _methods(cls: ast.ClassDef) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The methods of a class body, those under an ``if`` in it included."""
    stack: list[ast.stmt] = list(cls.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node
        elif isinstance(node, ast.If | ast.Try):
            stack.extend(node.body + node.orelse)


def _is_dependency(module: str) -> bool:
    return module.partition(".")[0] in DEPENDENCIES


_dependency_member_cache: dict[type, frozenset[str]] = {}


def _dependency_members(cls: type) -> frozenset[str]:
    """The private names a dependency's class defines: on the class, annotated, or set on
    ``self`` in its methods."""
    found = _dependency_member_cache.get(cls)
    if found is not None:
        return found
    names = set(vars(cls)) | set(getattr(cls, "__annotations__", {}))
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        source = ""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            names.add(node.attr)
    found = _dependency_member_cache[cls] = frozenset(n for n in names if _is_private(n))
    return found


def _project_members(cls: type, node: ast.ClassDef | None) -> set[str]:
    """The names a project's class defines itself: on the class, or set on ``self``."""
    names = set(vars(cls)) | set(getattr(cls, "__annotations__", {}))
    if node is None:
        try:
            node = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]  # type: ignore[assignment]
        except (OSError, TypeError):
            return names
    assert node is not None
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
            names.add(sub.attr)
        elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(sub.name)
        elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
            names.add(sub.target.id)
    return names


def _subclass_touches(tree: ast.AST, namespace: Mapping[str, Any]) -> Iterator[tuple[int, str]]:
    """In each class with a dependency's class among its bases: an override of, or a reach
    through ``self``/``cls`` to, a private name the dependency defines, or one that no class
    of the project's in its MRO defines (so that it can only come from the dependency)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        cls = namespace.get(node.name)
        if not isinstance(cls, type):
            continue
        theirs_mro = [k for k in cls.__mro__ if _is_dependency(k.__module__)]
        if not theirs_mro:
            continue
        theirs = frozenset().union(*map(_dependency_members, theirs_mro))
        ours: set[str] = set()
        for k in cls.__mro__:
            if k.__module__ == cls.__module__ or k.__module__.startswith("sandboxclient."):
                ours |= _project_members(k, node if k is cls else None)
        for method in _methods(node):
            if _is_private(method.name) and method.name in theirs:
                yield method.lineno, f"{node.name}: def {method.name}"
            if not method.args.args:
                continue
            first = method.args.args[0].arg
            for sub in ast.walk(method):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == first
                    and _is_private(sub.attr)
                    and (sub.attr in theirs or sub.attr not in ours)
                ):
                    yield sub.lineno, f"{node.name}: {first}.{sub.attr}"


def _dependency_names(tree: ast.AST) -> dict[str, str]:
    """Local names bound by imports from a dependency, to the module or name they stand for."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_dependency(alias.name):
                    local = alias.asname or alias.name.partition(".")[0]
                    bound[local] = alias.name if alias.asname else local
        elif (
            isinstance(node, ast.ImportFrom)
            and not node.level
            and node.module
            and _is_dependency(node.module)
        ):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _dependency_touches(
    tree: ast.AST, namespace: Mapping[str, Any] | None
) -> Iterator[tuple[int, str]]:
    """What :func:`private_reaches` finds beyond ``x._y``: see :func:`_subclass_touches`,
    ``_y=`` keywords to a dependency's callable, and imports of a dependency's private
    modules."""
    if namespace is not None:
        yield from _subclass_touches(tree, namespace)
    bound = _dependency_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _root_name(node.func) in bound:
            for keyword in node.keywords:
                if keyword.arg is not None and _is_private(keyword.arg):
                    yield node.lineno, f"{ast.unparse(node.func)}({keyword.arg}=)"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_dependency(alias.name) and any(map(_is_private, alias.name.split("."))):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            parts = node.module.split(".")
            if _is_dependency(node.module) and any(map(_is_private, parts)):
                for alias in node.names:
                    if not _is_private(alias.name):  # those are reported as any other
                        yield node.lineno, f"from {node.module} import {alias.name}"


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
    for line, touch in _dependency_touches(tree, namespace):
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


def version_problems(installed: Mapping[str, str]) -> list[str]:
    """The dependencies whose ``installed`` version is outside the inventory's range."""
    return [
        f"{v.package} {installed[v.package]} is outside the versions the private-member "
        f"inventory (sandboxclient._wire._dependencies) was verified on ({v.series}*): read "
        "its touches and reliances against this version's source, then widen its range"
        for v in _dependencies.VERSIONS
        if not installed[v.package].startswith(v.series)
    ]


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
