"""An isolated sandbox's output log, bounded: its task writes to a FIFO that a keeper
process (:mod:`._logcap`) copies to the log up to a limit, counting what it drops.

The keeper is started before the task and detached from the sandboxer, so the log goes on
being kept (and bounded) while the sandboxer is restarted; it ends once the task and all
that inherited its output are gone. The count of dropped bytes is in the sandbox's
directory (:data:`DROPPED_FILE`) and shows in Status as ``info["log_dropped_bytes"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Final

from ._stages import mark

__all__ = ("DEFAULT_LOG_LIMIT", "DROPPED_FILE", "LOG_PIPE", "LogKeeper", "dropped_bytes")

DEFAULT_LOG_LIMIT: Final = 16 * 2**20
"""Bytes of a sandbox's output kept in its log unless the sandboxer is told otherwise."""
LOG_PIPE: Final = "output.pipe"
"""The FIFO the sandbox's task writes its output to, in its directory."""
DROPPED_FILE: Final = "output.dropped"
"""How many bytes of output were dropped past the limit, in the sandbox's directory."""

_BOOT: Final = (
    "import sys\n"
    f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
    "from _logcap import run\n"
    "run()\n"
)
_READY_TIMEOUT: Final = 10.0


def dropped_bytes(directory: str) -> int:
    """The bytes the sandbox whose files are in ``directory`` had dropped (0 when none)."""
    try:
        with open(os.path.join(directory, DROPPED_FILE), "rb") as f:
            text = f.read(32)
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


class LogKeeper:
    """A started keeper: :attr:`fifo` is what the task's output goes to;
    :meth:`release` once the task started (or failed to)."""

    def __init__(self, release_fd: int, fifo: str) -> None:
        self._release_fd: int | None = release_fd
        self.fifo = fifo

    @classmethod
    async def start(cls, directory: str, log: str, limit: int) -> LogKeeper:
        """Make the FIFO in ``directory`` and start its keeper, which appends to ``log`` (an
        existing file) up to ``limit`` bytes; OSError when it cannot be started."""
        fifo = os.path.join(directory, LOG_PIPE)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, DROPPED_FILE))
        os.mkfifo(fifo, 0o600)
        # The keeper's stdin is a pipe of our own, not asyncio's: asyncio closes a child's
        # stdin once the child (here the parent the keeper forked from) has exited.
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        keeper = cls(write_end, fifo)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                "-c",
                _BOOT,
                fifo,
                log,
                os.path.join(directory, DROPPED_FILE),
                str(limit),
                stdin=read_end,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                cwd="/",
                env={},
            )
        except BaseException:
            keeper.release()
            raise
        finally:
            os.close(read_end)
        try:
            assert process.stdout is not None
            async with asyncio.timeout(_READY_TIMEOUT):
                ready = await process.stdout.readline()
                await process.wait()
        except BaseException:
            keeper.release()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        if ready != b"ready\n" or process.returncode != 0:
            keeper.release()
            raise OSError(f"the log keeper did not start (exit status {process.returncode})")
        mark("log keeper")
        return keeper

    def release(self) -> None:
        """Tell the keeper the task's writers are open, or will never be: it ends once they
        are all closed. Idempotent."""
        fd, self._release_fd = self._release_fd, None
        if fd is not None:
            os.close(fd)
