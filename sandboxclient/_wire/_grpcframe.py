"""gRPC's length-prefixed messages, read strictly and within limits, on both sides of a call.

grpclib reads a message as a 5-byte prefix (a compressed flag and a big-endian length) and
then as many bytes as the length says, acknowledging them to the peer as they come: a peer
that claims 4 GiB is sent window updates until the whole claim sits in memory. Its reader
also ends with an ``AssertionError`` on a message cut short, a ``NotImplementedError`` on
the compressed flag, and takes an empty DATA frame for the end of the stream.
:class:`FramedBuffer`, the buffer behind each HTTP/2 stream, checks the prefix before any of
the body is read and refuses, as grpc-go does (containerd's client and server):

- a length over the limit: RESOURCE_EXHAUSTED ``grpc: received message larger than max
  (N vs. LIMIT)``, without buffering the body (16 MiB by default, containerd's own limit);
- the compressed flag: INTERNAL on a client; on a server INTERNAL, or UNIMPLEMENTED when
  the request names an encoding (nothing here decompresses); any other flag: INTERNAL;
- a message cut short by the end of the stream: INTERNAL ``unexpected EOF``;
- on a server, more than :data:`REQUEST_BYTES_PER_CONNECTION` of messages being read at
  once on one connection: RESOURCE_EXHAUSTED, so that memory stays bounded whatever the
  number of streams.

These hooks sit on grpclib's internals, so they are used only for the grpclib versions they
were written against, and not under ``SANDBOXCLIENT_PLAIN_WIRE=1`` (:data:`HOOKED`);
otherwise grpclib's own reader runs, the codec enforces the limit once a message has been
read, and :data:`LIBRARY_WIRE_ERRORS` are what grpclib raises on a malformed answer.
"""

from __future__ import annotations

import binascii
import os
import struct
from collections.abc import Callable

import grpclib
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.protocol import Buffer
from h2.errors import ErrorCodes

from ._codec import PLAIN_ENV
from ._dependencies import in_series

__all__ = (
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HOOKED",
    "LIBRARY_WIRE_ERRORS",
    "MAX_LENGTH_PREFIX",
    "REQUEST_BYTES_PER_CONNECTION",
    "FramedBuffer",
    "RequestBudget",
    "StreamResetError",
    "library_wire_error",
    "too_large",
)

DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
"""containerd's limit on a message, both ways (``defaults.DefaultMaxRecvMsgSize``)."""

MAX_LENGTH_PREFIX = 2**32 - 1
"""The largest length a gRPC message prefix can say."""

REQUEST_BYTES_PER_CONNECTION = 64 << 20
"""What a server reads at once, summed over one connection's requests (four at the limit)."""

_PREFIX = struct.Struct(">BI")


def _hooks_available() -> bool:
    if os.environ.get(PLAIN_ENV, "") == "1":
        return False
    version = getattr(grpclib, "__version__", "")
    return in_series("grpclib", version) and callable(getattr(Channel, "_protocol_factory", None))


HOOKED: bool = _hooks_available()
"""Whether grpclib's protocol is replaced by the project's (framing, keepalive, batching)."""

LIBRARY_WIRE_ERRORS: tuple[type[Exception], ...] = (
    () if HOOKED else (AssertionError, NotImplementedError, KeyError, binascii.Error, UnicodeError)
)
"""What grpclib's own reader raises on a malformed answer (none when :data:`HOOKED`)."""

_LIBRARY_MODULES = ("grpclib.", "betterproto2.grpclib", "h2.", "hpack.")


def library_wire_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :data:`LIBRARY_WIRE_ERRORS` raised inside grpclib's reader
    (or betterproto2's stubs over it): a malformed answer, not a bug of the caller's."""
    if not (LIBRARY_WIRE_ERRORS and isinstance(exc, LIBRARY_WIRE_ERRORS)):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.startswith(_LIBRARY_MODULES)


def too_large(size: int, limit: int) -> GRPCError:
    """RESOURCE_EXHAUSTED for a message of ``size`` bytes over ``limit``, as grpc-go says it."""
    return GRPCError(
        Status.RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({size} vs. {limit})"
    )


def _cut_short() -> GRPCError:
    return GRPCError(Status.INTERNAL, "unexpected EOF: a message was cut short")


class StreamResetError(StreamTerminatedError):
    """The peer reset the stream (RST_STREAM) with ``error_code``."""

    def __init__(self, error_code: int) -> None:
        try:
            name = ErrorCodes(error_code).name
        except ValueError:
            name = str(error_code)
        super().__init__(f"stream reset by the peer: {name}")
        self.error_code = error_code


class RequestBudget:
    """The bytes of the requests being read on one server connection, and their bound."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = REQUEST_BYTES_PER_CONNECTION) -> None:
        self.limit = limit
        self.used = 0


class FramedBuffer(Buffer):
    """grpclib's stream buffer, reading gRPC messages as described in the module's docstring.

    grpclib's reader asks for 5 bytes, then for the length they say: the buffer checks the
    prefix on the first read and bounds the second. ``server`` chooses the side's statuses;
    ``encoding`` is the request's ``grpc-encoding``; ``budget`` is its connection's.
    """

    def __init__(
        self,
        ack_callback: Callable[[int], None],
        *,
        limit: int,
        server: bool = False,
        encoding: str | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        super().__init__(ack_callback)
        self._limit = limit
        self._server = server
        self._encoding = encoding
        self._budget = budget
        self._body: int | None = None
        self.ended = False
        """Whether the peer has ended its side of the stream (END_STREAM)."""

    def eof(self) -> None:
        """The peer ended the stream: what is buffered stays readable."""
        self.ended = True
        super().eof()

    def add(self, data: bytes, ack_size: int) -> None:
        """Queue a DATA frame's payload; an empty, unpadded frame carries nothing (grpclib
        would take it for the end of the stream)."""
        if data or ack_size:
            super().add(data, ack_size)

    async def read(self, size: int) -> bytes:
        """``size`` bytes: a message's prefix, checked, or the body it announced."""
        body, self._body = self._body, None
        if body is None or body != size:
            data = await self._read(size)
            if size == _PREFIX.size and len(data) == size:
                self._body = self._check(data)
            return data
        budget = self._budget
        if budget is not None:
            budget.used += size
        try:
            data = await self._read(size)
        finally:
            if budget is not None:
                budget.used -= size
        if len(data) != size:  # the stream ended where the body should be
            raise _cut_short()
        return data

    async def _read(self, size: int) -> bytes:
        try:
            return await super().read(size)
        except AssertionError:  # grpclib's "Received less data than expected"
            raise _cut_short() from None

    def _check(self, prefix: bytes) -> int:
        flag, length = _PREFIX.unpack(prefix)
        if flag == 1:
            if self._server and self._encoding not in (None, "", "identity"):
                raise GRPCError(
                    Status.UNIMPLEMENTED,
                    f"grpc: Decompressor is not installed for grpc-encoding {self._encoding!r}",
                )
            raise GRPCError(Status.INTERNAL, "grpc: compressed message without grpc-encoding")
        if flag != 0:
            raise GRPCError(Status.INTERNAL, f"grpc: received unexpected payload format {flag}")
        if length > self._limit:
            raise too_large(length, self._limit)
        budget = self._budget
        if budget is not None and budget.used + length > budget.limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"grpc: {budget.used + length} bytes of requests in flight on one connection, "
                f"over {budget.limit}",
            )
        return int(length)
