"""The committed generated code is what ``make generate`` produces, and stays private."""

from __future__ import annotations

import filecmp
import importlib.util
import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import sandboxclient
import sandboxclient.testing
from tests.support.constants import REPO_ROOT as ROOT


def _diff(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"only in one: {n}" for n in cmp.left_only + cmp.right_only]
    out += [f"differs: {n}" for n in cmp.diff_files]
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    out += [f"differs: {n}" for n in mismatch + errors if f"differs: {n}" not in out]
    for sub in cmp.common_dirs:
        out += [f"{sub}/{line}" for line in _diff(a / sub, b / sub)]
    return out


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.fail("grpcio-tools is missing: install the dev extra")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = tmp_path / "_proto"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate.py"), str(out)],
        check=True,
        env=env,
        capture_output=True,
    )
    assert _diff(ROOT / "sandboxclient" / "_proto", out) == [], "run 'make generate' and commit"


def _annotations(obj: object) -> list[str]:
    found: list[str] = []
    targets = []
    if inspect.isclass(obj):
        targets = [
            m
            for n, m in inspect.getmembers(obj)
            if not n.startswith("_") and (callable(m) or isinstance(m, property))
        ]
        targets.append(obj)
    elif callable(obj):
        targets = [obj]
    for target in targets:
        func = target.fget if isinstance(target, property) else target
        try:
            hints = typing.get_type_hints(func)
        except Exception:
            hints = getattr(func, "__annotations__", {})
        found += [repr(h) for h in hints.values()]
    return found


@pytest.mark.parametrize("module", [sandboxclient, sandboxclient.testing])
def test_no_public_signature_exposes_generated_types(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        for hint in _annotations(getattr(module, name)):
            assert "_proto" not in hint, f"{name}: {hint}"


def test_public_all_is_a_sorted_tuple_of_documented_names() -> None:
    assert isinstance(sandboxclient.__all__, tuple)
    for name in sandboxclient.__all__:
        obj = getattr(sandboxclient, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_import_needs_no_protobuf_runtime() -> None:
    # betterproto2 generates its own google.protobuf types; the protobuf package stays unused.
    code = (
        "import sys; sys.modules['google.protobuf'] = None; "
        "import sandboxclient, sandboxclient.testing; "
        "assert 'google.protobuf' not in [m for m in sys.modules if sys.modules[m]]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
