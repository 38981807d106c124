"""Every Python example of the guide runs as pasted: as a program, or a test file under pytest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.constants import REPO_ROOT

_BLOCKS = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "docs" / "guide.md").read_text(), re.S)


def test_the_guide_has_examples() -> None:
    assert len(_BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(_BLOCKS)))
def test_a_guide_example_runs_as_pasted(index: int, tmp_path: Path) -> None:
    code = _BLOCKS[index]
    assert "await " not in code.split("async def", 1)[0], "top-level await"
    source = tmp_path / f"test_guide_example_{index}.py"
    source.write_text(code)
    if code.startswith("# A test file"):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source)]
    else:
        command = [sys.executable, str(source)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
