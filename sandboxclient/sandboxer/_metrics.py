"""What Metrics answers for a sandbox process: its CPU time and memory, from /proc."""

from __future__ import annotations

import os
from typing import Any

from .._serve._procfs import stat_fields

__all__ = ("process_metrics",)


def process_metrics(pid: int) -> dict[str, Any]:
    """pid, resident bytes, threads and CPU seconds (user, system, both) of ``pid``.

    Raises :class:`OSError` (or ValueError/IndexError for a /proc it cannot read) when the
    process is gone.
    """
    fields = stat_fields(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    user = int(fields[11]) / ticks
    system = int(fields[12]) / ticks
    return {
        "pid": pid,
        "rss_bytes": _exact_rss(pid) or int(fields[21]) * page,
        "threads": int(fields[17]),
        "cpu_user_seconds": user,
        "cpu_system_seconds": system,
        "cpu_seconds": user + system,
    }


def _exact_rss(pid: int) -> int | None:
    """Resident bytes counted from the page tables. The figure in /proc/PID/stat comes from
    counters that lag by up to a batch per CPU: a process that just started may show 0 there.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
