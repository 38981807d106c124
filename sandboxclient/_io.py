"""A process's standard streams, as containerd's shims take them: FIFOs, files or nothing.

``stdin=``, ``stdout=`` and ``stderr=`` take what ``asyncio.create_subprocess_exec`` takes:
:data:`PIPE` (a stream in this process), :data:`DEVNULL` or None (not connected: the process
gets ``/dev/null``), :data:`STDOUT` for stderr (into stdout's stream), or, for stdout and
stderr, a file path (containerd's ``file://`` log: the shim appends both streams to it).

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

stdin is a :class:`ProcessWriter`, as asyncio users know it: ``write()``, ``drain()``,
``write_eof()``.

The write end of a FIFO goes through the event loop's write-pipe transport, so writing never
blocks the loop and ``drain()`` waits while the transport's buffer is over its high-water
mark. (``asyncio.StreamWriter`` needs a protocol with private hooks; this is the same
contract on public ones.) The read side is a plain ``asyncio.StreamReader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import shutil
import tempfile
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = (
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "IOPlan",
    "NamedFifo",
    "ProcessIO",
    "ProcessWriter",
    "StreamArg",
    "plan_io",
)


class _WriterProtocol(asyncio.Protocol):
    """Tracks the transport's flow control and its loss, for :class:`ProcessWriter`."""

    def __init__(self) -> None:
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write.set()
        if not self.lost.done():
            if exc is None:
                self.lost.set_result(None)
            else:
                self.lost.set_exception(exc)
                self.lost.exception()  # retrieved: drain() raises it, nobody must

    async def writable(self) -> None:
        await self._can_write.wait()


def _loop_closes_fd_itself(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.partition(".")[0] == "uvloop"


def pipe_file(loop: asyncio.AbstractEventLoop, fd: int, mode: Literal["rb", "wb"]) -> io.FileIO:
    """A file object for ``fd`` to give ``loop.connect_*_pipe``, so ``fd`` is closed once.

    asyncio's pipe transports close the file object they were given. uvloop closes the
    descriptor itself and then closes the file object as well: were the object to own the
    descriptor too, the number would be closed twice, and in a program with threads it may
    by then be another thread's file (uvloop issue 763).
    """
    return io.FileIO(fd, mode, closefd=not _loop_closes_fd_itself(loop))


async def read_pipe(
    loop: asyncio.AbstractEventLoop,
    fd: int,
    *,
    limit: int,
    protocol: Callable[[asyncio.StreamReader], asyncio.StreamReaderProtocol] | None = None,
) -> tuple[asyncio.ReadTransport, asyncio.StreamReader]:
    """Read the non-blocking read end ``fd`` of a pipe or FIFO as a stream (through
    ``protocol``, a ``StreamReaderProtocol`` of the reader, if given).

    ``fd`` is the transport's from here on, also when this fails: it is closed exactly once.
    """
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    pipe = pipe_file(loop, fd, "rb")
    made = protocol or (lambda r: asyncio.StreamReaderProtocol(r, loop=loop))
    try:
        transport, _ = await loop.connect_read_pipe(lambda: made(reader), pipe)
    except BaseException:
        # asyncio's transport closed the object already (a second close is a no-op);
        # uvloop's closed the descriptor, and the object does not own it.
        pipe.close()
        raise
    return transport, reader


class ProcessWriter:
    """The stdin of a process: a FIFO whose other end the container's shim reads."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: _WriterProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def open(cls, fd: int) -> ProcessWriter:
        """Wrap ``fd``, the non-blocking write end of a pipe or FIFO; it is closed with this."""
        loop = asyncio.get_running_loop()
        pipe = pipe_file(loop, fd, "wb")
        try:
            transport, protocol = await loop.connect_write_pipe(_WriterProtocol, pipe)
        except BaseException:
            pipe.close()
            raise
        return cls(transport, protocol)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; follow with ``await drain()`` to respect the pipe's pace."""
        self._transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        """Queue every chunk of ``data``."""
        self._transport.writelines(data)

    async def drain(self) -> None:
        """Wait until the queued data is down to the transport's low-water mark.

        Raises ``BrokenPipeError`` (or the error the transport saw) once the reader is
        gone, as asyncio's own streams do.
        """
        if self._protocol.lost.done():
            exc = self._protocol.lost.exception()
            raise exc if exc is not None else BrokenPipeError("stdin is closed")
        await self._protocol.writable()
        if self._transport.is_closing():
            # Let the loop run the close and its callbacks before saying so.
            await asyncio.sleep(0)
            if self._protocol.lost.done() and self._protocol.lost.exception() is not None:
                raise self._protocol.lost.exception()  # type: ignore[misc]

    def can_write_eof(self) -> bool:
        """True: closing the write end is the end of input."""
        return True

    def write_eof(self) -> None:
        """Close the write end once the queued data is written: the process reads EOF."""
        self._transport.write_eof()

    def is_closing(self) -> bool:
        """Whether ``close()`` or ``write_eof()`` was called, or the reader went away."""
        return self._transport.is_closing()

    def close(self) -> None:
        """Close the write end, after the queued data is written."""
        self._transport.close()

    def abort(self) -> None:
        """Close the write end now, dropping queued data; idempotent."""
        if not self._protocol.lost.done():
            self._transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the write end is closed."""
        with contextlib.suppress(OSError):
            await asyncio.shield(self._protocol.lost)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra information (``pipe``, ...)."""
        return self._transport.get_extra_info(name, default)


@dataclass(frozen=True, slots=True)
class NamedFifo:
    """A FIFO someone else holds the read end of, given to the shim by its plain path (a
    sandboxer hands its client's FIFOs over so): for stdout and stderr together, the same
    one twice when they share it. The path must be absolute and normalised (no ``.``,
    ``..`` or doubled ``/``): ValueError naming the argument otherwise, as the shim would
    open it relative to its own working directory. The shim opens it for writing without
    creating it, following symbolic links: the one who gives it vouches for it."""

    path: str


StreamArg = int | str | os.PathLike[str] | NamedFifo | None
"""What a stream argument may be: PIPE, DEVNULL, STDOUT (stderr only), a path, a
:class:`NamedFifo` (stdout and stderr only) or None."""

_Kind = Literal["pipe", "null", "file", "stdout", "fifo"]
_READ_LIMIT = 2**16  # asyncio's default: the reader pauses the pipe past twice this
SHIM_STDIN_TIMEOUT = 30.0
"""How long :meth:`ProcessIO.shim_attached` waits for the shim to open stdin's FIFO."""
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IOPlan:
    """What each stream is to be, checked."""

    stdin: _Kind
    stdout: _Kind
    stderr: _Kind
    terminal: bool
    log_path: str = ""
    """The absolute path of the log file when stdout (and so stderr) goes to a file."""
    fifos: tuple[str, str] = ("", "")
    """stdout's and stderr's :class:`NamedFifo` paths."""

    @property
    def pipes(self) -> bool:
        """Whether any stream is a FIFO this process holds."""
        return "pipe" in (self.stdin, self.stdout, self.stderr)


def _kind(value: StreamArg, name: str, *, file_ok: bool, stdout_ok: bool) -> tuple[_Kind, str]:
    if isinstance(value, NamedFifo):
        path = value.path
        if (
            not isinstance(path, str)
            or "\0" in path
            or not os.path.isabs(path)
            or os.path.normpath(path) != path
        ):
            raise ValueError(
                f"{name}={value!r}: a NamedFifo's path must be absolute and normalised"
            )
        return "fifo", path
    if value is None or value == DEVNULL:
        return "null", ""
    if value == PIPE:
        return "pipe", ""
    if value == STDOUT:
        if not stdout_ok:
            raise ValueError(f"{name}=STDOUT is only for stderr")
        return "stdout", ""
    if isinstance(value, bool | int):
        raise ValueError(f"{name} must be PIPE, DEVNULL, a path or None, got the integer {value}")
    if isinstance(value, str | os.PathLike):
        if not file_ok:
            raise ValueError(
                f"{name} from a file is not something containerd's IO does: open the file "
                "and write it to a PIPE"
            )
        text = os.fspath(value)
        if not isinstance(text, str) or not text or "\0" in text:
            raise ValueError(f"{name} must be a non-empty path without NUL bytes")
        return "file", os.path.abspath(text)
    raise TypeError(f"{name} must be PIPE, DEVNULL, a path or None, got {type(value).__name__}")


def plan_io(
    stdin: StreamArg = None,
    stdout: StreamArg = None,
    stderr: StreamArg = None,
    *,
    terminal: bool = False,
) -> IOPlan:
    """Check a process's stream arguments together; ValueError or TypeError naming them."""
    in_kind, _ = _kind(stdin, "stdin", file_ok=False, stdout_ok=False)
    out_kind, out_path = _kind(stdout, "stdout", file_ok=True, stdout_ok=False)
    err_kind, err_path = _kind(stderr, "stderr", file_ok=True, stdout_ok=True)
    if not isinstance(terminal, bool):
        raise TypeError(f"terminal must be a bool, got {type(terminal).__name__}")
    if "fifo" in (in_kind, out_kind, err_kind):
        if (out_kind, err_kind, in_kind, terminal) != ("fifo", "fifo", "null", False):
            raise ValueError("a NamedFifo is for stdout and stderr together, without a pty")
        return IOPlan(in_kind, out_kind, err_kind, terminal, fifos=(out_path, err_path))
    if terminal and err_kind not in ("null", "stdout"):
        raise ValueError("with terminal=True the pty carries stderr too: leave stderr None")
    if out_kind == "file":
        if err_kind == "stdout" or (err_kind == "file" and err_path == out_path):
            err_kind = "file"
        else:
            raise ValueError(
                "with stdout to a file containerd writes stderr to the same file: pass "
                "stderr=STDOUT or the same path"
            )
    elif err_kind == "file":
        raise ValueError(
            "stderr to a file needs stdout to the same file: containerd logs both streams "
            "to stdout's file"
        )
    elif err_kind == "stdout" and out_kind == "null":
        err_kind = "null"
    return IOPlan(in_kind, out_kind, err_kind, terminal, out_path)


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
