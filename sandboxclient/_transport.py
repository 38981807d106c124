"""The Client's channel: grpclib's, with the strict codec and writes batched per loop turn.

grpclib writes each frame to the socket as soon as it is made: a unary call costs a send()
for its headers and another for its message, and 64 callers cost 128 of them. The library's
connection gathers what is written during one turn of the event loop and sends it at the end
of that turn, in one system call, in the order it was written. That needs grpclib's protocol
factory, which is not a public API: it is replaced only for the grpclib versions this was
written against (and unless ``SANDBOXCLIENT_PLAIN_WIRE=1``); otherwise the channel is
grpclib's own, with the codec.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

import grpclib
from grpclib.client import Channel, Handler
from grpclib.encoding.proto import ProtoCodec
from grpclib.protocol import H2Protocol

from . import _codec, _encoder
from ._recordcodec import RecordListReply, RecordReply, decode_records

__all__ = ("BATCHING", "Codec", "WireChannel")

_KNOWN_GRPCLIB = ("0.4.",)


def _batching_available() -> bool:
    if os.environ.get(_codec.PLAIN_ENV, "") == "1":
        return False
    version = getattr(grpclib, "__version__", "")
    return version.startswith(_KNOWN_GRPCLIB) and callable(
        getattr(Channel, "_protocol_factory", None)
    )


BATCHING: bool = _batching_available()
"""Whether writes are batched (see the module's docstring)."""


class Codec(ProtoCodec):
    """grpclib's protobuf codec, encoding and decoding through :mod:`._codec`.

    Reply types :class:`RecordReply` and :class:`RecordListReply` decode a sandbox store
    answer straight into ``SandboxInfo`` records.
    """

    def encode(self, message: Any, message_type: Any) -> bytes:
        if not isinstance(message, message_type):
            raise TypeError(f"Message must be of type {message_type!r}, not {type(message)!r}")
        return _encoder.encode(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        if message_type is RecordReply:
            found = decode_records(data, True)
            return found[0] if found else None
        if message_type is RecordListReply:
            return decode_records(data, False)
        return _codec.decode(message_type, data)


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


class _Protocol(H2Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any loop's stream transport (uvloop's are not asyncio.Transport subclasses).
        super().connection_made(_BatchingTransport(cast(asyncio.Transport, transport)))


class WireChannel(Channel):
    """grpclib's channel on a unix socket with :class:`Codec` and, where it can, batching."""

    def __init__(self, path: str) -> None:
        super().__init__(path=path, codec=Codec())

    if BATCHING:

        def _protocol_factory(self) -> H2Protocol:
            return _Protocol(Handler(), self._config, self._h2_config)
