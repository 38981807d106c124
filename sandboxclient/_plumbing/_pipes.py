"""The asyncio side of a pipe or FIFO: its read end as an ``asyncio.StreamReader``
(:func:`read_pipe`), its write end as a :class:`ProcessWriter`, a process's stdin as asyncio
users know it: ``write()``, ``drain()``, ``write_eof()``.

The write end goes through the event loop's write-pipe transport, so writing never blocks
the loop and ``drain()`` waits while the transport's buffer is over its high-water mark.
(``asyncio.StreamWriter`` needs a protocol with private hooks; this is the same contract on
public ones.) Each descriptor given here is the transport's and is closed exactly once, on
asyncio's loop and on uvloop's alike (:func:`pipe_file`).

:func:`readable` is the one wait for a descriptor to be readable through the loop (a FIFO's
copy of a read end, a pidfd): the client and the isolating sandboxer share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable
from typing import Any, Literal

__all__ = ("ProcessWriter", "pipe_file", "read_pipe", "readable")


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


async def readable(fd: int) -> None:
    """Return once the event loop reports ``fd`` readable: data, its writers all closed, or,
    for a pidfd, its process gone. The reader is removed however this ends, cancelled
    included, so the caller may close ``fd`` at once.

    ``fd`` must be watched for reading by nobody else on the loop meanwhile (a transport,
    another ``readable``): the loop keeps one reader an fd, so adding this one replaces
    theirs, and removing it at the end leaves the fd with none."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


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
