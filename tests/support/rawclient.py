"""A hostile gRPC client written with h2 directly: requests are raw bytes and headers.

:class:`RawClient` sends one call as the test says (headers, DATA bytes, whether the stream
ends) and reports what came back: the status and message from the trailers (or a
trailers-only answer), the DATA bytes, a reset, or the connection closed. ``send_raw``
writes bytes on the connection as they are, below HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from sandboxclient._facts._wirenames import NAMESPACE_HEADER


def request_headers(path: str, namespace: str | None = "default") -> list[tuple[str, str]]:
    """The headers of a well-formed gRPC request to ``path``."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
    ]
    if namespace is not None:
        headers.append((NAMESPACE_HEADER, namespace))
    return headers


@dataclasses.dataclass
class RawReply:
    """What came back for one call (``status`` None: no grpc-status arrived)."""

    status: int | None = None
    message: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    data: bytes = b""
    reset_code: int | None = None
    closed: bool = False


class RawClient:
    """One HTTP/2 connection to a unix socket; ``async with`` opens and closes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._h2 = H2Connection(
            H2Configuration(
                client_side=True,
                header_encoding="utf-8",
                validate_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self._replies: dict[int, RawReply] = {}
        self._done: dict[int, asyncio.Future[RawReply]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[int, tuple[memoryview, bool]] = {}
        self.last_stream = 0
        self._settings = asyncio.Event()
        self.closed = asyncio.Event()

    async def __aenter__(self) -> RawClient:
        self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._h2.initiate_connection()
        self._flush()
        self._task = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    @property
    def max_streams(self) -> int:
        """The concurrent streams the server allows (its SETTINGS)."""
        return int(self._h2.remote_settings.max_concurrent_streams)

    def ignore_stream_limit(self) -> None:
        """Open streams past the server's limit, as a hostile client would."""
        self._h2.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
        self._h2.remote_settings.acknowledge()

    async def settled(self) -> None:
        """Return once the server's SETTINGS have arrived."""
        await asyncio.wait_for(self._settings.wait(), 10)

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` on the connection as it is."""
        assert self._writer is not None
        self._writer.write(data)

    def start(
        self,
        path: str,
        data: bytes = b"",
        *,
        headers: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> asyncio.Future[RawReply]:
        """Send a call (headers, then ``data`` as the window allows); its reply, to await."""
        stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_headers(
            stream_id, headers or request_headers(path), end_stream=end and not data
        )
        future: asyncio.Future[RawReply] = asyncio.get_running_loop().create_future()
        self._replies[stream_id] = RawReply()
        self._done[stream_id] = future
        self.last_stream = stream_id
        if data:
            self._pending[stream_id] = (memoryview(data), end)
            self._pump()
        self._flush()
        return future

    def send(self, stream_id: int, data: bytes, *, end: bool = True) -> None:
        """Send more DATA on a call :meth:`start` left open (``last_stream`` names it)."""
        self._pending[stream_id] = (memoryview(data), end)
        self._pump()

    async def call(self, path: str, data: bytes = b"", **kwargs: Any) -> RawReply:
        """:meth:`start` a call and wait for its reply (at most 10 s)."""
        return await asyncio.wait_for(self.start(path, data, **kwargs), 10)

    def _pump(self) -> None:
        pending = self._pending
        for stream_id, (data, end) in list(pending.items()):
            try:
                while data:
                    window = self._h2.local_flow_control_window(stream_id)
                    if window <= 0:
                        break
                    size = min(window, self._h2.max_outbound_frame_size)
                    piece, data = data[:size], data[size:]
                    self._h2.send_data(stream_id, bytes(piece), end_stream=end and not data)
                    self._flush()
            except ProtocolError:
                data = memoryview(b"")
            if data:
                pending[stream_id] = (data, end)
            else:
                del pending[stream_id]
        self._flush()

    def _finish(self, stream_id: int) -> None:
        future = self._done.pop(stream_id, None)
        reply = self._replies.pop(stream_id, None)
        if future is not None and reply is not None and not future.done():
            future.set_result(reply)

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                try:
                    events = self._h2.receive_data(data)
                except ProtocolError:
                    break
                for event in events:
                    self._on(event)
                self._pump()
                self._flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for stream_id in list(self._done):
                reply = self._replies.get(stream_id)
                if reply is not None:
                    reply.closed = True
                self._finish(stream_id)

    def _on(self, event: Any) -> None:
        stream_id = getattr(event, "stream_id", None)
        reply = self._replies.get(stream_id) if stream_id is not None else None
        if isinstance(event, ResponseReceived | TrailersReceived) and reply is not None:
            fields: dict[str, str] = dict(cast(Any, event.headers))  # str: utf-8 decoded
            reply.headers.update(fields)
            if "grpc-status" in fields:
                reply.status = int(fields["grpc-status"])
                reply.message = fields.get("grpc-message")
        elif isinstance(event, DataReceived):
            if reply is not None:
                reply.data += event.data or b""
            self._h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id or 0)
        elif isinstance(event, StreamEnded) and stream_id is not None:
            self._finish(stream_id)
        elif isinstance(event, StreamReset) and stream_id is not None:
            if reply is not None:
                reply.reset_code = int(event.error_code or 0)
            self._finish(stream_id)
        elif isinstance(event, RemoteSettingsChanged):
            self._settings.set()
        elif isinstance(event, ConnectionTerminated):
            for waiting in list(self._done):
                if self._replies.get(waiting) is not None:
                    self._replies[waiting].closed = True
                self._finish(waiting)
