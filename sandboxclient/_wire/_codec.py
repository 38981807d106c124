"""Protobuf bytes to betterproto2 messages and back: strict, and in one pass.

betterproto2 parses through a BytesIO one byte at a time, which costs more per call than the
whole HTTP/2 exchange around it, and it accepts what it should refuse: a varint where a string
belongs becomes an ``int`` in a ``str`` field, a truncated string is kept, invalid UTF-8 raises
``UnicodeDecodeError``. This codec decodes with plans made once per message class from
betterproto2's field metadata, straight into the message's constructor, and refuses, with
:class:`DecodeError`, any input that is not a valid encoding: a known field with the wrong wire
type, a length past the end, a varint over ten bytes, invalid UTF-8, a group, a timestamp
outside 0001-01-01..9999-12-31. Unknown fields are skipped, as proto3 readers do. Requests are
encoded by betterproto2 itself.

The plans read betterproto2's class metadata, which is not a public API: :data:`FAST` is true
only for the betterproto2 versions this was written against (and unless
``SANDBOXCLIENT_PLAIN_WIRE=1``); otherwise :func:`decode` uses betterproto2's own parser, and
still turns every parse failure into :class:`DecodeError`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

import betterproto2

from ._dependencies import in_series
from ._pb import TimestampPb
from ._protowire import (
    FIXED32,
    K_BYTES,
    K_ENUM,
    K_MAP,
    K_MESSAGE,
    K_STRING,
    KINDS,
    LEN,
    PACKABLE,
    STRUCT,
    VARINT,
    VARINT_KINDS,
    DecodeError,
    read_len,
    read_varint,
    scalar,
    skip_field,
    timestamp,
    utf8,
    wire_of,
)

__all__ = ("FAST", "PLAIN_ENV", "decode")

_M = TypeVar("_M", bound=betterproto2.Message)

PLAIN_ENV = "SANDBOXCLIENT_PLAIN_WIRE"
"""Set to ``1`` to use the libraries' plain paths (no plans, no batched writes)."""

_PLANNED_FROM = frozenset({"number", "proto_type", "map_meta", "group", "unwrap", "repeated"})


def _fast_available() -> bool:
    if os.environ.get(PLAIN_ENV, "") == "1":
        return False
    version = getattr(betterproto2, "__version__", "")
    meta = getattr(betterproto2, "FieldMetadata", None)
    if not in_series("betterproto2", version) or not dataclasses.is_dataclass(meta):
        return False
    return {f.name for f in dataclasses.fields(meta)} >= _PLANNED_FROM


FAST: bool = _fast_available()
"""Whether the plans are in use (see the module's docstring)."""


# -- decoding plans ----------------------------------------------------------------------------


class _Field:
    """One field of a decoding plan."""

    __slots__ = ("enum", "group", "kind", "name", "repeated", "sub", "unwrap", "wire")

    def __init__(
        self,
        kind: int,
        name: str,
        repeated: bool,
        sub: type | None,
        unwrap: type | None,
        group: str | None,
        enum: type | None,
    ) -> None:
        self.kind = kind
        self.wire = wire_of(kind)
        self.name = name
        self.repeated = repeated
        self.sub = sub  # a message's class, or a map entry's
        self.unwrap = unwrap  # the wrapper message (Timestamp, ...) of a wrapped field
        self.group = group
        self.enum = enum


class _Plan:
    """How to decode one message class: its fields by field number."""

    __slots__ = ("by_number", "cls", "defaults", "groups")

    def __init__(
        self,
        cls: type,
        by_number: dict[int, _Field],
        defaults: dict[str, Any],
        groups: dict[str, tuple[str, ...]],
    ) -> None:
        self.cls = cls
        self.by_number = by_number
        self.defaults = defaults
        self.groups = groups


_plans: dict[type, _Plan] = {}


def _plan_for(cls: type) -> _Plan:
    plan = _plans.get(cls)
    if plan is None:
        plan = _plans[cls] = _make_plan(cls)
    return plan


def _make_plan(cls: type) -> _Plan:
    meta: Any = cls._betterproto  # type: ignore[attr-defined]  # built by betterproto2 on first use
    by_number: dict[int, _Field] = {}
    groups: dict[str, list[str]] = {}
    for name, field in meta.meta_by_field_name.items():
        kind = KINDS[field.proto_type]
        sub: type | None = None
        unwrap: type | None = None
        enum: type | None = None
        if kind == K_MESSAGE:
            if field.unwrap is not None:
                unwrap = field.unwrap()
                sub = unwrap
            else:
                sub = meta.cls_by_field[name]
        elif kind == K_MAP:
            sub = meta.cls_by_field[name]
        elif kind == K_ENUM:
            enum = meta.cls_by_field[name]
        if field.group is not None:
            groups.setdefault(field.group, []).append(name)
        by_number[field.number] = _Field(
            kind, name, bool(field.repeated), sub, unwrap, field.group, enum
        )
    return _Plan(
        cls,
        by_number,
        {name: gen for name, gen in meta.default_gen.items()},
        {group: tuple(names) for group, names in groups.items()},
    )


def _decode_fields(plan: _Plan, data: bytes, pos: int, end: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_number = plan.by_number
    while pos < end:
        b = data[pos]
        if b < 0x80:
            tag, pos = b, pos + 1
        else:
            tag, pos = read_varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        field = by_number.get(number)
        if field is None:
            if number == 0:
                raise DecodeError("field number 0")
            pos = skip_field(data, pos, end, wire)
            continue
        kind = field.kind
        if wire != field.wire:
            if wire == LEN and field.repeated and kind in PACKABLE:
                start, pos = read_len(data, pos, end)
                out.setdefault(field.name, []).extend(_packed(field, data, start, pos))
                continue
            raise DecodeError(
                f"field {field.name!r} of {plan.cls.__name__} has wire type {wire}, "
                f"expected {field.wire}"
            )
        value: Any
        if wire == VARINT:
            if pos < end and data[pos] < 0x80:
                raw, pos = data[pos], pos + 1
            else:
                raw, pos = read_varint(data, pos, end)
            value = scalar(kind, raw)
            if field.enum is not None:
                value = field.enum(value)
        elif wire == LEN:
            start, pos = read_len(data, pos, end)
            if kind == K_STRING:
                value = utf8(data, start, pos)
            elif kind == K_BYTES:
                value = data[start:pos]
            elif kind == K_MESSAGE:
                value = _decode_message(field, data, start, pos)
            else:
                key, item = _map_entry(field, data, start, pos)
                out.setdefault(field.name, {})[key] = item
                continue
        else:
            size = 4 if wire == FIXED32 else 8
            if pos + size > end:
                raise DecodeError("truncated fixed-size field")
            value = STRUCT[kind].unpack_from(data, pos)[0]
            pos += size
        if field.repeated:
            out.setdefault(field.name, []).append(value)
        else:
            if field.group is not None:
                for other in plan.groups[field.group]:
                    out.pop(other, None)
            out[field.name] = value
    if pos != end:
        raise DecodeError("field past the end of the message")
    return out


def _decode_message(field: _Field, data: bytes, start: int, stop: int) -> Any:
    sub = field.sub
    assert sub is not None
    if sub is TimestampPb:
        values = _decode_fields(_plan_for(sub), data, start, stop)
        return timestamp(values.get("seconds", 0), values.get("nanos", 0))
    message = sub(**_decode_fields(_plan_for(sub), data, start, stop))
    return message.to_wrapped() if field.unwrap is not None else message


def _map_entry(field: _Field, data: bytes, start: int, stop: int) -> tuple[Any, Any]:
    assert field.sub is not None
    entry = _plan_for(field.sub)
    item = _decode_fields(entry, data, start, stop)
    key = item["key"] if "key" in item else entry.defaults["key"]()
    value = item["value"] if "value" in item else entry.defaults["value"]()
    return key, value


def _packed(field: _Field, data: bytes, pos: int, end: int) -> list[Any]:
    values: list[Any] = []
    kind = field.kind
    if kind in VARINT_KINDS:
        while pos < end:
            raw, pos = read_varint(data, pos, end)
            value = scalar(kind, raw)
            values.append(field.enum(value) if field.enum is not None else value)
        return values
    fmt = STRUCT[kind]
    if (end - pos) % fmt.size:
        raise DecodeError(f"packed field {field.name!r} is not a whole number of values")
    values.extend(v[0] for v in fmt.iter_unpack(data[pos:end]))
    return values


def decode(message_type: type[_M], data: bytes) -> _M:
    """``data`` decoded as ``message_type``; :class:`DecodeError` if it is not valid."""
    if not FAST:
        try:
            return message_type.parse(data)
        except Exception as exc:
            raise DecodeError(f"cannot decode {message_type.__name__}: {exc}") from exc
    plan = _plan_for(message_type)
    try:
        return plan.cls(**_decode_fields(plan, data, 0, len(data)))  # type: ignore[no-any-return]
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError(f"{message_type.__name__} is nested too deeply") from None
    except (ValueError, OverflowError, TypeError, KeyError, IndexError) as exc:
        raise DecodeError(f"cannot decode {message_type.__name__}: {exc}") from exc
