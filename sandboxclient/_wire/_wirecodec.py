"""The grpclib codec the client and the servers share: betterproto2's encoding through
its own, and a size limit on what is read.

Each side decodes in its own way (the client's answers into records, the servers' requests
into containerd's refusals), so the subclasses in :mod:`._transport` and :mod:`._server`
override :meth:`LimitedCodec.decode` and call :meth:`LimitedCodec.check_size` first.
"""

from __future__ import annotations

from typing import Any

from grpclib.encoding.proto import ProtoCodec

from . import _codec
from ._grpcframe import DEFAULT_MAX_MESSAGE_SIZE, too_large

__all__ = ("LimitedCodec",)


class LimitedCodec(ProtoCodec):
    """A protobuf codec that refuses a message over ``limit`` bytes with RESOURCE_EXHAUSTED.

    On the hooked path the framing refuses it before reading its body; this is the plain
    path's check, after.
    """

    def __init__(self, limit: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__()
        self._limit = limit

    def encode(self, message: Any, message_type: Any) -> bytes:
        """A message's bytes, as betterproto2 would write them."""
        if not isinstance(message, message_type):
            raise TypeError(f"Message must be of type {message_type!r}, not {type(message)!r}")
        return bytes(message)

    def check_size(self, data: bytes) -> None:
        """Refuse ``data`` when it is over the limit."""
        if len(data) > self._limit:
            raise too_large(len(data), self._limit)

    def decode(self, data: bytes, message_type: Any) -> Any:
        """A message read strictly (``DecodeError`` if it is not a valid encoding)."""
        self.check_size(data)
        return _codec.decode(message_type, data)
