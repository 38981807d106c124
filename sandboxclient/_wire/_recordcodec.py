"""Sandbox store answers decoded from the wire straight into ``SandboxInfo``.

Store records are what a Client reads most (``get_sandbox``, ``list_sandboxes``,
``load_sandbox``, ``labels``), and all it returns of them is ``SandboxInfo``, so they skip the
betterproto2 message in between. The reading is as strict as :mod:`._codec`'s (same errors,
unknown fields skipped) and the result is what ``sandbox_from_pb`` gives for the same bytes,
which the tests check. Without the fast codec the answer is decoded the general way and
converted.
"""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from typing import Any

from .._models import AnyValue, RuntimeInfo, SandboxInfo
from . import _codec
from ._convert import sandbox_from_pb
from ._pb import sandbox_pb
from ._protowire import DecodeError, read_len, read_varint, skip_field, timestamp

__all__ = ("RecordListReply", "RecordReply", "decode_records")

_EMPTY_RUNTIME = RuntimeInfo("")
_LEN = 2


class RecordReply:
    """Reply type of Store.Get read as ``list[SandboxInfo]``: the record, or none."""


class RecordListReply:
    """Reply type of Store.List read as ``list[SandboxInfo]``."""


def _fields(data: bytes, pos: int, end: int) -> Any:
    """(number, wire, start, stop) of each field; a LEN field's payload is start:stop."""
    while pos < end:
        b = data[pos]
        if b < 0x80:
            tag, pos = b, pos + 1
        else:
            tag, pos = read_varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire == _LEN:
            start, pos = read_len(data, pos, end)
            yield number, wire, start, pos
        else:
            start = pos
            pos = skip_field(data, pos, end, wire)
            yield number, wire, start, pos


def _expect_len(number: int, wire: int, what: str) -> None:
    if wire != _LEN:
        raise DecodeError(f"field {number} of {what} has wire type {wire}, expected 2")


def _len_at(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited value whose length is at ``pos``."""
    b = data[pos] if pos < end else 0x80
    if b < 0x80 and pos + 1 + b <= end:
        return pos + 1, pos + 1 + b
    return read_len(data, pos, end)


def _skip_or_refuse(data: bytes, pos: int, end: int, known: tuple[int, ...], what: str) -> int:
    """Past the field at ``pos``: unknown, it is skipped; known, its wire type is wrong."""
    for number, wire, _start, stop in _fields(data, pos, end):
        if number in known:
            _expect_len(number, wire, what)
        return int(stop)
    return end


def _any_value(data: bytes, pos: int, end: int) -> AnyValue:
    type_url, value = "", b""
    while pos < end:
        tag = data[pos]
        if tag == 0x0A:
            start, pos = _len_at(data, pos + 1, end)
            type_url = data[start:pos].decode()
        elif tag == 0x12:
            start, pos = _len_at(data, pos + 1, end)
            value = data[start:pos]
        else:
            pos = _skip_or_refuse(data, pos, end, (1, 2), "Any")
    return AnyValue(type_url, value)


def _timestamp(data: bytes, pos: int, end: int) -> datetime:
    seconds = nanos = 0
    while pos < end:
        tag = data[pos]
        if tag in (0x08, 0x10):
            # The varint inline: seconds take five bytes or so, and this is the hot loop.
            value = shift = 0
            pos += 1
            while True:
                if pos >= end or shift >= 70:
                    raise DecodeError("truncated or overlong varint in a timestamp")
                b = data[pos]
                pos += 1
                value |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            if tag == 0x08:
                value &= 0xFFFFFFFFFFFFFFFF
                seconds = (value ^ (1 << 63)) - (1 << 63)
            else:
                value &= 0xFFFFFFFF
                nanos = (value ^ (1 << 31)) - (1 << 31)
        else:
            for number, wire, _start, stop in _fields(data, pos, end):
                if number in (1, 2):
                    raise DecodeError(f"field {number} of Timestamp has wire type {wire}")
                pos = stop
                break
    return timestamp(seconds, nanos)


def _runtime(data: bytes, pos: int, end: int) -> RuntimeInfo:
    name = ""
    options: AnyValue | None = None
    while pos < end:
        tag = data[pos]
        if tag == 0x0A:
            start, pos = _len_at(data, pos + 1, end)
            name = data[start:pos].decode()
        elif tag == 0x12:
            start, pos = _len_at(data, pos + 1, end)
            options = _any_value(data, start, pos)
        else:
            pos = _skip_or_refuse(data, pos, end, (1, 2), "Sandbox.Runtime")
    return RuntimeInfo(name, options)


def _entry(data: bytes, pos: int, end: int, message_value: bool) -> tuple[str, Any]:
    key = ""
    value: Any = AnyValue("", b"") if message_value else ""
    while pos < end:
        tag = data[pos]
        if tag in (0x0A, 0x12):
            start, pos = _len_at(data, pos + 1, end)
            if tag == 0x0A:
                key = data[start:pos].decode()
            elif message_value:
                value = _any_value(data, start, pos)
            else:
                value = data[start:pos].decode()
            continue
        pos = _skip_or_refuse(data, pos, end, (1, 2), "map entry")
    return key, value


def _record(data: bytes, pos: int, end: int) -> SandboxInfo:
    sandbox_id = sandboxer = ""
    runtime = _EMPTY_RUNTIME
    spec: AnyValue | None = None
    created: datetime | None = None
    updated: datetime | None = None
    labels: dict[str, str] = {}
    extensions: dict[str, AnyValue] = {}
    while pos < end:
        tag = data[pos]
        if tag >= 0x80 or tag & 7 != _LEN or (tag >> 3) not in _RECORD_FIELDS:
            # Rare: skip an unknown field, or refuse a known one of another wire type.
            pos = _skip_or_refuse(data, pos, end, _RECORD_NUMBERS, "Sandbox")
            continue
        b = data[pos + 1] if pos + 1 < end else 0x80
        if b < 0x80 and pos + 2 + b <= end:
            start, pos = pos + 2, pos + 2 + b
        else:
            start, pos = read_len(data, pos + 1, end)
        if tag == 0x0A:
            sandbox_id = data[start:pos].decode()
        elif tag == 0x22:
            key, value = _entry(data, start, pos, False)
            labels[key] = value
        elif tag == 0x12:
            runtime = _runtime(data, start, pos)
        elif tag == 0x1A:
            spec = _any_value(data, start, pos)
        elif tag == 0x2A:
            created = _timestamp(data, start, pos)
        elif tag == 0x32:
            updated = _timestamp(data, start, pos)
        elif tag == 0x3A:
            key, ext = _entry(data, start, pos, True)
            extensions[key] = ext
        else:
            sandboxer = data[start:pos].decode()
    return SandboxInfo(
        id=sandbox_id,
        runtime=runtime,
        sandboxer=sandboxer,
        created_at=created,
        updated_at=updated,
        labels=MappingProxyType(labels),
        extensions=MappingProxyType(extensions),
        spec_any=spec,
    )


_RECORD_NUMBERS = (1, 2, 3, 4, 5, 6, 7, 10)
_RECORD_FIELDS = frozenset(_RECORD_NUMBERS)


def decode_records(data: bytes, single: bool) -> list[SandboxInfo]:
    """The records of a Store.Get (at most one) or Store.List answer (field 1 of both)."""
    if not _codec.FAST:
        if single:
            got = _codec.decode(sandbox_pb.StoreGetResponse, data).sandbox
            return [] if got is None else [sandbox_from_pb(got)]
        listed = _codec.decode(sandbox_pb.StoreListResponse, data).list
        return [sandbox_from_pb(pb) for pb in listed]
    found: list[SandboxInfo] = []
    try:
        pos, end = 0, len(data)
        while pos < end:
            if data[pos] != 0x0A:
                pos = _skip_or_refuse(data, pos, end, (1,), "the answer")
                continue
            start, pos = _len_at(data, pos + 1, end)
            record = _record(data, start, pos)
            if single:
                found[:] = [record]
            else:
                found.append(record)
    except RecursionError:
        raise DecodeError("record nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in a string field: {exc.reason}") from None
    return found
