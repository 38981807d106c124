"""The protobuf wire format: field kinds, varints, lengths, and strict reading of values.

Used by the decoder (:mod:`._codec`).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import betterproto2

__all__ = (
    "FIXED32",
    "FIXED64",
    "KINDS",
    "LEN",
    "PACKABLE",
    "VARINT",
    "DecodeError",
    "read_len",
    "read_varint",
    "scalar",
    "skip_field",
    "timestamp",
    "utf8",
    "wire_of",
)


class DecodeError(ValueError):
    """The bytes are not a valid encoding of the expected message."""


VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z

# What a field is on the wire and how its value is made.
(
    K_INT32,
    K_INT64,
    K_UINT32,
    K_UINT64,
    K_SINT32,
    K_SINT64,
    K_BOOL,
    K_ENUM,
    K_FIXED32,
    K_SFIXED32,
    K_FLOAT,
    K_FIXED64,
    K_SFIXED64,
    K_DOUBLE,
    K_STRING,
    K_BYTES,
    K_MESSAGE,
    K_MAP,
) = range(18)

KINDS = {
    betterproto2.TYPE_INT32: K_INT32,
    betterproto2.TYPE_INT64: K_INT64,
    betterproto2.TYPE_UINT32: K_UINT32,
    betterproto2.TYPE_UINT64: K_UINT64,
    betterproto2.TYPE_SINT32: K_SINT32,
    betterproto2.TYPE_SINT64: K_SINT64,
    betterproto2.TYPE_BOOL: K_BOOL,
    betterproto2.TYPE_ENUM: K_ENUM,
    betterproto2.TYPE_FIXED32: K_FIXED32,
    betterproto2.TYPE_SFIXED32: K_SFIXED32,
    betterproto2.TYPE_FLOAT: K_FLOAT,
    betterproto2.TYPE_FIXED64: K_FIXED64,
    betterproto2.TYPE_SFIXED64: K_SFIXED64,
    betterproto2.TYPE_DOUBLE: K_DOUBLE,
    betterproto2.TYPE_STRING: K_STRING,
    betterproto2.TYPE_BYTES: K_BYTES,
    betterproto2.TYPE_MESSAGE: K_MESSAGE,
    betterproto2.TYPE_MAP: K_MAP,
}
VARINT_KINDS = frozenset(range(K_INT32, K_ENUM + 1))
FIXED32_KINDS = frozenset({K_FIXED32, K_SFIXED32, K_FLOAT})
FIXED64_KINDS = frozenset({K_FIXED64, K_SFIXED64, K_DOUBLE})
PACKABLE = VARINT_KINDS | FIXED32_KINDS | FIXED64_KINDS
STRUCT = {
    K_FIXED32: struct.Struct("<I"),
    K_SFIXED32: struct.Struct("<i"),
    K_FLOAT: struct.Struct("<f"),
    K_FIXED64: struct.Struct("<Q"),
    K_SFIXED64: struct.Struct("<q"),
    K_DOUBLE: struct.Struct("<d"),
}


def wire_of(kind: int) -> int:
    if kind in VARINT_KINDS:
        return VARINT
    if kind in FIXED32_KINDS:
        return FIXED32
    if kind in FIXED64_KINDS:
        return FIXED64
    return LEN


# -- reading -----------------------------------------------------------------------------------


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; DecodeError past ``end`` or 10 bytes."""
    value = shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


def read_len(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited value whose length starts at ``pos``."""
    if pos < end and data[pos] < 0x80:
        length, pos = data[pos], pos + 1
    else:
        length, pos = read_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise DecodeError("length past the end of the message")
    return pos, stop


def skip_field(data: bytes, pos: int, end: int, wire: int) -> int:
    """The position after the value of an unknown field of wire type ``wire``."""
    if wire == VARINT:
        return read_varint(data, pos, end)[1]
    if wire == LEN:
        return read_len(data, pos, end)[1]
    if wire == FIXED64:
        pos += 8
    elif wire == FIXED32:
        pos += 4
    else:
        raise DecodeError(f"unsupported wire type {wire}")
    if pos > end:
        raise DecodeError("truncated fixed-size field")
    return pos


def utf8(data: bytes, start: int, stop: int) -> str:
    """The UTF-8 text of ``data[start:stop]``; DecodeError if it is not valid UTF-8."""
    try:
        return data[start:stop].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in a string field: {exc.reason}") from None


def timestamp(seconds: int, nanos: int) -> datetime:
    """A google.protobuf.Timestamp as a tz-aware datetime, refusing one out of range."""
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS or not 0 <= nanos <= 999_999_999:
        raise DecodeError(f"timestamp out of range: {seconds} s {nanos} ns")
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    sign = 1 << (bits - 1)
    return (value ^ sign) - sign


def scalar(kind: int, value: int) -> Any:
    if kind == K_UINT64:
        return value & 0xFFFFFFFFFFFFFFFF
    if kind == K_UINT32:
        return value & 0xFFFFFFFF
    if kind == K_BOOL:
        return value != 0
    if kind in (K_INT64, K_ENUM):
        return signed(value, 64)
    if kind == K_INT32:
        return signed(value, 32)
    if kind == K_SINT64:
        value &= 0xFFFFFFFFFFFFFFFF
    else:
        value &= 0xFFFFFFFF
    return (value >> 1) ^ -(value & 1)
