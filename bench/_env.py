"""The daemon a benchmark talks to: a private real containerd with the Python sandboxer
plugged in as the proxy sandbox controller ``pysandbox``, started exactly as the tests do."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandboxclient.testing._daemon import ContainerdDaemon, require_or_skip_reason
from tests.conftest import PLUGIN_NAME, SandboxerProcess

__all__ = ("PLUGIN_NAME", "RealDaemon", "cpu_seconds", "real_daemon")

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of ``pid`` so far (its own threads, not its children)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rfind(")") + 2 :].split()
    # Fields 14 and 15 of stat(5) (utime, stime) sit at 11 and 12 after the command name.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class RealDaemon:
    """A running containerd and the sandboxer it forwards Controller calls to."""

    daemon: ContainerdDaemon
    sandboxer: SandboxerProcess

    @property
    def address(self) -> str:
        """containerd's gRPC socket."""
        return self.daemon.address

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
    """Start containerd 2.x with the Python sandboxer, as ``tests/conftest.py`` does."""
    reason = require_or_skip_reason()
    if reason is not None:
        raise SystemExit(f"cannot start containerd: {reason}")
    tmp = tempfile.mkdtemp(prefix="sbx-bench-")
    sandboxer = SandboxerProcess(str(Path(tmp) / "pysandbox.sock"))
    sandboxer.start()
    daemon = ContainerdDaemon(proxy_plugins={PLUGIN_NAME: sandboxer.socket_path})
    try:
        daemon.start()
        yield RealDaemon(daemon, sandboxer)
    finally:
        daemon.cleanup()
        sandboxer.stop()
        shutil.rmtree(tmp, ignore_errors=True)
