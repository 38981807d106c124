"""What the host has, for tests whose outcome depends on it: they ask here and assert the
outcome that goes with the answer, or skip saying what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

from sandboxclient.testing import ContainerdDaemon, busybox_rootfs
from sandboxclient.testing._images import busybox_problem
from sandboxclient.testing._locate import containerd_required
from tests.support.constants import NOBODY

__all__ = (
    "SYSTEM_PYTHON",
    "as_nobody",
    "busybox_root",
    "daemon_finds",
    "loaded_argv",
    "needs_root",
)

SYSTEM_PYTHON: Final = (
    shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
)
"""A Python any user can run (the venv's may be in a directory only root enters)."""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
"""Marks a test that must become another user."""


def as_nobody(statement: str) -> str:
    """Run the Python ``statement`` as uid and gid 65534 (no other group) in a child
    process; "ok", or the class name of the exception it raised."""
    code = (
        f"try:\n    {statement}\n    print('ok')\n"
        "except Exception as e:\n    print(type(e).__name__)\n"
    )
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", code],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def daemon_finds(daemon: ContainerdDaemon, program: str) -> str | None:
    """Where the daemon's shims and runc find ``program`` (they inherit its ``PATH``: its
    binaries' folder, then the test's), or None where it is not installed."""
    path = os.pathsep.join([str(daemon.bin_dir), os.environ.get("PATH", os.defpath)])
    return shutil.which(program, path=path)


def busybox_root(path: Path) -> Path:
    """A busybox root filesystem at ``path``. A host without a static busybox fails the test
    where containerd is required (``SANDBOXCLIENT_REQUIRE_CONTAINERD=1``, as in CI) and skips
    it elsewhere, naming what to install."""
    problem = busybox_problem()
    if problem is not None:
        if containerd_required():
            pytest.fail(problem)
        pytest.skip(problem)
    return busybox_rootfs(path)


def processes() -> Iterator[tuple[int, list[bytes]]]:
    """Every process on the host: its pid and its argv (one gone meanwhile is left out)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            yield int(name), argv[:-1] if argv and not argv[-1] else argv


def loaded_argv(pid: int, shows: Callable[[list[bytes]], bool], within: float = 5.0) -> list[bytes]:
    """``pid``'s argv once ``shows`` accepts it, or as it last read after ``within`` seconds
    (empty once the process is gone).

    A start is answered when the program's ``execve`` has begun (``posix_spawn`` returns, runc's
    init has opened its FIFO), and until the kernel has loaded the program the command line
    reads empty or still as what ran before, for a moment a loaded machine stretches to
    milliseconds: so it is read again, not once.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        argv = raw.split(b"\0")[:-1] if raw.endswith(b"\0") else raw.split(b"\0")
        if shows(argv) or time.monotonic() > deadline:
            return argv
        time.sleep(0.001)


def holders(path: Path, *, naming: bytes = b"") -> list[int]:
    """The pids of the host's processes that have ``path`` open (whose command line names
    ``naming``, if given)."""
    found = []
    for pid, argv in processes():
        if naming and not any(naming in a for a in argv):
            continue
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if any(link.removesuffix(" (deleted)") == str(path) for link in links):
            found.append(pid)
    return found
