"""Every program under examples/ runs to success as a user would run it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandboxclient.testing import require_or_skip_reason
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.constants import REPO_ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT
    )


def test_many_sandboxes_returns_every_exit_code() -> None:
    done = _run("examples/many_sandboxes.py", "40")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "40 sandboxes ran; 0 wrong exit codes; 0 left behind"


@pytest.mark.real
def test_wait_across_restart_gets_the_real_exit_code() -> None:
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    done = _run("examples/wait_across_restart.py")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "containerd killed" in lines
    assert "containerd restarted" in lines
    assert lines[-1] == "exit code 5 (error: None)"


def test_every_example_is_covered() -> None:
    tested = {"lifecycle.py", "many_sandboxes.py", "wait_across_restart.py"}
    assert {p.name for p in (REPO_ROOT / "examples").glob("*.py")} == tested


@pytest.mark.real
def test_lifecycle_example_runs_through_containerd_into_the_python_sandboxer(
    real_containerd: RealContainerd,
) -> None:
    real_containerd.ensure_running()
    done = _run(
        "examples/lifecycle.py",
        real_containerd.daemon.address,
        "--sandboxer",
        PLUGIN_NAME,
        "--namespace",
        new_namespace(),
    )
    assert done.returncode == 0, done.stderr
    assert "sandboxer pysandbox" in done.stdout
    assert done.stdout.rstrip().endswith("exit code 7")
