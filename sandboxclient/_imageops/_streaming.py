"""containerd's Streaming service: streams of Any values a transfer refers to by id.

Go's ``core/streaming/proxy`` opens a stream by sending a ``StreamInit`` carrying a fresh id
and waiting for the daemon's acknowledgement, after which the stream is registered in the
call's namespace: a Transfer request (in the same namespace) then names it as its progress
stream, its archive's stream or its registry's credential stream. A byte stream carries
``Data`` chunks of at most 32 KiB, sent only within the windows (``WindowUpdate``) the
receiver grants, so neither side buffers more than a window.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

from .._plumbing._connection import Connection
from .._wire._images import (
    data_any,
    data_message_header,
    stream_init_any,
    unpack_payload,
    window_any,
)
from .._wire._pb import AnyPb
from ..errors import DataLossError, UnavailableError

__all__ = ("MAX_CHUNK", "WINDOW", "ByteSink", "Stream", "StreamFactory", "new_stream_id")

ROUTE: Final = "/containerd.services.streaming.v1.Streaming/Stream"
MAX_CHUNK: Final = 32 * 1024
"""The largest ``Data`` chunk either side sends, as containerd's. Never more: containerd's
reader (2.1) takes a message through a 32 KiB read and counts against its window only what
that read took, so a larger chunk leaves it owing grants the sender waits for."""
WINDOW: Final = 2 * MAX_CHUNK
"""What a receiver grants at a time, as containerd's."""

MAX_BATCH: Final = 2 * WINDOW
"""The most a sender writes at once, in ``Data`` messages of ``MAX_CHUNK``."""

ByteSink = Callable[[bytes], Awaitable[None]]
"""Where received chunks go."""


def _framed(view: memoryview) -> bytes:
    """``view`` as ``Data`` messages of at most ``MAX_CHUNK``, encoded and framed, joined."""
    if len(view) <= MAX_CHUNK:
        return b"".join((data_message_header(len(view)), view))
    parts: list[bytes | memoryview] = []
    for at in range(0, len(view), MAX_CHUNK):
        piece = view[at : at + MAX_CHUNK]
        parts += (data_message_header(len(piece)), piece)
    return b"".join(parts)


def new_stream_id(prefix: str) -> str:
    """A fresh stream id, shaped as Go's client makes them (``prefix-<ns>-<random>``)."""
    return f"{prefix}-{time.time_ns() % 1_000_000_000}-{secrets.token_urlsafe(6)}"


class Stream:
    """One open Streaming stream: its id and the Any values both ways."""

    def __init__(self, stream_id: str, raw: Any) -> None:
        self._id = stream_id
        self._raw = raw
        self._sent_end = False

    @property
    def id(self) -> str:
        """The id a transfer request names this stream by."""
        return self._id

    def __repr__(self) -> str:
        return f"<Stream {self._id!r}>"

    async def send(self, value: AnyPb) -> None:
        """Send one value."""
        await self._raw.send_message(value)

    async def recv(self) -> AnyPb | None:
        """The next value, or None once the daemon has ended the stream."""
        value: AnyPb | None = await self._raw.recv_message()
        return value

    async def aclose(self) -> None:
        """Abandon the stream (RST_STREAM) unless it is closed already; errors are moot."""
        with contextlib.suppress(Exception):
            await self._raw.cancel()

    async def end(self) -> None:
        """End the sending side (the daemon reads the end of the data)."""
        if not self._sent_end:
            self._sent_end = True
            await self._raw.end()

    async def send_bytes(self, chunks: AsyncIterator[bytes]) -> int:
        """Send ``chunks`` as ``Data`` within the windows the daemon grants, then end the
        sending side; returns the number of bytes sent.

        A daemon that ends the stream while data is left raises ``UnavailableError`` (the
        transfer's own answer says why).
        """
        window = 0
        granted = asyncio.Event()
        closed = False

        async def grants() -> None:
            nonlocal window, closed
            try:
                while (value := await self.recv()) is not None:
                    update = unpack_payload(value)
                    if isinstance(update, int) and not isinstance(update, bool) and update > 0:
                        window += update
                        granted.set()
            finally:
                closed = True
                granted.set()

        reader = asyncio.ensure_future(grants())
        # The client's own call sends messages encoded by hand, those a window allows in
        # one write; anything else gets them one by one.
        send_framed = getattr(self._raw, "send_framed", None)
        sent = 0
        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    while window <= 0:
                        if closed:
                            if reader.done() and reader.exception() is not None:
                                raise reader.exception()  # type: ignore[misc]
                            raise UnavailableError(
                                f"the daemon ended stream {self._id} after {sent} bytes"
                            )
                        granted.clear()
                        await granted.wait()
                    if send_framed is None:
                        size = min(window, MAX_CHUNK, len(view))
                        await self.send(data_any(bytes(view[:size])))
                    else:
                        size = min(window, MAX_BATCH, len(view))
                        await send_framed(_framed(view[:size]))
                    view = view[size:]
                    window -= size
                    sent += size
            await self.end()
            return sent
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def receive_bytes(
        self, sink: ByteSink, *, complete: Callable[[], bool] | None = None
    ) -> int:
        """Grant windows and hand every ``Data`` chunk to ``sink`` until the daemon ends the
        stream or ``complete()`` says the data is whole; returns the number of bytes
        received.

        A chunk the daemon sends beyond what was granted raises ``DataLossError``.
        """
        window = 0
        received = 0
        while True:
            if window < WINDOW:
                await self.send(window_any(WINDOW))
                window += WINDOW
            value = await self.recv()
            if value is None:
                return received
            chunk = unpack_payload(value)
            if not isinstance(chunk, bytes):
                continue  # containerd's receivers ignore what they do not know too
            if len(chunk) > window:
                raise DataLossError(
                    f"the daemon sent {len(chunk)} bytes on stream {self._id} with {window} granted"
                )
            window -= len(chunk)
            received += len(chunk)
            await sink(chunk)
            if complete is not None and complete():
                return received


class StreamFactory:
    """Opens Streaming streams on a connection (Go's ``streaming.StreamCreator``)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @contextlib.asynccontextmanager
    async def open(
        self, prefix: str, *, metadata: Mapping[str, str] | None = None
    ) -> AsyncIterator[Stream]:
        """A new stream whose id starts with ``prefix``, registered with the daemon once
        entered (under the lease ``metadata`` names, if any); leaving ends it."""
        stream_id = new_stream_id(prefix)
        async with self._connection.bidi_stream(ROUTE, AnyPb, metadata=metadata) as raw:
            await raw.send_message(stream_init_any(stream_id))
            if await raw.recv_message() is None:
                raise UnavailableError(f"the daemon ended stream {stream_id} before its ack")
            stream = Stream(stream_id, raw)
            try:
                yield stream
            finally:
                await stream.aclose()
