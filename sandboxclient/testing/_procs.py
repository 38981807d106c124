"""The processes and mounts a private containerd leaves, found through /proc.

Used by :class:`~._daemon.ContainerdDaemon` to clean up after its shims and the processes
under them, which containerd itself does not stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from .._serve._procfs import stat_fields

__all__ = ("descendants", "kill_and_reap", "proc_pids", "running", "umount_under")

_MNT_DETACH: Final = 2


def proc_pids() -> list[int]:
    """Every pid in /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return None
    return fields[0], int(fields[1])


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited)."""
    info = _read_stat(pid)
    return info is not None and info[0] not in ("Z", "X")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in proc_pids():
        info = _read_stat(pid)
        if info is not None:
            children.setdefault(info[1], []).append(pid)
    return children


def descendants(roots: Iterable[int]) -> list[int]:
    """The children of ``roots``, their children and so on, found through /proc."""
    children = _children_map()
    found: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_and_reap(pids: Iterable[int], timeout: float = 10.0) -> None:
    """SIGKILL ``pids`` and wait, ``timeout`` seconds at most, until none of them runs."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def umount_under(top: Path) -> None:
    """Detach every mount at or below ``top`` (sandbox shm, task rootfs), deepest first."""
    prefix = str(top.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points: set[str] = set()
    for line in lines:
        # mountinfo escapes space, tab, newline and backslash as octal.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.add(point)
    if not points:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
        libc.umount2(os.fsencode(point), _MNT_DETACH)
