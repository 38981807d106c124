"""The README's example runs as written, and so does the demo; the sandboxer's page shows
the private containerd config the tests run."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.support.backends import RealContainerd
from tests.support.constants import REPO_ROOT


def _python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
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
        [sys.executable, str(REPO_ROOT / "examples" / "lifecycle.py")],
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


def _shape(table: dict[str, object]) -> dict[str, object]:
    """The keys of a TOML document, nested, without the values (which name paths)."""
    return {k: _shape(v) if isinstance(v, dict) else None for k, v in table.items()}


@pytest.mark.real
def test_the_private_containerd_config_is_the_one_the_tests_run(
    real_containerd: RealContainerd,
) -> None:
    text = (REPO_ROOT / "docs" / "sandboxer.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if "root =" in b]
    assert len(blocks) == 1, "the sandboxer's page shows one private containerd config"
    documented = tomllib.loads(blocks[0])
    running = tomllib.loads(real_containerd.daemon.config_path.read_text())
    running.pop("proxy_plugins")
    running.pop("debug", None)  # the tests' log level, not something a daemon needs
    assert _shape(documented) == _shape(running)
    assert documented["plugins"]["io.containerd.nri.v1.nri"]["disable"] is True
