"""A process's standard streams, opened as containerd 2.1's runc shim opens them.

Given the paths of a Create or Exec request:

- all three empty: the process gets ``/dev/null`` for each;
- otherwise stdout and stderr are both opened by path, stdout first: a FIFO for writing
  (with a read end of the shim's own, so that a client that goes away does not break the
  process's pipe), anything else as a file, ``O_WRONLY|O_APPEND`` (``/dev/null`` is what a
  client sends for a stream it does not want); an empty path fails as the shim fails. A
  ``file://`` stdout URI means both streams are appended to that file (made, with its
  folder, if missing);
- stdin, when set, is a FIFO the shim reads, keeping a write end of its own, so the process
  reads EOF only once the client closed its end *and* called CloseIO;
- with ``terminal``, a pty: its output goes to the stdout FIFO, its input comes from stdin,
  stderr is not used, :meth:`Stdio.resize` sets its window size.

The shim's copies between its pipes and the FIFOs are :class:`~._pump.Pump` s on the event
loop. A destination that is a file is handed to the process itself, which appends to it as
the shim's copy would. Unlike the shim, which opens a FIFO's write end first and blocks
until a reader comes, the stand-in opens its own read end first, so it never blocks.

A FIFO that stdout and stderr share gets a writer for each, opened independently, as the
shim's. Asked to (``late_shared_writer``), the stand-in opens stderr's as late as the shim
may, whose open runs after it started stdout's copy, which for an exec that ended at once
may be over by then: :meth:`Stdio.open_late_writer` waits for that copy to end and for the
event loop to go round (a client on this loop has then seen whatever a FIFO without
writers shows); should no reader be left, it fails as the shim's blocking open does once
its deadline passes, without the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import stat
import struct
import termios
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlsplit

from ._pump import Pump, close_fd

__all__ = ("Stdio", "StdioError")

_DRAIN_GRACE = 2.0  # how long the shim waits for the copies at Delete
_LATE_TURNS = 50  # the event loop's rounds before a late writer opens: a few see an EOF


class StdioError(Exception):
    """The streams could not be opened; ``message`` is the shim's words for it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _go_error(op: str, path: str, exc: OSError) -> str:
    """``exc`` as Go's ``*os.PathError`` says it: ``open /x: no such file or directory``."""
    text = exc.strerror or str(exc)
    return f"{op} {path}: {text[:1].lower()}{text[1:]}"


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


class Stdio:
    """The streams of one process: what it is given, and the copies the shim runs."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self._held: list[int] = []  # everything to close at the end
        self._child: list[int] = [-1, -1, -1]
        self._child_only: list[int] = []  # closed here once the process has them
        self._stdin_hold: int | None = None
        self._master: int | None = None
        self._pumps: list[Pump] = []
        self._outputs: list[Pump] = []
        self._late: tuple[str, int, Pump] | None = None
        """The shared FIFO whose second writer :meth:`open_late_writer` opens, the read end
        of the process's pipe copied into it then, and the copy of the first writer."""

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        stdin: str,
        stdout: str,
        stderr: str,
        *,
        terminal: bool,
        late_shared_writer: bool = False,
    ) -> Stdio:
        """Open the streams of a request; :class:`StdioError` as the shim fails. With
        ``late_shared_writer`` the second writer of a FIFO stdout and stderr share is left
        for :meth:`open_late_writer`."""
        self = cls(terminal)
        try:
            if terminal:
                self._open_console(stdin, stdout)
            elif not (stdin or stdout or stderr):
                null = self._keep(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC), child=True)
                self._child = [null, null, null]
            else:
                self._open_pipes(stdin, stdout, stderr, late_shared_writer)
        except BaseException:
            self.close()
            raise
        return self

    def _keep(self, fd: int, *, child: bool = False) -> int:
        (self._child_only if child else self._held).append(fd)
        return fd

    def _pump(
        self,
        src: int,
        dst: int,
        *,
        output: bool,
        owns_dst: bool = True,
        also_close: tuple[int, ...] = (),
        on_done: Callable[[], None] | None = None,
    ) -> Pump:
        """A pump that from now on owns ``src``, ``dst`` (if ``owns_dst``) and
        ``also_close``: they leave this object's list, so each is closed exactly once."""
        for fd in (src, *([dst] if owns_dst else []), *also_close):
            self._held.remove(fd)
        pump = Pump(src, dst, owns_dst=owns_dst, also_close=also_close, on_done=on_done)
        self._pumps.append(pump)
        if output:
            self._outputs.append(pump)
        return pump

    def _open_stdin_hold(self, path: str) -> int:
        """The shim's own write end of the stdin FIFO, and the read end it copies from."""
        try:
            os.stat(path)
        except OSError as exc:
            problem = _go_error("stat", path, exc)
            raise StdioError(f"failed to open stdin fifo {path}: {problem}") from None
        if not _is_fifo(path):
            raise StdioError(f"failed to open stdin fifo {path}: {path} is not a fifo")
        reader = self._keep(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        self._stdin_hold = self._keep(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        return reader

    def _open_fifo_writer(self, path: str) -> tuple[int, int]:
        """A FIFO's write end, and the read end the shim keeps of its own."""
        own_reader = self._keep(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        writer = self._keep(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        return writer, own_reader

    def _pipe(self) -> tuple[int, int]:
        """A pipe: its read end, kept here, and its write end, which the process gets."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        self._keep(read_end)
        self._keep(write_end, child=True)
        return read_end, write_end

    def _pipe_to(self, writer: int, own_reader: int) -> tuple[int, Pump]:
        """A pipe whose write end the process gets, copied into ``writer``."""
        read_end, write_end = self._pipe()
        return write_end, self._pump(read_end, writer, output=True, also_close=(own_reader,))

    def _open_pipes(self, stdin: str, stdout: str, stderr: str, late: bool = False) -> None:
        reader = self._open_stdin_hold(stdin) if stdin else None
        url = urlsplit(stdout)
        if url.scheme == "file":
            path = unquote(url.path)
            os.makedirs(os.path.dirname(path) or "/", mode=0o755, exist_ok=True)
            close_fd(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o644))
            stdout = stderr = path
        same_file: int | None = None
        first: Pump | None = None
        for number, name in ((1, stdout), (2, stderr)):
            if _is_fifo(name):
                if late and first is not None and name == stdout:
                    read_end, self._child[number] = self._pipe()
                    self._late = (name, read_end, first)
                    continue
                writer, own_reader = self._open_fifo_writer(name)
                self._child[number], first = self._pipe_to(writer, own_reader)
                continue
            if same_file is not None:
                self._child[number] = same_file
                continue
            try:
                fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except OSError as exc:
                raise StdioError(
                    "failed to start io pipe copy: unable to copy pipes: containerd-shim: "
                    f'opening file "{name}" failed: {_go_error("open", name, exc)}'
                ) from None
            self._child[number] = self._keep(fd, child=True)
            if stdout == stderr:
                same_file = fd
        if reader is None:
            self._child[0] = self._keep(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), child=True)
            return
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(write_end, False)
        self._child[0] = self._keep(read_end, child=True)
        self._keep(write_end)
        self._pump(reader, write_end, output=False)

    def _open_console(self, stdin: str, stdout: str) -> None:
        master, slave = os.openpty()
        self._master = self._keep(master)
        self._keep(slave, child=True)
        os.set_blocking(master, False)
        self._child = [slave, slave, slave]
        reader = self._open_stdin_hold(stdin) if stdin else None
        try:
            os.stat(stdout)
        except OSError as exc:
            raise StdioError(
                f"failed to start console copy: {_go_error('stat', stdout, exc)}"
            ) from None
        own: tuple[int, ...] = ()
        if _is_fifo(stdout):
            writer, own_reader = self._open_fifo_writer(stdout)
            own = (own_reader,)
        else:
            writer = self._keep(os.open(stdout, os.O_WRONLY | os.O_CLOEXEC))
        feed: list[Pump] = []

        def console_closed() -> None:
            self._master = None
            for pump in feed:
                pump.close()

        output = self._pump(master, writer, output=True, also_close=own, on_done=console_closed)
        if reader is not None:
            # The end of the input shuts the console down, output and all, as the shim's
            # console copy does.
            feed.append(
                self._pump(reader, master, output=False, owns_dst=False, on_done=output.close)
            )

    # -- running --------------------------------------------------------------------------

    @property
    def child_fds(self) -> tuple[int, int, int]:
        """The process's stdin, stdout and stderr."""
        return self._child[0], self._child[1], self._child[2]

    def started(self) -> None:
        """The process holds its ends: close them here and start copying."""
        for fd in self._child_only:
            close_fd(fd)
        self._child_only.clear()
        for pump in self._pumps:
            pump.start()

    async def open_late_writer(self) -> None:
        """Once stdout's copy has ended (within the shim's grace for copies) and the event
        loop has gone round, open stderr's writer on the FIFO it shares with stdout and
        copy into it; nothing without one left for later (see the module's docstring).

        :class:`StdioError` if the FIFO has no reader by then. For a started process.
        """
        if self._late is None:
            return
        fifo, read_end, first = self._late
        self._late = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first.done.wait(), _DRAIN_GRACE)
        for _ in range(_LATE_TURNS):
            await asyncio.sleep(0)
        try:  # the writer first, as the shim opens it: it needs a reader
            writer = self._keep(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            raise StdioError(
                "failed to start io pipe copy: unable to copy pipes: containerd-shim: "
                f'opening w/o fifo "{fifo}" failed: context deadline exceeded'
            ) from None
        own_reader = self._keep(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        self._pump(read_end, writer, output=True, also_close=(own_reader,)).start()

    def close_stdin(self) -> None:
        """CloseIO: let go of the shim's own write end of the stdin FIFO."""
        fd, self._stdin_hold = self._stdin_hold, None
        if fd is not None:
            self._held.remove(fd)
            close_fd(fd)

    def resize(self, cols: int, rows: int) -> None:
        """Set the pty's window size; nothing without a terminal."""
        if self._master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def drained(self, timeout: float = _DRAIN_GRACE) -> None:
        """Wait (``timeout`` seconds at most, as the shim does) for the output to be copied."""
        pending = [
            asyncio.ensure_future(p.done.wait()) for p in self._outputs if not p.done.is_set()
        ]
        if not pending:
            return
        try:
            await asyncio.wait(pending, timeout=timeout)
        finally:
            for waiter in pending:
                waiter.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        """Stop every copy and close every descriptor; idempotent."""
        for pump in self._pumps:
            pump.close()
        self._pumps.clear()
        for fd in self._fds():
            close_fd(fd)
        self._held.clear()
        self._child_only.clear()
        self._stdin_hold = None

    def _fds(self) -> Iterator[int]:
        seen: set[int] = set()
        for fd in (*self._held, *self._child_only):
            if fd not in seen:
                seen.add(fd)
                yield fd
