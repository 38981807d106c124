"""The plumbing under ``sb.files``: one script's exec, its streams fed and read in chunks.

:class:`Exec` holds the process and what it wrote to stderr (the start of it, for error
messages); ``finish`` waits for the exit and deletes the exec, ``abort`` has the Client kill
and delete it. The feeders turn what ``write`` and ``upload`` take into chunks of at most
64 KiB, reading local files in a worker thread, so the client holds one chunk at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import IO, Any, Protocol

from .._process import Process
from .._run import CLEANUP_GRACE
from ..errors import ContainerdError, FileOperationError

__all__ = (
    "CHUNK",
    "Exec",
    "Spawn",
    "WriteData",
    "checked_data",
    "chunks_of",
    "early_end",
    "feed",
    "from_sync",
    "read_out",
)

CHUNK = 1 << 16
"""The size of the pieces data moves in, in bytes."""
_ERR_KEPT = 4096

WriteData = bytes | bytearray | memoryview | str | IO[bytes] | AsyncIterable[bytes]
"""What ``write()`` takes: bytes, text (written as UTF-8), a binary file object, or an
async iterator of bytes."""


class Spawn(Protocol):
    """Start ``args`` in the task the files live in (``Sandbox.spawn``'s shape)."""

    def __call__(
        self, *args: str, stdin: Any = ..., stdout: Any = ..., stderr: Any = ..., user: Any = ...
    ) -> Awaitable[Process]: ...


class Exec:
    """One script run in the sandbox: its process, and what it wrote to stderr."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self._err = bytearray()
        self._err_reader = asyncio.ensure_future(self._read_err())

    async def _read_err(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while chunk := await stream.read(CHUNK):
            self._err += chunk[: max(0, _ERR_KEPT - len(self._err))]

    async def finish(self) -> tuple[int, bytes]:
        """Wait for the exit (stdout must have been read to its end), delete the exec."""
        await self._err_reader
        status = await self.process.wait_exit()
        if status.error is not None:
            raise status.error
        await self.process.delete()
        return status.returncode, bytes(self._err)

    async def abort(self) -> None:
        """Kill and delete it on the Client's time, waiting at most the usual grace."""
        self._err_reader.cancel()
        await self.process.discard(timeout=CLEANUP_GRACE)


def early_end(op: str, path: str) -> ContainerdError:
    """The error of a script that ended before it took all of ``write``'s data."""
    return FileOperationError(
        f"files.{op} of {path!r}: the sandbox's command ended before it took all the data",
        path=path,
    )


async def read_out(
    process: Process, out: bytearray, sink: Callable[[bytes], object] | None, limit: int
) -> bool:
    """Read stdout to its end, into ``out`` or ``sink``; True, at once, when more than
    ``limit`` bytes come (the process is then to be killed, not read further)."""
    stream = process.stdout
    assert stream is not None
    total = 0
    while chunk := await stream.read(CHUNK):
        total += len(chunk)
        if total > limit:
            return True
        if sink is None:
            out += chunk
        else:
            sink(chunk)
    return False


async def feed(process: Process, chunks: AsyncIterable[bytes]) -> None:
    """Write ``chunks`` to the process's stdin at the pipe's pace, then close it."""
    stdin = process.stdin
    assert stdin is not None
    try:
        async for chunk in chunks:
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # the script stopped reading: its exit code says why
    await process.close_stdin()


def checked_data(data: object) -> None:
    """Refuse, before anything runs, what ``write()`` cannot take: TypeError."""
    if not isinstance(data, bytes | bytearray | memoryview | str | AsyncIterable) and not callable(
        getattr(data, "read", None)
    ):
        raise TypeError(
            "write() data must be bytes, str, a binary file object or an async iterator of "
            f"bytes, got {type(data).__name__}"
        )


async def chunks_of(data: WriteData) -> AsyncIterator[bytes]:
    """``write()``'s data as chunks; TypeError for what it cannot be."""
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start : start + CHUNK])
        return
    if isinstance(data, AsyncIterable):
        async for chunk in data:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"write() data must yield bytes, got {type(chunk).__name__}")
            yield bytes(chunk)
        return
    read = getattr(data, "read", None)
    if read is None:
        raise TypeError(
            "write() data must be bytes, str, a binary file object or an async iterator of "
            f"bytes, got {type(data).__name__}"
        )
    while chunk := await asyncio.to_thread(read, CHUNK):
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"write() file object must be binary, got {type(chunk).__name__}")
        yield bytes(chunk)


async def from_sync(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a blocking iterator (local files read), taken in a worker thread a few
    at a time, so the event loop never waits on the disk."""

    def some() -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            if size >= 4 * CHUNK:
                break
        return batch

    while batch := await asyncio.to_thread(some):
        for chunk in batch:
            yield chunk
