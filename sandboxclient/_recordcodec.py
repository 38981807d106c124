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

from . import _codec
from ._convert import sandbox_from_pb
from ._models import AnyValue, RuntimeInfo, SandboxInfo
from ._pb import sandbox_pb
from ._protowire import DecodeError, read_len, read_varint, skip_field, timestamp, utf8

__all__ = ("RecordListReply", "RecordReply", "decode_records")

_EMPTY_RUNTIME = RuntimeInfo("")
_LEN = 2


class RecordReply:
    """Reply type of Store.Get read as ``SandboxInfo | None``."""


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


def _any_value(data: bytes, pos: int, end: int) -> AnyValue:
    type_url, value = "", b""
    for number, wire, start, stop in _fields(data, pos, end):
        if number == 1:
            _expect_len(number, wire, "Any")
            type_url = utf8(data, start, stop)
        elif number == 2:
            _expect_len(number, wire, "Any")
            value = data[start:stop]
    return AnyValue(type_url, value)


def _timestamp(data: bytes, pos: int, end: int) -> datetime:
    seconds = nanos = 0
    for number, wire, start, _stop in _fields(data, pos, end):
        if number in (1, 2):
            if wire != 0:
                raise DecodeError(f"field {number} of Timestamp has wire type {wire}")
            value, _ = read_varint(data, start, end)
            if number == 1:
                value &= 0xFFFFFFFFFFFFFFFF
                seconds = (value ^ (1 << 63)) - (1 << 63)
            else:
                value &= 0xFFFFFFFF
                nanos = (value ^ (1 << 31)) - (1 << 31)
    return timestamp(seconds, nanos)


def _entry(data: bytes, pos: int, end: int, message_value: bool) -> tuple[str, Any]:
    key = ""
    value: Any = AnyValue("", b"") if message_value else ""
    for number, wire, start, stop in _fields(data, pos, end):
        if number == 1:
            _expect_len(number, wire, "map entry")
            key = utf8(data, start, stop)
        elif number == 2:
            _expect_len(number, wire, "map entry")
            value = _any_value(data, start, stop) if message_value else utf8(data, start, stop)
    return key, value


def _runtime(data: bytes, pos: int, end: int) -> RuntimeInfo:
    name = ""
    options: AnyValue | None = None
    for number, wire, start, stop in _fields(data, pos, end):
        if number == 1:
            _expect_len(number, wire, "Sandbox.Runtime")
            name = utf8(data, start, stop)
        elif number == 2:
            _expect_len(number, wire, "Sandbox.Runtime")
            options = _any_value(data, start, stop)
    return RuntimeInfo(name, options)


def _record(data: bytes, pos: int, end: int) -> SandboxInfo:
    sandbox_id = sandboxer = ""
    runtime = _EMPTY_RUNTIME
    spec: AnyValue | None = None
    created: datetime | None = None
    updated: datetime | None = None
    labels: dict[str, str] = {}
    extensions: dict[str, AnyValue] = {}
    for number, wire, start, stop in _fields(data, pos, end):
        if number not in (1, 2, 3, 4, 5, 6, 7, 10):
            continue
        _expect_len(number, wire, "Sandbox")
        if number == 1:
            sandbox_id = utf8(data, start, stop)
        elif number == 2:
            runtime = _runtime(data, start, stop)
        elif number == 3:
            spec = _any_value(data, start, stop)
        elif number == 4:
            key, value = _entry(data, start, stop, False)
            labels[key] = value
        elif number == 5:
            created = _timestamp(data, start, stop)
        elif number == 6:
            updated = _timestamp(data, start, stop)
        elif number == 7:
            key, ext = _entry(data, start, stop, True)
            extensions[key] = ext
        else:
            sandboxer = utf8(data, start, stop)
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
        for number, wire, start, stop in _fields(data, 0, len(data)):
            if number != 1:
                continue
            _expect_len(number, wire, "the answer")
            record = _record(data, start, stop)
            if single:
                found[:] = [record]
            else:
                found.append(record)
    except RecursionError:
        raise DecodeError("record nested too deeply") from None
    return found
