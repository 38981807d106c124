"""The package's shape: small modules, no import cycle, no reaching into private members."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sandboxclient

PACKAGE = Path(sandboxclient.__file__).parent
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "_proto" in path.relative_to(PACKAGE).parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports, TYPE_CHECKING imports and lazy ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def test_no_module_is_over_500_lines() -> None:
    big = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}


def test_no_import_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # A package's __init__ re-exports its modules; an import of a sibling through the
    # package is an edge to the package, which is fine unless the package needs it back.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :]
                if not all(m.count(".") == 1 and m == "sandboxclient" for m in cycle):
                    cycles.append([*cycle, nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    # The top-level package importing its own modules is no cycle of theirs.
    real = [c for c in cycles if not (c[0] == "sandboxclient" or c[-1] == "sandboxclient")]
    assert real == []


_REACH = re.compile(r"\b(?!self\b|cls\b)([a-z_][a-z0-9_]*)\.(_[a-z][a-z0-9_]*)\b")
_ALLOWED_OWNERS = {"os", "sys", "asyncio", "sandboxclient"}  # modules, not objects
_ALLOWED_MEMBERS = {
    "_replace",  # namedtuple's public API, underscore and all
    "_asdict",
    "_unknown_fields",  # betterproto2's, read by the version-guarded codec alone
}


def test_no_object_reaches_into_another_objects_private_members() -> None:
    found = []
    for name, path in _modules().items():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for owner, member in _REACH.findall(code):
                if owner in _ALLOWED_OWNERS or member in _ALLOWED_MEMBERS:
                    continue
                if member.startswith("__") or member.endswith("_"):
                    continue  # dunder and enum's sunder names are public protocol
                found.append(f"{name}:{number}: {owner}.{member}")
    assert found == []
