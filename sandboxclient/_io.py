"""A process's standard streams, as containerd's shims take them: FIFOs, files or nothing.

A PIPE is a FIFO in a private directory (mode 0700), opened here before the task or exec
is created: stdout and stderr read ends through the event loop's read-pipe transports into
``asyncio.StreamReader``s, stdin's write end through a write-pipe transport (with a read
end held until the shim has opened its own, so the open cannot block and nothing written
early is lost). Once the shim has its ends (after Create for a task, Start for an exec)
the FIFOs and their directory are removed from the file system: open ends keep working,
and nothing is left on disk even if this process dies.

The runc shim does not open stdin's FIFO within Create or Start: it takes an ``O_PATH``
handle there and opens its read end (and its own write end) from a goroutine, which may run
after the reply. Letting go of the held reader at the reply would leave the FIFO without a
reader for a moment: a write then fails (EPIPE, the input is lost), and were our write end
closed and CloseIO done before the shim's goroutine ran, its open would wait for a writer
that never comes (the process never reads EOF). So :meth:`ProcessIO.shim_attached` lets go
of the held reader only once a reader of the shim's is seen (a non-blocking open for writing
succeeds only while a FIFO has a reader). No event says when another process opened a FIFO,
so this is polled, from 1 ms, for at most :data:`SHIM_STDIN_TIMEOUT` s.

With ``stderr=STDOUT`` both streams are one FIFO, and the runc shim opens a writer on it for
each, one after the other (containerd/fifo's open, each before its copy starts), within
Start for an exec: the copy of stdout, started first, may have written all and closed its
writer (an exec that ended at once) before stderr's writer is open. The FIFO then has no
writer: our reader reads EOF and closes, stderr's output is lost, and were our reader
already gone, the shim's blocking open of stderr's writer waits for one that never comes
(Start hangs until a deadline). So a writer of our own is held on the shared FIFO from its
making until :meth:`ProcessIO.shim_attached` (the reply: the shim's writers are open by
then): the output ends when the shim's last writer closes.

The streams over the FIFOs are asyncio's: stdin a
:class:`~._plumbing._pipes.ProcessWriter`, stdout and stderr ``asyncio.StreamReader``s
(:mod:`._plumbing._pipes`). What each stream is to be comes checked from
:func:`~._plumbing._stream_args.plan_io`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ._plumbing._pipes import ProcessWriter, read_pipe
from ._plumbing._stream_args import IOPlan

__all__ = ("ProcessIO",)

_READ_LIMIT = 2**16  # asyncio's default: the reader pauses the pipe past twice this
SHIM_STDIN_TIMEOUT = 30.0
"""How long :meth:`ProcessIO.shim_attached` waits for the shim to open stdin's FIFO."""
_log = logging.getLogger(__name__)


class ProcessIO:
    """The paths containerd is given for one process, and the streams held here."""

    def __init__(self, plan: IOPlan) -> None:
        self._plan = plan
        self._dir: str | None = None
        self._paths = {"stdin": "", "stdout": "", "stderr": ""}
        self._held_reader: int | None = None
        self._held_writer: int | None = None  # on stdout's FIFO when stderr shares it
        self._stdin_handle: int | None = None  # O_PATH: reopens the FIFO once its name is gone
        self._readers: list[asyncio.ReadTransport] = []
        self.stdin: ProcessWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        if plan.stdout == "file":
            uri = Path(plan.log_path).as_uri()
            self._paths["stdout"] = self._paths["stderr"] = uri
        elif plan.stdout == "fifo":
            self._paths["stdout"], self._paths["stderr"] = plan.fifos

    @property
    def terminal(self) -> bool:
        """Whether the process gets a pty."""
        return self._plan.terminal

    @property
    def stdin_path(self) -> str:
        """What containerd is told for stdin ("" for not connected)."""
        return self._paths["stdin"]

    @property
    def stdout_path(self) -> str:
        """What containerd is told for stdout: a FIFO, a ``file://`` URI or ""."""
        return self._paths["stdout"]

    @property
    def stderr_path(self) -> str:
        """What containerd is told for stderr."""
        return self._paths["stderr"]

    @classmethod
    async def open(cls, plan: IOPlan, name: str) -> ProcessIO:
        """Make and open the FIFOs ``plan`` asks for, named after the process ``name``."""
        self = cls(plan)
        if not plan.pipes:
            return self
        try:
            await self._open_fifos(name)
        except BaseException:
            self.close()
            raise
        return self

    async def _open_fifos(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        self._dir = tempfile.mkdtemp(prefix="sandboxclient-io-")  # mode 0700
        plan = self._plan
        if plan.stdin == "pipe":
            path = self._fifo(name, "stdin")
            # A reader of our own first, so the non-blocking open for writing cannot fail
            # (ENXIO) before the shim has opened its end.
            self._stdin_handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
            self._held_reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.stdin = await ProcessWriter.open(fd)
        if plan.stdout == "pipe":
            path = self._fifo(name, "stdout")
            self.stdout = await self._reader(loop, path)
            if plan.stderr == "stdout":
                self._paths["stderr"] = path
                if not plan.terminal:  # a pty's copy opens one writer (see the docstring)
                    self._held_writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if plan.stderr == "pipe":
            self.stderr = await self._reader(loop, self._fifo(name, "stderr"))
        # The runc shim copies stdout and stderr whenever either is set, opening each by
        # path: a stream not connected is /dev/null to it, not "".
        for stream in ("stdout", "stderr"):
            if not self._paths[stream] and not (stream == "stderr" and plan.terminal):
                self._paths[stream] = os.devnull

    def _fifo(self, name: str, stream: str) -> str:
        assert self._dir is not None
        path = os.path.join(self._dir, f"{name}-{stream}")
        os.mkfifo(path, 0o600)
        self._paths[stream] = path
        return path

    async def _reader(self, loop: asyncio.AbstractEventLoop, path: str) -> asyncio.StreamReader:
        # No writer yet: a FIFO read end reports neither data nor hang-up until one has come.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        transport, reader = await read_pipe(loop, fd, limit=_READ_LIMIT)
        self._readers.append(transport)
        return reader

    async def shim_attached(self, *, timeout: float = SHIM_STDIN_TIMEOUT) -> None:
        """The shim has its ends now: remove the FIFOs, let go of our writer on a FIFO
        stdout and stderr share, and of our stdin reader once the shim's own is open (see
        the module's docstring).

        Should the shim not open it within ``timeout`` s the held reader stays (until
        :meth:`close`): what is written waits in the FIFO rather than being lost.
        """
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._release_held_writer()
        if self._held_reader is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while not self._shim_reads_stdin():
            if loop.time() >= deadline:
                _log.warning("the shim did not open stdin's FIFO within %s s", timeout)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _shim_reads_stdin(self) -> bool:
        """Whether the FIFO has a reader besides ours; if so ours is let go of.

        Ours is closed for the check and opened again if there is none: our write end stays
        open meanwhile, so the FIFO and what it holds stay, and nothing of ours is written
        in between (this runs on the loop, and the transport writes only from it).
        """
        assert self._held_reader is not None
        assert self._stdin_handle is not None
        path = f"/proc/self/fd/{self._stdin_handle}"
        os.close(self._held_reader)
        self._held_reader = None
        try:
            probe = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            self._held_reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            return False
        os.close(probe)
        self._release_stdin_handle()
        return True

    def _release_held_writer(self) -> None:
        if self._held_writer is not None:
            os.close(self._held_writer)
            self._held_writer = None

    def _release_stdin_handle(self) -> None:
        if self._stdin_handle is not None:
            os.close(self._stdin_handle)
            self._stdin_handle = None

    def close(self) -> None:
        """Close every stream held here and remove the FIFOs; idempotent.

        Readers still hold what had arrived; nothing more comes.
        """
        if self._held_reader is not None:
            os.close(self._held_reader)
            self._held_reader = None
        self._release_held_writer()
        self._release_stdin_handle()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self.stdin is not None:
            self.stdin.abort()
        for transport in self._readers:
            transport.close()
        self._readers.clear()
