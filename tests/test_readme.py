"""The README's example runs as written, and so does the demo."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_example_runs_as_written() -> None:
    blocks = _python_blocks()
    assert blocks, "the README has no python example"
    done = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "3 b'hello\\n'", lines
    assert re.fullmatch(r"pid \d+ exited with 143", lines[2]), lines
    assert lines[3] == "['sb1']"
    assert lines[4].startswith("gone:")


def test_demo_prints_each_step_and_the_exit_code() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lifecycle.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for step in (
        "created  demo1",
        "started  pid",
        "ran      exit code 7, stdout b'hello\\n', stderr b'oops\\n'",
        "stopped",
        "exited   code 143",
        "shut down; sandboxes left: 0",
    ):
        assert step in out, out
    assert out.rstrip().endswith("exit code 7")
