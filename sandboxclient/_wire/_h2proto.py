"""grpclib's HTTP/2 protocol, hardened against a hostile peer, for the client and the servers.

:class:`WireProtocol` is grpclib's ``H2Protocol`` with:

- every stream's buffer a :class:`~._grpcframe.FramedBuffer` (message limit and framing);
- a frame whose header claims more than SETTINGS_MAX_FRAME_SIZE refused at its header
  (h2 would buffer it whole first);
- garbage from the peer closing the connection, never raising out of ``data_received``:
  h2's protocol errors, undecodable headers, frames grpclib has no handler for (a pushed
  stream; unknown frame types and informational headers are skipped, as HTTP/2 says);
- a peer that makes it answer (PINGs, SETTINGS) while reading nothing cut off once
  :data:`MAX_UNSENT` bytes wait to be sent to it;
- on a server, at most ``max_streams`` concurrent streams (``SETTINGS_MAX_CONCURRENT_STREAMS``;
  h2 closes the connection of a client that opens more), requests without ``:method`` or
  ``:path`` or with undecodable binary metadata reset (``PROTOCOL_ERROR``) before any
  handler runs, and a byte budget on the requests read at once;
- on a client, a peer's RST_STREAM surfacing with its code (:class:`StreamResetError`),
  except a NO_ERROR one after the peer's end of stream, which completes the call as in
  grpc-go; and the PINGs of :mod:`._keepalive`.

It sits on grpclib's internals: only used when :data:`~._grpcframe.HOOKED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import Callable
from typing import cast

from grpclib.config import Configuration
from grpclib.metadata import decode_bin_value
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol, Stream
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    AlternativeServiceAvailable,
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    UnknownFrameReceived,
)
from h2.settings import SettingCodes, Settings

from ._grpcframe import FramedBuffer, RequestBudget, StreamResetError
from ._keepalive import Keepalive

__all__ = ("MAX_UNSENT", "SERVER_MAX_STREAMS", "WireProtocol")

_log = logging.getLogger("sandboxclient")

SERVER_MAX_STREAMS = 1000
"""Concurrent streams a server allows one connection: containerd's CRI keeps one Wait open
per running sandbox, and a node runs about a hundred pods (grpc-go's own default: no limit)."""

MAX_UNSENT = 64 << 20
"""Bytes waiting to be sent to a peer past which it is taken for one that reads nothing."""

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_IGNORED = (UnknownFrameReceived, InformationalResponseReceived, AlternativeServiceAvailable)
_FROM_THE_PEER = (DataReceived, ResponseReceived, TrailersReceived, RequestReceived)


class _FrameSizes:
    """Follows the frames a peer sends to see a length over the limit in the header already.

    h2 checks a frame's length against SETTINGS_MAX_FRAME_SIZE only once the whole frame is
    in its buffer: a header claiming 16 MiB would make it wait for, and keep, 16 MiB.
    """

    __slots__ = ("_header", "_left", "_skip")

    def __init__(self, preface: int) -> None:
        self._skip = preface  # a server's first bytes are the client's connection preface
        self._header = bytearray()
        self._left = 0

    def over(self, data: bytes, limit: int) -> int | None:
        """The length of a frame in ``data`` that claims more than ``limit``, if any."""
        view = memoryview(data)
        pos, end = 0, len(view)
        if self._skip:
            pos = min(self._skip, end)
            self._skip -= pos
        while pos < end:
            if self._left:
                step = min(self._left, end - pos)
                self._left -= step
                pos += step
                continue
            piece = view[pos : pos + 9 - len(self._header)]
            self._header += piece
            pos += len(piece)
            if len(self._header) == 9:
                length = int.from_bytes(self._header[:3], "big")
                self._header.clear()
                if length > limit:
                    return length
                self._left = length
        return None


def _malformed(headers: list[tuple[str, str]]) -> bool:
    """Whether a request's headers lack what grpclib's handler takes for granted."""
    names = set()
    for name, value in headers:
        names.add(name)
        if name.endswith("-bin"):
            try:
                decode_bin_value(value.encode("ascii"))
            except (ValueError, UnicodeError):
                return True
    return not {":method", ":path"} <= names


class _Processor(EventsProcessor):
    """grpclib's event processor, giving each stream a framed buffer (see the module)."""

    def __init__(
        self,
        handler: AbstractHandler,
        connection: Connection,
        *,
        h2: H2Connection,
        limit: int,
        server: bool,
        on_stream: Callable[[], None] | None,
    ) -> None:
        super().__init__(handler, connection)
        self._h2 = h2
        self._limit = limit
        self._server = server
        self._budget = RequestBudget() if server else None
        self._on_stream = on_stream
        self._encoding: str | None = None

    def register(self, stream: Stream) -> Callable[[], None]:
        assert stream.id is not None
        stream.buffer = FramedBuffer(
            functools.partial(self.connection.ack, stream.id),
            limit=self._limit,
            server=self._server,
            encoding=self._encoding,
            budget=self._budget,
        )
        self._encoding = None
        if self._on_stream is not None:
            self._on_stream()
        return super().register(stream)

    def process_request_received(self, event: RequestReceived) -> None:
        headers = cast(list[tuple[str, str]], event.headers)
        if _malformed(headers):
            assert event.stream_id is not None
            self._h2.reset_stream(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        self._encoding = next((v for k, v in headers if k == "grpc-encoding"), None)
        super().process_request_received(event)

    def process_stream_reset(self, event: StreamReset) -> None:
        stream = self.streams.get(event.stream_id)
        if self._server or stream is None or not event.remote_reset or stream.wrapper is None:
            super().process_stream_reset(event)
            return
        if (
            event.error_code == ErrorCodes.NO_ERROR
            and isinstance(stream.buffer, FramedBuffer)
            and stream.buffer.ended
        ):
            # The server answered in full (END_STREAM) and then reset the stream because
            # the client had not ended its side: as grpc-go, the answer stands and what it
            # buffered stays readable (a Streaming stream ends this way).
            return
        stream.wrapper.cancel(StreamResetError(int(event.error_code)))
        self.handler.cancel(stream)
        self.connection.streams_failed += 1


class WireProtocol(H2Protocol):
    """grpclib's protocol with the project's hardening (see the module's docstring).

    ``limit`` bounds a received message; ``server`` picks the side; ``max_streams`` is a
    server's concurrent stream limit; ``keepalive`` is a client's ``(interval, timeout)``;
    ``on_too_many_pings`` is called when the peer sends GOAWAY ``too_many_pings``.
    """

    def __init__(
        self,
        handler: AbstractHandler,
        config: Configuration,
        h2_config: H2Configuration,
        *,
        limit: int,
        server: bool = False,
        max_streams: int = SERVER_MAX_STREAMS,
        keepalive: tuple[float, float] | None = None,
        on_too_many_pings: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(handler, config, h2_config)
        self._limit = limit
        self._server = server
        self._max_streams = max_streams
        self._keepalive_params = keepalive
        self._on_too_many_pings = on_too_many_pings
        self._keepalive: Keepalive | None = None
        self._h2: H2Connection | None = None
        self._transport: asyncio.Transport | None = None
        self._aborted = False
        self._frames = _FrameSizes(len(_PREFACE) if server else 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """grpclib's own set-up, with this protocol's settings, processor and keepalive."""
        h2 = H2Connection(config=self.h2_config)
        initial: dict[SettingCodes, int] = {
            SettingCodes.MAX_HEADER_LIST_SIZE: H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
        }
        if self._server:
            initial[SettingCodes.MAX_CONCURRENT_STREAMS] = self._max_streams
        else:
            initial[SettingCodes.ENABLE_PUSH] = 0
            initial[SettingCodes.MAX_CONCURRENT_STREAMS] = 100
        h2.local_settings = Settings(client=not self._server, initial_values=initial)
        h2.initiate_connection()
        window = h2.local_settings.initial_window_size
        conn_delta = self.config.http2_connection_window_size - window
        if conn_delta:
            h2.increment_flow_control_window(conn_delta)
        if self.config.http2_stream_window_size != window:
            h2.update_settings(
                {SettingCodes.INITIAL_WINDOW_SIZE: self.config.http2_stream_window_size}
            )
        stream_transport = cast(asyncio.Transport, transport)
        self._h2 = h2
        self._transport = stream_transport
        self.connection = Connection(h2, stream_transport, config=self.config)
        self.connection.flush()
        self.connection.initialize()
        on_stream = None
        if self._keepalive_params is not None:
            interval, timeout = self._keepalive_params
            keepalive = self._keepalive = Keepalive(
                interval=interval,
                timeout=timeout,
                busy=self._busy,
                ping=self._send_ping,
                fail=self._abort,
            )
            on_stream = keepalive.call_started
        self.processor = _Processor(
            self.handler,
            self.connection,
            h2=h2,
            limit=self._limit,
            server=self._server,
            on_stream=on_stream,
        )

    def data_received(self, data: bytes) -> None:
        """Feed h2 and grpclib what came; on anything they cannot take, close the connection."""
        if self._h2 is not None:
            claimed = self._frames.over(data, self._h2.max_inbound_frame_size)
            if claimed is not None:
                with contextlib.suppress(Exception):  # tell the peer why, if h2 still can
                    self._h2.close_connection(ErrorCodes.FRAME_SIZE_ERROR)
                self._abort(f"protocol error: a frame of {claimed} bytes, over the maximum")
                return
        try:
            events = self.connection.feed(data)
        except Exception as exc:  # h2's protocol errors, and its decoders' on garbage
            self._abort(f"protocol error: {exc}")
            return
        self.connection.flush()
        heard_data = False
        try:
            for event in events:
                if isinstance(event, _IGNORED):
                    continue
                if isinstance(event, _FROM_THE_PEER):
                    heard_data = True
                elif isinstance(event, ConnectionTerminated):
                    self._goaway(event)
                self.processor.process(event)
        except Exception as exc:
            _log.debug("closing a connection on a frame it cannot handle", exc_info=True)
            self._abort(f"protocol error: {exc!r}")
            return
        if self._keepalive is not None:
            self._keepalive.heard(data=heard_data)
        self.connection.flush()
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() > MAX_UNSENT:
            self._abort("the peer reads nothing of what it is sent")
            transport.abort()  # close() would keep the unsent bytes until the peer reads

    def connection_lost(self, exc: BaseException | None) -> None:
        """End the keepalive, and the calls (with their reason, if this side closed)."""
        if self._keepalive is not None:
            self._keepalive.stop()
        if not self._aborted:  # else the calls have their reason already
            super().connection_lost(exc)

    @property
    def keepalive(self) -> Keepalive | None:
        """The PING schedule of a client connection (None on a server or when off)."""
        return self._keepalive

    def _busy(self) -> bool:
        return bool(self.processor.streams)

    def _send_ping(self) -> None:
        if self._h2 is None or self.connection.is_closing():
            return
        try:
            self._h2.ping(struct.pack("!Q", int(time.monotonic() * 1e6) & (2**64 - 1)))
        except Exception:  # the connection is closing: nothing to keep alive
            return
        self.connection.flush()

    def _goaway(self, event: ConnectionTerminated) -> None:
        if (
            event.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            and event.additional_data == b"too_many_pings"
            and self._on_too_many_pings is not None
        ):
            self._on_too_many_pings()

    def _abort(self, reason: str) -> None:
        """Send what h2 has for the peer (a GOAWAY), then close the connection and its calls."""
        if self._aborted:
            return
        self._aborted = True
        if self._keepalive is not None:
            self._keepalive.stop()
        try:
            if not self.connection.is_closing():
                self.connection.flush()
        finally:
            self.processor.close(reason)
