"""A process's start time, which tells it from a later process given the same pid."""

from __future__ import annotations

__all__ = ("running_start_time", "start_time")

_EXITED = (b"Z", b"X", b"x")
"""The states of ``/proc/PID/stat`` of a process that has exited: a zombie, or dead."""


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the name (the state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The name (field 2) is in parentheses and may hold spaces or ")".
        return stat[stat.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def _started(fields: list[bytes] | None) -> int | None:
    try:
        return None if fields is None else int(fields[19])
    except (ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of
    ``/proc/PID/stat``), or None if there is no such process or it cannot be read.

    A zombie still has its start time, and still holds its pid, so that no other process can
    have it. ``/proc/PID/stat`` is readable by every user unless ``/proc`` is mounted with
    ``hidepid``.
    """
    return _started(_stat(pid))


def running_start_time(pid: int) -> int | None:
    """As :func:`start_time`, but None too for a process that has exited and is not reaped
    yet (a zombie): it still holds its pid, but no longer its namespaces."""
    fields = _stat(pid)
    if fields is None or not fields or fields[0] in _EXITED:
        return None
    return _started(fields)
