"""A process's start time, which tells it from a later process given the same pid."""

from __future__ import annotations

__all__ = ("start_time",)


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of
    ``/proc/PID/stat``), or None if there is no such process or it cannot be read.

    A zombie still has its start time, and still holds its pid, so that no other process can
    have it. ``/proc/PID/stat`` is readable by every user unless ``/proc`` is mounted with
    ``hidepid``.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The name (field 2) is in parentheses and may hold spaces or ")".
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None
