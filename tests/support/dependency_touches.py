"""The guard on touches of a dependency's private members that ``x._y`` does not show.

``tests/test_layout.py`` finds the plain reaches (``x._y``, ``getattr(x, "_y")``); this
finds the rest: in a subclass of a dependency's class, an override of, or a reach through
``self``/``cls`` to, the dependency's private names; ``_y=`` keywords to a dependency's
callable; imports from a dependency's private module. What may be touched is listed in
``sandboxclient._wire._dependencies``, with the versions the list was verified on.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

from sandboxclient._wire import _dependencies

__all__ = ("DEPENDENCIES", "dependency_touches", "methods", "version_problems")

DEPENDENCIES = frozenset(v.package for v in _dependencies.VERSIONS) | {"hpack"}
"""The libraries whose private members are the inventory's business."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def methods(cls: ast.ClassDef) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
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
        for method in methods(node):
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


def dependency_touches(
    tree: ast.AST, namespace: Mapping[str, Any] | None
) -> Iterator[tuple[int, str]]:
    """The touches of a dependency's private members beyond ``x._y``: see
    :func:`_subclass_touches`,
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


def version_problems(installed: Mapping[str, str]) -> list[str]:
    """The dependencies whose ``installed`` version is outside the inventory's range."""
    return [
        f"{v.package} {installed[v.package]} is outside the versions the private-member "
        f"inventory (sandboxclient._wire._dependencies) was verified on ({v.series}*): read "
        "its touches and reliances against this version's source, then widen its range"
        for v in _dependencies.VERSIONS
        if not installed[v.package].startswith(v.series)
    ]
