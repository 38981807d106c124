"""The daemon a benchmark talks to: a private real containerd with the Python sandboxer
plugged in as the proxy sandbox controller ``pysandbox``, started exactly as the tests do."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sandboxclient.testing import (
    PLUGIN_NAME,
    ContainerdUnavailable,
    PluggedContainerd,
    plugged_containerd,
)

__all__ = ("PLUGIN_NAME", "RealDaemon", "cpu_seconds", "real_daemon")

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of ``pid`` so far (its own threads, not its children)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rfind(")") + 2 :].split()
    # Fields 14 and 15 of stat(5) (utime, stime) sit at 11 and 12 after the command name.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class RealDaemon(PluggedContainerd):
    """A running containerd and the sandboxer it forwards Controller calls to."""

    @property
    def daemon_pid(self) -> int:
        """containerd's pid."""
        assert self.daemon.pid is not None
        return self.daemon.pid

    @property
    def sandboxer_pid(self) -> int:
        """The Python sandboxer's pid."""
        assert self.sandboxer.proc is not None
        return self.sandboxer.proc.pid


@contextlib.contextmanager
def real_daemon() -> Iterator[RealDaemon]:
    """Start containerd 2.x with the Python sandboxer, as the tests do."""
    try:
        with plugged_containerd(PLUGIN_NAME) as plugged:
            yield RealDaemon(plugged.daemon, plugged.sandboxer, plugged.plugin_name)
    except ContainerdUnavailable as exc:
        raise SystemExit(f"cannot start containerd: {exc}") from exc
