"""An isolated sandbox's output log, bounded: its task writes to a FIFO that the sandboxer's
keeper process (:mod:`._logcap`, one for all of its sandboxes) copies to the log up to a
limit, counting what it drops.

The keeper is started on the first Start and detached from the sandboxer, so the logs go on
being kept (and bounded) while the sandboxer is restarted; a sandboxer started again starts
a keeper of its own for its new sandboxes, and the old one ends once the last of its logs
has (its task and all that inherited its output gone). A Start costs a FIFO, three opens and
one message, no process. The count of dropped bytes is in the sandbox's directory
(:data:`DROPPED_FILE`) and shows in Status as ``info["log_dropped_bytes"]``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import socket
import sys
from typing import Final

from ._stages import mark

__all__ = (
    "DEFAULT_LOG_LIMIT",
    "DROPPED_FILE",
    "LOG_PIPE",
    "LogKeep",
    "LogKeepers",
    "dropped_bytes",
)

DEFAULT_LOG_LIMIT: Final = 16 * 2**20
"""Bytes of a sandbox's output kept in its log unless the sandboxer is told otherwise."""
LOG_PIPE: Final = "output.pipe"
"""The FIFO the sandbox's task writes its output to, in its directory."""
DROPPED_FILE: Final = "output.dropped"
"""How many bytes of output were dropped past the limit, in the sandbox's directory."""

# Loaded from its file, not through sys.path: the package's own _socket.py would shadow the
# standard library's _socket module.
_BOOT: Final = (
    "import importlib.util as u\n"
    "s = u.spec_from_file_location('_logcap', "
    f"{os.path.join(os.path.dirname(os.path.abspath(__file__)), '_logcap.py')!r})\n"
    "m = u.module_from_spec(s)\n"
    "s.loader.exec_module(m)\n"
    "m.run()\n"
)
_START_TIMEOUT: Final = 10.0
_OPEN: Final = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def dropped_bytes(directory: str) -> int:
    """The bytes the sandbox whose files are in ``directory`` had dropped (0 when none)."""
    try:
        with open(os.path.join(directory, DROPPED_FILE), "rb") as f:
            text = f.read(32)
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


class LogKeep:
    """A sandbox's log in the keeper's hands: :attr:`fifo` is what the task's output goes
    to; :meth:`release` once the task started (or failed to)."""

    def __init__(self, keepers: LogKeepers, number: int, fifo: str) -> None:
        self._keepers: LogKeepers | None = keepers
        self._number = number
        self.fifo = fifo

    def release(self) -> None:
        """Tell the keeper the task's writers are open, or will never be: it lets go of the
        log once they are all closed. Idempotent."""
        keepers, self._keepers = self._keepers, None
        if keepers is not None:
            keepers.send({"release": self._number})


class LogKeepers:
    """The keeper of one sandboxer's logs (started on first use; see the module's
    docstring); :meth:`close` when the sandboxer lets go of its sandboxes."""

    def __init__(self) -> None:
        self._control: socket.socket | None = None
        self._starting = asyncio.Lock()
        self._count = 0

    async def keep(self, directory: str, log: str, limit: int) -> LogKeep:
        """Make the FIFO in ``directory`` and hand it to the keeper, which appends what comes
        through it to ``log`` (an existing file) up to ``limit`` bytes; OSError when that
        cannot be done."""
        fifo = os.path.join(directory, LOG_PIPE)
        for stale in (fifo, os.path.join(directory, DROPPED_FILE)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        os.mkfifo(fifo, 0o600)
        fds: list[int] = []
        try:
            # Both ends, before the task exists: in flight to the keeper, they keep the FIFO
            # open, so the shim's opening it never waits and no gap reads as the end.
            fds.append(os.open(fifo, os.O_RDONLY | _OPEN))
            fds.append(os.open(fifo, os.O_WRONLY | _OPEN))
            fds.append(os.open(log, os.O_WRONLY | os.O_APPEND | _OPEN))
            self._count += 1
            message = {"keep": self._count, "dropped": os.path.join(directory, DROPPED_FILE),
                       "limit": limit}  # fmt: skip
            try:
                self._send(await self._started(), message, fds)
            except OSError:  # the keeper is gone (killed): a new one for this and the next
                self.close()
                self._send(await self._started(), message, fds)
        finally:
            for fd in fds:
                os.close(fd)
        mark("log keeper")
        return LogKeep(self, self._count, fifo)

    def _send(self, control: socket.socket, message: object, fds: list[int]) -> None:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        control.sendmsg([json.dumps(message).encode()], rights)

    def send(self, message: object) -> None:
        """Send the keeper ``message`` (without descriptors); a keeper gone is let be (its
        socket's end released every log it had)."""
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._send(self._control, message, [])

    async def _started(self) -> socket.socket:
        async with self._starting:
            if self._control is None:
                self._control = await self._start()
            return self._control

    async def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", _BOOT, stdin=theirs.fileno(),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                cwd="/", env={},
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            async with asyncio.timeout(_START_TIMEOUT):  # its parent exits once it is detached
                await process.wait()
        except BaseException:
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        if process.returncode != 0:
            ours.close()
            raise OSError(f"the log keeper did not start (exit status {process.returncode})")
        # A keeper that stops reading must fail a Start, not block the sandboxer.
        ours.setblocking(False)
        return ours

    def close(self) -> None:
        """Let go of the keeper: it releases every log not yet released and ends after the
        last one. The next :meth:`keep` starts another. Idempotent."""
        control, self._control = self._control, None
        if control is not None:
            control.close()
