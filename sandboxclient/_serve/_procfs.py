"""Reading ``/proc/PID/stat``, for the sandboxer's metrics and the test daemon's clean-up."""

from __future__ import annotations

__all__ = ("stat_fields",)


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name: index 0 is the state
    (field 3 of proc(5)), 1 the parent's pid, 11 and 12 the user and system CPU ticks.

    The command name may hold spaces and parentheses, so it is skipped up to the last ")".
    Raises :class:`OSError` when the process is gone.
    """
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        raw = f.read()
    return raw[raw.rindex(")") + 2 :].split()
