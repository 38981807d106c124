"""What goes over the socket: requests encoded, answers decoded, writes batched.

The Client's channel is grpclib's, with a codec that encodes and decodes betterproto2
messages through plans made once per class (falling back to betterproto2 for anything they
do not cover, so the bytes and values are the same), reads sandbox store records straight into
``SandboxInfo``, and a transport that sends what one event-loop turn wrote in one system call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar, cast

import betterproto2
from grpclib.client import Channel, Handler
from grpclib.encoding.proto import ProtoCodec
from grpclib.protocol import H2Protocol

from ._convert import sandbox_from_pb
from ._models import AnyValue, RuntimeInfo, SandboxInfo
from ._pb import sandbox_pb

_Resp = TypeVar("_Resp", bound=betterproto2.Message)


# -- decoding --------------------------------------------------------------------------------
#
# betterproto2 parses through a BytesIO one byte at a time, which costs more per call than
# the whole HTTP/2 exchange around it. The library's channel decodes instead with plans made
# once per message class from betterproto2's own field metadata: one pass over the bytes,
# straight into the message's constructor. Only what the answers here use is planned
# (strings, bytes, integer and bool scalars, messages, wrapped messages such as Timestamp,
# and maps of them); a class with anything else (oneofs, enums, packed or floating-point
# fields), and any input that holds an unknown field or a wire type the plan does not expect,
# goes to betterproto2's own parser, so every answer decodes to what betterproto2 would give.


class _Fallback(Exception):
    """This input is not for the fast path: let betterproto2 parse it."""


_VARINT, _LEN = 0, 2
(_STR, _BYTES, _UINT32, _UINT64, _INT32, _INT64, _BOOL, _MSG, _MAP) = range(9)
_SCALARS = {
    betterproto2.TYPE_UINT32: _UINT32,
    betterproto2.TYPE_UINT64: _UINT64,
    betterproto2.TYPE_INT32: _INT32,
    betterproto2.TYPE_INT64: _INT64,
    betterproto2.TYPE_BOOL: _BOOL,
}
_MASK32, _MASK64 = (1 << 32) - 1, (1 << 64) - 1


class _Plan:
    """How to decode one message class: its fields by wire tag."""

    __slots__ = ("cls", "defaults", "fields")

    def __init__(
        self,
        cls: type[betterproto2.Message],
        fields: dict[int, tuple[int, str, bool, _Plan | None, bool]],
        defaults: dict[str, Callable[[], Any]],
    ) -> None:
        self.cls = cls
        # tag -> (kind, field name, repeated, plan of a message or map entry, unwrap)
        self.fields = fields
        self.defaults = defaults


_plans: dict[type, _Plan | None] = {}


def _plan_for(cls: type) -> _Plan | None:
    """The decoding plan of ``cls``, or None when betterproto2 must parse it."""
    try:
        return _plans[cls]
    except KeyError:
        pass
    _plans[cls] = None  # a message that holds itself is left to betterproto2
    plan = _make_plan(cls)
    _plans[cls] = plan
    return plan


def _make_plan(cls: type) -> _Plan | None:
    if not (isinstance(cls, type) and issubclass(cls, betterproto2.Message)):
        return None
    if cls()._is_pydantic():
        return None
    meta: Any = cls._betterproto  # type: ignore[arg-type]  # built by betterproto2 on first use
    fields: dict[int, tuple[int, str, bool, _Plan | None, bool]] = {}
    for name, field in meta.meta_by_field_name.items():
        if field.group is not None:
            return None
        kind = _SCALARS.get(field.proto_type)
        if kind is not None:
            if field.repeated:
                return None  # packed on the wire
            fields[field.number << 3 | _VARINT] = (kind, name, False, None, False)
            continue
        if field.proto_type == betterproto2.TYPE_STRING:
            fields[field.number << 3 | _LEN] = (_STR, name, bool(field.repeated), None, False)
        elif field.proto_type == betterproto2.TYPE_BYTES:
            fields[field.number << 3 | _LEN] = (_BYTES, name, bool(field.repeated), None, False)
        elif field.proto_type == betterproto2.TYPE_MESSAGE:
            unwrap = field.unwrap is not None
            sub = _plan_for(field.unwrap() if field.unwrap else meta.cls_by_field[name])
            if sub is None:
                return None
            fields[field.number << 3 | _LEN] = (_MSG, name, bool(field.repeated), sub, unwrap)
        elif field.proto_type == betterproto2.TYPE_MAP:
            sub = _plan_for(meta.cls_by_field[name])
            if sub is None:
                return None
            fields[field.number << 3 | _LEN] = (_MAP, name, False, sub, False)
        else:
            return None
    return _Plan(cls, fields, dict(meta.default_gen))


def _varint(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``first`` (>= 0x80) was read before ``pos``."""
    value = first & 0x7F
    shift = 7
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Fallback


def _decode_fields(plan: _Plan, data: bytes, pos: int, end: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    table = plan.fields
    while pos < end:
        b = data[pos]
        pos += 1
        tag, pos = (b, pos) if b < 0x80 else _varint(data, pos, b)
        entry = table.get(tag)
        if entry is None:
            raise _Fallback
        kind, name, repeated, sub, unwrap = entry
        b = data[pos]
        pos += 1
        value: Any
        if tag & 7 == _VARINT:
            value, pos = (b, pos) if b < 0x80 else _varint(data, pos, b)
            if kind == _UINT32:
                value &= _MASK32
            elif kind == _UINT64:
                value &= _MASK64
            elif kind == _BOOL:
                value = value > 0
            else:
                bits = 32 if kind == _INT32 else 64
                value &= (1 << bits) - 1
                sign = 1 << (bits - 1)
                value = (value ^ sign) - sign
            out[name] = value
            continue
        length, pos = (b, pos) if b < 0x80 else _varint(data, pos, b)
        stop = pos + length
        if stop > end:
            raise _Fallback
        if kind == _STR:
            value = data[pos:stop].decode()
        elif kind == _BYTES:
            value = data[pos:stop]
        elif kind == _MSG:
            assert sub is not None
            value = sub.cls(**_decode_fields(sub, data, pos, stop))
            if unwrap:
                value = value.to_wrapped()
        else:  # a map entry
            assert sub is not None
            item = _decode_fields(sub, data, pos, stop)
            key = item["key"] if "key" in item else sub.defaults["key"]()
            value = item["value"] if "value" in item else sub.defaults["value"]()
            out.setdefault(name, {})[key] = value
            pos = stop
            continue
        pos = stop
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    if pos != end:
        raise _Fallback
    return out


def _decode(message_type: type[_Resp], data: bytes) -> _Resp:
    plan = _plan_for(message_type)
    if plan is not None:
        try:
            return plan.cls(**_decode_fields(plan, data, 0, len(data)))  # type: ignore[return-value]
        except Exception:
            pass
    return message_type.FromString(data)


# Store records are what a Client reads most (get_sandbox, list_sandboxes, load_sandbox,
# labels), and all it returns of them is SandboxInfo: they are decoded from the wire straight
# into it, with no betterproto2 message in between. A reply it does not know field for field
# (an unknown field, an odd wire type, an extension without a value) is decoded the general
# way and converted by sandbox_from_pb, which is also what these must always agree with.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EMPTY_RUNTIME = RuntimeInfo("")


class _RecordReply:
    """Reply type of Store.Get read as ``SandboxInfo | None``."""


class _RecordListReply:
    """Reply type of Store.List read as ``list[SandboxInfo]``."""


def _str_at(data: bytes, pos: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited value whose length starts at ``pos``."""
    b = data[pos]
    pos += 1
    length, pos = (b, pos) if b < 0x80 else _varint(data, pos, b)
    return pos, pos + length


def _any_value(data: bytes, pos: int, end: int) -> AnyValue:
    type_url, value = "", b""
    while pos < end:
        tag = data[pos]
        if tag == 0x0A:
            start, pos = _str_at(data, pos + 1)
            type_url = data[start:pos].decode()
        elif tag == 0x12:
            start, pos = _str_at(data, pos + 1)
            value = data[start:pos]
        else:
            raise _Fallback
    if pos != end:
        raise _Fallback
    return AnyValue(type_url, value)


def _timestamp(data: bytes, pos: int, end: int) -> datetime:
    seconds = nanos = 0
    while pos < end:
        tag = data[pos]
        if tag not in (0x08, 0x10):
            raise _Fallback
        b = data[pos + 1]
        value, pos = (b, pos + 2) if b < 0x80 else _varint(data, pos + 2, b)
        if tag == 0x08:
            seconds = ((value & _MASK64) ^ (1 << 63)) - (1 << 63)
        else:
            nanos = ((value & _MASK32) ^ (1 << 31)) - (1 << 31)
    if pos != end:
        raise _Fallback
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def _entry(data: bytes, pos: int, end: int, message_value: bool) -> tuple[str, Any]:
    key: str = ""
    value: Any = None if message_value else ""
    while pos < end:
        tag = data[pos]
        start, pos = _str_at(data, pos + 1)
        if tag == 0x0A:
            key = data[start:pos].decode()
        elif tag == 0x12:
            value = _any_value(data, start, pos) if message_value else data[start:pos].decode()
        else:
            raise _Fallback
    if pos != end or value is None:
        raise _Fallback
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
        if tag & 7 != _LEN or tag >= 0x80:
            raise _Fallback
        start, pos = _str_at(data, pos + 1)
        if tag == 0x0A:
            sandbox_id = data[start:pos].decode()
        elif tag == 0x12:
            runtime = _runtime(data, start, pos)
        elif tag == 0x1A:
            spec = _any_value(data, start, pos)
        elif tag == 0x22:
            key, value = _entry(data, start, pos, False)
            labels[key] = value
        elif tag == 0x2A:
            created = _timestamp(data, start, pos)
        elif tag == 0x32:
            updated = _timestamp(data, start, pos)
        elif tag == 0x3A:
            key, value = _entry(data, start, pos, True)
            extensions[key] = value
        elif tag == 0x52:
            sandboxer = data[start:pos].decode()
        else:
            raise _Fallback
    if pos != end:
        raise _Fallback
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


def _runtime(data: bytes, pos: int, end: int) -> RuntimeInfo:
    name = ""
    options: AnyValue | None = None
    while pos < end:
        tag = data[pos]
        start, pos = _str_at(data, pos + 1)
        if tag == 0x0A:
            name = data[start:pos].decode()
        elif tag == 0x12:
            options = _any_value(data, start, pos)
        else:
            raise _Fallback
    if pos != end:
        raise _Fallback
    return RuntimeInfo(name, options)


def _records(data: bytes, single: bool) -> list[SandboxInfo]:
    """The records of a Store.Get (at most one) or Store.List answer."""
    found: list[SandboxInfo] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            if data[pos] != 0x0A:
                raise _Fallback
            start, pos = _str_at(data, pos + 1)
            if pos > end:
                raise _Fallback
            record = _record(data, start, pos)
            if single:
                found[:] = [record]
            else:
                found.append(record)
        if pos != end:
            raise _Fallback
    except Exception:
        if single:
            got = sandbox_pb.StoreGetResponse.FromString(data).sandbox
            return [] if got is None else [sandbox_from_pb(got)]
        return [sandbox_from_pb(pb) for pb in sandbox_pb.StoreListResponse.FromString(data).list]
    return found


# -- encoding --------------------------------------------------------------------------------
#
# betterproto2 encodes through a BytesIO too, and works out each field's default anew (under
# warnings.catch_warnings) to leave it out. Requests are encoded instead with plans made once
# per class, field for field as betterproto2 does it (same order, same defaults left out, map
# entries with both key and value, unknown fields last), so the bytes are the same; classes
# outside the plans (see above) are encoded by betterproto2.


class _EncodePlan:
    """How to encode one message class."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[tuple[str, bytes, int, Any, Any, Any, Any]]) -> None:
        # (name, key, kind, default, sub-plan or map kinds, unwrap class, repeated)
        self.fields = fields


_encode_plans: dict[type, _EncodePlan | None] = {}


def _encode_plan_for(cls: type) -> _EncodePlan | None:
    try:
        return _encode_plans[cls]
    except KeyError:
        pass
    _encode_plans[cls] = None
    plan = _make_encode_plan(cls)
    _encode_plans[cls] = plan
    return plan


def _kind_of(field: Any) -> int | None:
    """The kind of a non-map field, or None if the plans do not cover it."""
    kind = _SCALARS.get(field.proto_type)
    if kind is not None:
        return None if field.repeated else kind  # packed on the wire
    return {
        betterproto2.TYPE_STRING: _STR,
        betterproto2.TYPE_BYTES: _BYTES,
        betterproto2.TYPE_MESSAGE: _MSG,
    }.get(field.proto_type)


def _make_encode_plan(cls: type) -> _EncodePlan | None:
    if not (isinstance(cls, type) and issubclass(cls, betterproto2.Message)):
        return None
    if cls()._is_pydantic():
        return None
    meta: Any = cls._betterproto  # type: ignore[arg-type]  # built by betterproto2 on first use
    fields: list[tuple[str, bytes, int, Any, Any, Any, Any]] = []
    for name, field in meta.meta_by_field_name.items():
        if field.group is not None:
            return None
        default = meta.default_gen[name]()
        if field.proto_type == betterproto2.TYPE_MAP:
            key_meta, value_meta = field.map_meta
            key_kind, value_kind = _kind_of(key_meta), _kind_of(value_meta)
            if key_kind is None or key_kind == _MSG or value_kind is None:
                return None
            value_unwrap = value_meta.unwrap() if value_meta.unwrap else None
            value_cls = value_unwrap or meta.cls_by_field.get(f"{name}.value")
            if value_kind == _MSG and _encode_plan_for(value_cls) is None:
                return None
            kinds = (key_kind, value_kind, value_unwrap)
            fields.append((name, _key(field.number, _LEN), _MAP, default, kinds, None, False))
            continue
        kind = _kind_of(field)
        if kind is None:
            return None
        unwrap = field.unwrap() if field.unwrap else None
        if kind == _MSG and _encode_plan_for(unwrap or meta.cls_by_field[name]) is None:
            return None
        wire = _VARINT if kind in _SCALARS.values() else _LEN
        key = _key(field.number, wire)
        fields.append((name, key, kind, default, None, unwrap, bool(field.repeated)))
    return _EncodePlan(fields)


def _key(number: int, wire: int) -> bytes:
    return _varint_bytes(number << 3 | wire)


def _varint_bytes(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_value(kind: int, value: Any, unwrap: Any) -> bytes:
    """One value's bytes after its key: a varint, or a length and the payload."""
    data: bytes
    if kind == _STR:
        data = value.encode()
    elif kind == _BYTES:
        data = bytes(value)
    elif kind == _MSG:
        data = _encode(unwrap.from_wrapped(value) if unwrap is not None else value)
    else:
        return _varint_bytes(value)
    n = len(data)
    return (bytes((n,)) if n < 0x80 else _varint_bytes(n)) + data


def _encode(message: betterproto2.Message) -> bytes:
    """``bytes(message)``, the same bytes, sooner."""
    plan = _encode_plan_for(type(message))
    if plan is None:
        return bytes(message)
    out: list[bytes] = []
    for name, key, kind, default, kinds, unwrap, repeated in plan.fields:
        value = getattr(message, name)
        if value is None or value == default:
            continue
        if kind == _MAP:
            key_kind, value_kind, value_unwrap = kinds
            for k, v in value.items():
                entry = (
                    (b"\x08" if key_kind in _SCALARS.values() else b"\x0a")
                    + _encode_value(key_kind, k, None)
                    + (b"\x10" if value_kind in _SCALARS.values() else b"\x12")
                    + _encode_value(value_kind, v, value_unwrap)
                )
                out.append(key)
                out.append(_encode_value(_BYTES, entry, None))
        elif repeated:
            for item in value:
                out.append(key)
                out.append(_encode_value(kind, item, unwrap))
        else:
            out.append(key)
            out.append(_encode_value(kind, value, unwrap))
    out.append(message._unknown_fields)
    return b"".join(out)


class _Codec(ProtoCodec):
    """grpclib's protobuf codec with the fast encoding and decoding above."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if not isinstance(message, message_type):
            raise TypeError(f"Message must be of type {message_type!r}, not {type(message)!r}")
        return _encode(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        if message_type is _RecordReply:
            found = _records(data, True)
            return found[0] if found else None
        if message_type is _RecordListReply:
            return _records(data, False)
        return _decode(message_type, data)


# -- writing ---------------------------------------------------------------------------------
#
# grpclib writes each frame to the socket as soon as it is made: a unary call costs a send()
# for its headers and another for its message, and 64 callers cost 128 of them. The library's
# connection gathers what is written during one turn of the event loop and sends it at the end
# of that turn, in one system call, in the order it was written.


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


class _Channel(Channel):
    """grpclib's channel with the batched writes and the fast decoding above."""

    def __init__(self, path: str) -> None:
        super().__init__(path=path, codec=_Codec())

    async def shut(self) -> None:
        """Close the connection, including one still being made: ``close()`` alone misses a
        connection that completes after it, which would then outlive the Client."""
        lock: asyncio.Lock | None = getattr(self, "_connect_lock", None)
        if lock is None:
            self.close()
            return
        async with lock:
            self.close()

    def _protocol_factory(self) -> H2Protocol:
        return _Protocol(Handler(), self._config, self._h2_config)
