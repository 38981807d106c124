"""A hostile gRPC server written with h2 directly: every answer is raw bytes and a script.

:class:`RawServer` listens on a unix socket and answers each call as its ``answer``
function says (an :class:`Answer`: headers, DATA bytes sent as the peer's window allows, then
trailers, a reset, a closed connection, silence...). With ``deaf`` set, a new connection gets
the server's SETTINGS and then nothing at all, not even a PING's acknowledgement.

``python -m tests._rawh2 SOCKET CLAIM`` serves, until killed, one answer to every call: a
message prefix claiming CLAIM bytes, then zeros for as long as the client reads them (used
to measure a client's memory without the server's in the same process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import sys
from collections.abc import Callable
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError

GRPC_HEADERS: list[tuple[str, str]] = [(":status", "200"), ("content-type", "application/grpc")]


def frame(body: bytes, *, flag: int = 0, length: int | None = None) -> bytes:
    """``body`` as one gRPC message: its flag, its length (or the ``length`` claimed)."""
    return struct.pack(">BI", flag, len(body) if length is None else length) + body


@dataclasses.dataclass
class Answer:
    """How one call is answered.

    ``headers`` go first (None: none); then ``data`` and ``fill`` zero bytes, as the
    client's window allows; then ``end``: ``"trailers"`` (``status``, ``message``, or
    ``trailers`` as given), ``"data"`` (END_STREAM on the last DATA frame, no trailers),
    ``"reset"`` (RST_STREAM ``reset_code``), ``"close"`` (the connection), ``"hang"``
    (nothing more), ``"trailers-only"`` (one HEADERS frame with the status, nothing else).
    DATA frames are at most ``chunk`` bytes, each after an empty one if ``empty_frames``.
    """

    data: bytes = b""
    end: str = "trailers"
    status: int = 0
    message: str | None = None
    headers: list[tuple[str, str]] | None = dataclasses.field(
        default_factory=lambda: list(GRPC_HEADERS)
    )
    trailers: list[tuple[str, str]] | None = None
    reset_code: int = ErrorCodes.INTERNAL_ERROR
    fill: int = 0
    chunk: int | None = None
    empty_frames: bool = False
    reset_after: int | None = None
    """After the trailers, RST_STREAM with this code (a server that ends a call the client
    was still sending on, as grpc-go's does with NO_ERROR)."""


@dataclasses.dataclass
class RawRequest:
    """A call as the server received it."""

    path: str
    headers: dict[str, str]
    body: bytes = b""


class _Sending:
    __slots__ = ("answer", "data", "fill")

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.data = memoryview(answer.data)
        self.fill = answer.fill


class _Connection(asyncio.Protocol):
    def __init__(self, server: RawServer) -> None:
        self._server = server
        self._h2 = H2Connection(
            H2Configuration(
                client_side=False,
                header_encoding="utf-8",
                validate_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self._transport: asyncio.Transport | None = None
        self._deaf = server.deaf
        self._requests: dict[int, RawRequest] = {}
        self._sending: dict[int, _Sending] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.connected(self)
        self._h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._sending.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self._deaf:
            return
        try:
            events = self._h2.receive_data(data)
        except ProtocolError:
            self._flush()
            self.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                assert event.stream_id is not None
                headers: dict[str, str] = dict(cast(Any, event.headers))  # str: utf-8 decoded
                self._requests[event.stream_id] = RawRequest(headers.get(":path", ""), headers)
                if self._server.eager:
                    eager = self._requests.pop(event.stream_id)
                    self._server.arrived(eager)
                    self._start(event.stream_id, self._server.answer(eager))
            elif isinstance(event, DataReceived):
                assert event.stream_id is not None
                request = self._requests.get(event.stream_id)
                if request is not None:
                    request.body += event.data or b""
                self._h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, StreamEnded):
                assert event.stream_id is not None
                request = self._requests.pop(event.stream_id, None)
                if request is not None:
                    self._server.arrived(request)
                    self._start(event.stream_id, self._server.answer(request))
            elif isinstance(event, StreamReset):
                self._sending.pop(event.stream_id or 0, None)
            elif isinstance(event, WindowUpdated):
                self._pump()
            elif isinstance(event, ConnectionTerminated):
                self.close()
        self._flush()

    def _start(self, stream_id: int, answer: Answer) -> None:
        if answer.end == "trailers-only":
            headers = [*GRPC_HEADERS, ("grpc-status", str(answer.status))]
            if answer.message is not None:
                headers.append(("grpc-message", answer.message))
            self._h2.send_headers(stream_id, headers, end_stream=True)
            return
        if answer.headers is not None:
            self._h2.send_headers(stream_id, answer.headers)
        self._sending[stream_id] = _Sending(answer)
        self._pump()

    def _pump(self) -> None:
        for stream_id, sending in list(self._sending.items()):
            try:
                self._pump_one(stream_id, sending)
            except ProtocolError:
                self._sending.pop(stream_id, None)
        self._flush()

    def _pump_one(self, stream_id: int, sending: _Sending) -> None:
        answer = sending.answer
        limit = min(self._h2.max_outbound_frame_size, answer.chunk or 1 << 30)
        while sending.data or sending.fill:
            window = self._h2.local_flow_control_window(stream_id)
            if window <= 0:
                return
            size = min(window, limit)
            if sending.data:
                piece = bytes(sending.data[:size])
                sending.data = sending.data[len(piece) :]
            else:
                piece = bytes(min(size, sending.fill))
                sending.fill -= len(piece)
            last = not sending.data and not sending.fill and answer.end == "data"
            if answer.empty_frames:
                self._h2.send_data(stream_id, b"")
            self._h2.send_data(stream_id, piece, end_stream=last)
            self._flush()
        del self._sending[stream_id]
        if answer.end == "trailers":
            trailers = answer.trailers
            if trailers is None:
                trailers = [("grpc-status", str(answer.status))]
                if answer.message is not None:
                    trailers.append(("grpc-message", answer.message))
            self._h2.send_headers(stream_id, trailers, end_stream=True)
            if answer.reset_after is not None:
                self._h2.reset_stream(stream_id, answer.reset_after)
        elif answer.end == "data" and not answer.data and not answer.fill:
            self._h2.send_data(stream_id, b"", end_stream=True)
        elif answer.end == "reset":
            self._h2.reset_stream(stream_id, answer.reset_code)
        elif answer.end == "close":
            self._flush()
            self.close()


class RawServer:
    """The hostile server (see the module's docstring); ``async with`` serves it."""

    def __init__(self, path: str, answer: Callable[[RawRequest], Answer]) -> None:
        self.path = path
        self.answer = answer
        self.deaf = False
        self.eager = False
        """Answer a call as soon as its headers arrive, before the client ends its side."""
        self.requests: list[RawRequest] = []
        self.connections: list[_Connection] = []
        self._server: asyncio.AbstractServer | None = None
        self._arrival = asyncio.Event()

    def connected(self, connection: _Connection) -> None:
        """Record a connection that has just been accepted."""
        self.connections.append(connection)
        self._arrival.set()

    async def wait_for_connections(self, count: int) -> None:
        """Return once ``count`` connections have been accepted."""
        while len(self.connections) < count:
            self._arrival.clear()
            await self._arrival.wait()

    def arrived(self, request: RawRequest) -> None:
        """Record a call that has arrived."""
        self.requests.append(request)
        self._arrival.set()

    async def wait_for(self, count: int, path_end: str = "") -> None:
        """Return once ``count`` calls whose path ends with ``path_end`` have arrived."""
        while sum(1 for r in self.requests if r.path.endswith(path_end)) < count:
            self._arrival.clear()
            await self._arrival.wait()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Connection(self), self.path
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self.connections:
            connection.close()
        await self._server.wait_closed()


async def _serve_claim(path: str, claim: int) -> None:
    def answer(_: RawRequest) -> Answer:
        return Answer(data=frame(b"", length=claim), fill=claim)

    async with RawServer(path, answer):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve_claim(sys.argv[1], int(sys.argv[2])))
