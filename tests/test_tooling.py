"""The Makefile's pytest runs need only what ``pyproject.toml`` asks for: a feature of pytest
it uses (below, the release that brought it) raises the dev requirement and ``minversion``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import sandboxclient

ROOT = Path(sandboxclient.__file__).parent.parent
FEATURES = {
    # pytest @FILE: its arguments read from a file, one a line (pytest 8.2).
    r"pytest\b[^\n]*\s@\S": (8, 2),
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_pyproject_asks_for_a_pytest_that_has_what_the_makefile_uses() -> None:
    makefile = (ROOT / "Makefile").read_text()
    needed = max((v for p, v in FEATURES.items() if re.search(p, makefile)), default=(8, 0))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [requirement] = [
        r
        for r in project["project"]["optional-dependencies"]["dev"]
        if re.fullmatch(r"pytest\s*>=.*", r)
    ]
    assert _version(requirement.partition(">=")[2].strip()) >= needed
    assert _version(project["tool"]["pytest"]["ini_options"]["minversion"]) >= needed
