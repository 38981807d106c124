"""A process's stdin as asyncio users know it: ``write()``, ``drain()``, ``write_eof()``.

The write end of a FIFO goes through the event loop's write-pipe transport, so writing never
blocks the loop and ``drain()`` waits while the transport's buffer is over its high-water
mark. (``asyncio.StreamWriter`` needs a protocol with private hooks; this is the same
contract on public ones.) The read side is a plain ``asyncio.StreamReader``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ("ProcessWriter",)


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


class ProcessWriter:
    """The stdin of a process: a FIFO whose other end the container's shim reads."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: _WriterProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def open(cls, fileobj: Any) -> ProcessWriter:
        """Wrap the write end ``fileobj`` (non-blocking) of a pipe or FIFO."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(_WriterProtocol, fileobj)
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
