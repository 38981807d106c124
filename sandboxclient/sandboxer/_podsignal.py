"""The signal that ends an isolated sandbox, sent to its first process by the sandboxer.

A sandbox under runc with a pid namespace of its own ends with its first process: the
kernel kills every other process of the namespace when it dies. So the sandboxer signals that
process itself, through a pidfd, rather than through containerd's Tasks.Kill (a Containers.Get,
a Tasks.Get and a ``runc kill`` run by the shim, about 11 ms): :func:`first_process` notes at
Start which process it is (its pid and start time), and :func:`signal_first` checks, before
it signals, that the pid is still that process. Without that note (a sandbox taken back from
the state directory, one that shares a pid namespace, one under gVisor, whose host pid is its
kernel) or when the check fails, the caller uses Tasks.Kill as before.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Any

from ._podstate import PodEntry

__all__ = ("first_process", "signal_first")


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # Field 22; the name (field 2) is in parentheses and may hold spaces or ")".
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def first_process(pid: int, spec: Mapping[str, Any], gvisor: bool) -> tuple[int, int] | None:
    """``(pid, start time)`` of a sandbox's first process when ending it ends the sandbox (a
    pid namespace of its own, not gVisor's); None otherwise."""
    namespaces = (spec.get("linux") or {}).get("namespaces") or []
    own = any(n.get("type") == "pid" and not n.get("path") for n in namespaces)
    if gvisor or not own:
        return None
    started = _start_time(pid)
    return None if started is None else (pid, started)


def signal_first(entry: PodEntry, signum: int) -> bool:
    """Send ``signum`` to the sandbox's first process through a pidfd if it is known and still
    that process (see the module's docstring); whether it was sent."""
    if entry.first is None:
        return False
    pid, started = entry.first
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        # The pidfd is of the process the pid named at the open: if the pid still names ours
        # after it, ours held the pid all along (it started before), so the pidfd is ours.
        if _start_time(pid) != started:
            return False
        signal.pidfd_send_signal(fd, signum)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
