"""The signal that ends an isolated sandbox, sent to its first process by the sandboxer.

A sandbox under runc with a pid namespace of its own ends with its first process: the
kernel kills every other process of the namespace when it dies. So the sandboxer signals that
process itself, through a pidfd, rather than through containerd's Tasks.Kill (a Containers.Get,
a Tasks.Get and a ``runc kill`` run by the shim, about 11 ms): :func:`first_process` notes at
Start which process it is (its pid and start time), and :func:`signal_first` checks, before
it signals, that the pid is still that process. Without that note (a sandbox taken back from
the state directory, one that shares a pid namespace, one under gVisor, whose host pid is its
kernel), when the check fails, or when the sandbox is frozen by cgroup v1's freezer (a
paused task, which no signal ends until it is thawed: ``runc kill --all`` thaws it), the
caller uses Tasks.Kill as before. The note is taken only once the task has started: should
its first process have exited at once and its pid gone to another, the note would name that
one, so it is taken only of a process that is pid 1 of a pid namespace below the
sandboxer's (read between two reads of its start time, so of the same process).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._facts._pidstart import start_time

__all__ = ("FirstProcess", "first_process", "signal_first")

_FREEZER: Final = "/sys/fs/cgroup/freezer"


@dataclass(frozen=True, slots=True)
class FirstProcess:
    """A sandbox's first process, as noted at its Start."""

    pid: int
    started: int
    """Its start time, in clock ticks after boot (``/proc/PID/stat``)."""
    freezer_state: str | None
    """Its cgroup v1 freezer's state file, or None (cgroup v2, whose freezer lets SIGKILL
    through)."""


def _freezer_state(pid: int) -> str | None:
    """The freezer.state file of process ``pid``'s cgroup v1 freezer, or None."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "freezer" in controllers.split(","):
                    return os.path.join(_FREEZER, path.lstrip("/"), "freezer.state")
    except (OSError, ValueError):
        pass
    return None


def _first_of_a_namespace(pid: int) -> bool:
    """Whether process ``pid`` is the first process (pid 1) of a pid namespace below ours."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        pass
    return False


def first_process(pid: int, spec: Mapping[str, Any], gvisor: bool) -> FirstProcess | None:
    """A sandbox's first process, when ending it ends the sandbox (a pid namespace of its
    own, not gVisor's); None otherwise, and when ``pid`` no longer names the first process
    of a pid namespace (it exited at once and the pid went to another process)."""
    namespaces = (spec.get("linux") or {}).get("namespaces") or []
    own = any(n.get("type") == "pid" and not n.get("path") for n in namespaces)
    if gvisor or not own:
        return None
    started = start_time(pid)
    if started is None or not _first_of_a_namespace(pid) or start_time(pid) != started:
        return None
    return FirstProcess(pid, started, _freezer_state(pid))


def _thawed(path: str | None) -> bool:
    """Whether the freezer of ``path`` lets a signal end its processes (no file: no freezer)."""
    if path is None:
        return True
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() == "THAWED"
    except FileNotFoundError:
        return True
    except OSError:
        return False


def signal_first(first: FirstProcess | None, signum: int) -> bool:
    """Send ``signum`` to the sandbox's first process through a pidfd if it is known and still
    that process (see the module's docstring); whether it was sent."""
    if first is None or not _thawed(first.freezer_state):
        return False
    pid, started = first.pid, first.started
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        # The pidfd is of the process the pid named at the open: if the pid still names ours
        # after it, ours held the pid all along (it started before), so the pidfd is ours.
        if start_time(pid) != started:
            return False
        signal.pidfd_send_signal(fd, signum)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
