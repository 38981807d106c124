"""A real containerd with the Python sandboxer plugged in as a proxy sandbox controller.

What the project's real-daemon tests and benchmarks run against, and what users' own
integration tests can run against: containerd 2.1's own controllers cannot start a sandbox on
a plain host, the Python sandboxer can.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._daemon import ContainerdDaemon, ContainerdUnavailable, require_or_skip_reason

__all__ = ("PLUGIN_NAME", "PluggedContainerd", "SandboxerProcess", "plugged_containerd")

PLUGIN_NAME = "pysandbox"
"""The name under which containerd forwards Controller calls to the Python sandboxer."""


class SandboxerProcess:
    """``python -m sandboxclient.sandboxer`` running in a child process.

    It keeps its sandboxes in ``state_dir`` (by default ``sandboxer-state`` next to the
    socket), so it can be killed (:meth:`kill`) and started again (:meth:`start`) and take
    back the sandboxes that kept running meanwhile. :meth:`stop` (SIGTERM) kills them.
    """

    def __init__(self, socket_path: str, state_dir: str | None = None) -> None:
        self.socket_path = socket_path
        self.state_dir = state_dir or os.path.join(os.path.dirname(socket_path), "sandboxer-state")
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start it and wait until it says it listens."""
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandboxclient.sandboxer",
                "--socket",
                self.socket_path,
                "--state-dir",
                self.state_dir,
            ],
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line or not os.path.exists(self.socket_path):
            self.stop()
            raise RuntimeError(f"the Python sandboxer did not come up (said {line!r})")

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s): it stops its sandboxes and exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._release()

    def kill(self) -> None:
        """SIGKILL the sandboxer, as a crash would; its sandboxes keep running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._release()

    def _release(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


@dataclass
class PluggedContainerd:
    """A private containerd wired to a Python sandboxer through a proxy plugin."""

    daemon: ContainerdDaemon
    sandboxer: SandboxerProcess
    plugin_name: str = PLUGIN_NAME

    @property
    def address(self) -> str:
        """containerd's gRPC socket."""
        return self.daemon.address

    def ensure_running(self) -> None:
        """Bring back whichever of the two was taken down."""
        if not self.sandboxer.alive():
            self.sandboxer.start()
        if not self.daemon.alive():
            self.daemon.restart()


@contextlib.contextmanager
def plugged_containerd(plugin_name: str = PLUGIN_NAME) -> Iterator[PluggedContainerd]:
    """Start the Python sandboxer and a private containerd that forwards to it; stop both.

    Raises ``ContainerdUnavailable`` when no containerd 2.x can be run here (see
    ``require_or_skip_reason``).
    """
    reason = require_or_skip_reason()
    if reason is not None:
        raise ContainerdUnavailable(reason)
    tmp = tempfile.mkdtemp(prefix="sbx-")
    sandboxer = SandboxerProcess(str(Path(tmp) / "pysandbox.sock"))
    sandboxer.start()
    daemon = ContainerdDaemon(proxy_plugins={plugin_name: sandboxer.socket_path})
    try:
        daemon.start()
        yield PluggedContainerd(daemon, sandboxer, plugin_name)
    finally:
        daemon.cleanup()
        sandboxer.stop()
        shutil.rmtree(tmp, ignore_errors=True)
