"""The Client's channel: grpclib's, with the strict codec, bounded answers, keepalive PINGs
and writes batched per loop turn.

grpclib writes each frame to the socket as soon as it is made: a unary call costs a send()
for its headers and another for its message, and 64 callers cost 128 of them. The library's
connection gathers what is written during one turn of the event loop and sends it at the end
of that turn, in one system call, in the order it was written.

An answer is read within :class:`WireOptions`' limit and framing rules
(:mod:`._grpcframe`), on a connection hardened against garbage that PINGs a silent peer
(:mod:`._h2proto`, :mod:`._keepalive`), and each call's stream checks what grpc-go checks of
a call's shape (:class:`_CallStream`): a unary answer is one message and then the status,
and a stream ends with trailers.

All that needs grpclib's protocol factory and its stream's insides, which are not a public
API (each touch is listed in :mod:`._dependencies`): they are replaced only for the grpclib
versions this was written against (and unless ``SANDBOXCLIENT_PLAIN_WIRE=1``, see
:data:`~._grpcframe.HOOKED`). Otherwise the channel is grpclib's own, with the codec refusing
an answer over the limit once it has been read, and grpclib's own keepalive (one PING at
most every five minutes, see :mod:`._keepalive`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any, cast

from grpclib.client import Channel, Stream
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError
from grpclib.metadata import Deadline
from grpclib.protocol import H2Protocol

from . import _codec
from ._grpcframe import DEFAULT_MAX_MESSAGE_SIZE, HOOKED, MAX_LENGTH_PREFIX
from ._h2proto import WireProtocol
from ._keepalive import PEER_MIN_INTERVAL
from ._wirecodec import LimitedCodec

__all__ = (
    "BATCHING",
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Codec",
    "WireChannel",
    "WireOptions",
)

BATCHING: bool = HOOKED
"""Whether writes are batched (see the module's docstring)."""

DEFAULT_KEEPALIVE_TIME = 10.0
"""Seconds of silence from the peer, with a call in flight, before a PING."""

DEFAULT_KEEPALIVE_TIMEOUT = 10.0
"""Seconds a PING waits for any answer before the connection is taken for dead."""

_NO_MESSAGE = (
    "grpc: cardinality violation: received no response message from non server-streaming RPC"
)
_EXTRA_MESSAGE = (
    "grpc: cardinality violation: expected <EOF> for non server-streaming RPCs, "
    "but received another message"
)
_NO_TRAILERS = "server closed the stream without sending trailers"


@dataclasses.dataclass(frozen=True)
class WireOptions:
    """What a Client's connections accept and how they watch the peer.

    ``max_message_size`` bounds an answer (bytes); ``keepalive_time`` is the silence before a
    PING (None: no PINGs), ``keepalive_timeout`` how long a PING waits for an answer.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT

    def __post_init__(self) -> None:
        size = self.max_message_size
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError("max_message_size must be an int (bytes)")
        if not 0 < size <= MAX_LENGTH_PREFIX:
            raise ValueError("max_message_size must be between 1 byte and 4 GiB - 1")
        if self.keepalive_time is not None:
            _check_seconds(self.keepalive_time, "keepalive_time", "or None")
        _check_seconds(self.keepalive_timeout, "keepalive_timeout", "")


def _check_seconds(value: object, name: str, alternative: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds {alternative}".rstrip())
    if not (math.isfinite(value) and value > 0):
        message = f"{name} must be a positive, finite number of seconds {alternative}"
        raise ValueError(message.rstrip())


class Codec(LimitedCodec):
    """The client's codec, encoding and decoding through :mod:`._codec`; an answer over
    ``limit`` bytes is refused."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        """An answer read strictly (``DecodeError`` if it is not a valid encoding)."""
        self.check_size(data)
        return _codec.decode(message_type, data)


class _CallStream(Stream[Any, Any]):
    """grpclib's call, checking the shape of the answer as grpc-go does (all INTERNAL):

    a unary answer is exactly one message; a stream ends with trailers; headers that do not
    parse (no ``:status``, undecodable binary metadata, a grpc-status that is no number) are
    refused.
    """

    async def recv_initial_metadata(self) -> None:
        try:
            await super().recv_initial_metadata()
        except (KeyError, ValueError, UnicodeError) as exc:
            raise GRPCError(Status.INTERNAL, f"malformed header: {exc!r}") from None

    async def recv_trailing_metadata(self) -> None:
        try:
            await super().recv_trailing_metadata()
        except (KeyError, ValueError, UnicodeError) as exc:
            raise GRPCError(Status.INTERNAL, f"malformed trailer: {exc!r}") from None

    def _process_grpc_status(self, headers_map: dict[str, str]) -> tuple[Status, Any, Any]:
        value = headers_map.get("grpc-status")
        if value is not None and not (value.isascii() and value.isdigit()):
            # grpc-go's word for it; grpclib would say UNKNOWN.
            raise GRPCError(Status.INTERNAL, f"transport: malformed grpc-status: {value!r}")
        return super()._process_grpc_status(headers_map)

    async def recv_message(self) -> Any:
        """The next message (None at the end of a stream), checked as the class says."""
        message = await super().recv_message()
        if self._cardinality.server_streaming:
            if message is None:
                await self._end()
            return message
        if message is None:
            await self._end()
            raise GRPCError(Status.INTERNAL, _NO_MESSAGE)
        with self._wrapper:
            more = await self._stream.recv_data(5)
        if more:
            raise GRPCError(Status.INTERNAL, _EXTRA_MESSAGE)
        await self._end()
        return message

    async def send_framed(self, data: bytes) -> None:
        """Send ``data``, whole gRPC messages already encoded and length-prefixed, as
        ``send_message`` sends one message (a byte stream's ``Data`` path, which has them
        made by hand: no codec, one write for several messages)."""
        if not self._send_request_done:
            await self.send_request()
        if self._end_done:
            raise ProtocolError("Stream is ended")
        with self._wrapper:
            await self._send_data(memoryview(data))

    async def _send_data(self, view: memoryview) -> None:
        # grpclib's Stream.send_data, but writing all the frames a window allows at once:
        # one write and one await for them instead of one of each a 16 KiB frame.
        stream = self._stream
        h2 = stream._h2_connection
        stream_id = stream.id
        assert stream_id is not None  # the request has been sent
        while view:
            await stream.connection.write_ready.wait()
            window = h2.local_flow_control_window(stream_id)
            if window <= 0:
                stream.window_updated.clear()
                await stream.window_updated.wait()
                continue
            size = min(window, len(view))
            step = h2.max_outbound_frame_size
            for at in range(0, size, step):
                h2.send_data(stream_id, view[at : min(at + step, size)])
            stream._transport.write(h2.data_to_send())
            stream.data_sent += size
            stream.connection.data_sent += size
            stream.connection.data_send_process()
            view = view[size:]

    async def _end(self) -> None:
        """The stream has ended: read its status, which must have come with it."""
        if self._trailers_only or self._recv_trailing_metadata_done:
            return
        if self._stream.trailers is None:
            raise GRPCError(Status.INTERNAL, _NO_TRAILERS)
        if self._cardinality.client_streaming:
            # The server ended a bidirectional call the client was still sending on (a
            # Streaming stream ends so): its side is over too, as in grpc-go, and grpclib
            # may read the status, which it refuses while the client's side is open.
            self._end_done = True
        await self.recv_trailing_metadata()


class _BatchingTransport(asyncio.Transport):
    """A transport that holds writes until the loop's next turn and sends them together."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class _Protocol(WireProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if BATCHING:
            # Any loop's stream transport (uvloop's are not asyncio.Transport subclasses).
            transport = _BatchingTransport(cast(asyncio.Transport, transport))
        super().connection_made(transport)


class WireChannel(Channel):
    """grpclib's channel on a unix socket with :class:`Codec`, the framing, the keepalive and,
    where it can, batching (see the module's docstring)."""

    def __init__(self, path: str, options: WireOptions | None = None) -> None:
        options = WireOptions() if options is None else options
        self._options = options
        self._keepalive_time = options.keepalive_time
        config = None
        if not HOOKED and options.keepalive_time is not None:
            config = Configuration(
                _keepalive_time=options.keepalive_time,
                _keepalive_timeout=options.keepalive_timeout,
                _keepalive_permit_without_calls=False,
                _http2_max_pings_without_data=0,
                _http2_min_sent_ping_interval_without_data=PEER_MIN_INTERVAL,
            )
        super().__init__(path=path, codec=Codec(options.max_message_size), config=config)

    @property
    def options(self) -> WireOptions:
        """What the channel's connections accept and how they watch the peer."""
        return self._options

    @property
    def keepalive_time(self) -> float | None:
        """The silence before a PING on the next connection (doubled by ``too_many_pings``)."""
        return self._keepalive_time

    def _too_many_pings(self) -> None:
        # grpc-go's answer to GOAWAY too_many_pings: ping half as often from then on.
        if self._keepalive_time is not None:
            self._keepalive_time *= 2

    if HOOKED:

        def _protocol_factory(self) -> H2Protocol:
            # grpclib's protocol, made again as the project's with the same settings.
            plain = super()._protocol_factory()
            keepalive = None
            if self._keepalive_time is not None:
                keepalive = (self._keepalive_time, self._options.keepalive_timeout)
            return _Protocol(
                plain.handler,
                plain.config,
                plain.h2_config,
                limit=self._options.max_message_size,
                keepalive=keepalive,
                on_too_many_pings=self._too_many_pings,
            )

        def request(
            self,
            name: str,
            cardinality: Cardinality,
            request_type: type[Any],
            reply_type: type[Any],
            *,
            timeout: float | None = None,
            deadline: Deadline | None = None,
            metadata: Any = None,
        ) -> Stream[Any, Any]:
            """grpclib's call, as the stream that checks the answer's shape (see
            :class:`_CallStream`, which adds methods and no state)."""
            stream = super().request(
                name,
                cardinality,
                request_type,
                reply_type,
                timeout=timeout,
                deadline=deadline,
                metadata=metadata,
            )
            stream.__class__ = _CallStream
            return stream
