"""betterproto2 messages to protobuf bytes, with plans made once per message class.

betterproto2 encodes through a BytesIO and works out each field's default anew, under
``warnings.catch_warnings``, to leave it out. The plans encode field for field as it does
(same order, same defaults left out, packed repeated scalars, map entries with both key and
value, unknown fields last), so the bytes are the same; without the fast codec
(:data:`._codec.FAST`) this is ``bytes(message)``.
"""

from __future__ import annotations

from typing import Any

import betterproto2

from . import _codec
from ._protowire import (
    K_BYTES,
    K_MAP,
    K_SINT32,
    K_SINT64,
    K_STRING,
    KINDS,
    LEN,
    PACKABLE,
    STRUCT,
    VARINT_KINDS,
    varint_bytes,
    wire_of,
)

__all__ = ("FAST", "encode")

FAST: bool = _codec.FAST
"""Whether the plans are in use: with the fast codec's, on the same betterproto2 metadata."""


class _EncodeField:
    __slots__ = ("default", "key", "kind", "map_kinds", "name", "packed", "repeated", "unwrap")

    def __init__(self, name: str, key: bytes, kind: int, default: Any) -> None:
        self.name = name
        self.key = key
        self.kind = kind
        self.default = default
        self.repeated = False
        self.packed = False
        self.unwrap: type | None = None
        self.map_kinds: tuple[int, int, type | None] | None = None


_encode_plans: dict[type, list[_EncodeField]] = {}


def _encode_plan_for(cls: type) -> list[_EncodeField]:
    plan = _encode_plans.get(cls)
    if plan is None:
        plan = _encode_plans[cls] = _make_encode_plan(cls)
    return plan


def _make_encode_plan(cls: type) -> list[_EncodeField]:
    meta: Any = cls._betterproto  # type: ignore[attr-defined]
    fields: list[_EncodeField] = []
    for name, field in meta.meta_by_field_name.items():
        kind = KINDS[field.proto_type]
        packed = bool(field.repeated) and kind in PACKABLE
        wire = LEN if packed else wire_of(kind)
        entry = _EncodeField(
            name, varint_bytes(field.number << 3 | wire), kind, meta.default_gen[name]()
        )
        entry.repeated = bool(field.repeated)
        entry.packed = packed
        entry.unwrap = field.unwrap() if field.unwrap is not None else None
        if kind == K_MAP:
            key_meta, value_meta = field.map_meta
            entry.map_kinds = (
                KINDS[key_meta.proto_type],
                KINDS[value_meta.proto_type],
                value_meta.unwrap() if value_meta.unwrap is not None else None,
            )
        fields.append(entry)
    return fields


def _payload(kind: int, value: Any, unwrap: type | None) -> bytes:
    """A value's bytes after its key: a varint, fixed bytes, or a length and the payload."""
    if kind in VARINT_KINDS:
        if kind in (K_SINT32, K_SINT64):
            value = value << 1 if value >= 0 else (value << 1) ^ ~0
        return varint_bytes(int(value))
    if kind in STRUCT:
        return STRUCT[kind].pack(value)
    data: bytes
    if kind == K_STRING:
        data = value.encode()
    elif kind == K_BYTES:
        data = bytes(value)
    else:
        data = encode(unwrap.from_wrapped(value) if unwrap is not None else value)  # type: ignore[attr-defined]
    n = len(data)
    return (bytes((n,)) if n < 0x80 else varint_bytes(n)) + data


def _key(number: int, kind: int) -> bytes:
    return bytes(((number << 3) | wire_of(kind),))


def encode(message: betterproto2.Message) -> bytes:
    """``bytes(message)``: the same bytes, sooner."""
    if not FAST:
        return bytes(message)
    out: list[bytes] = []
    for field in _encode_plan_for(type(message)):
        value = getattr(message, field.name)
        if value is None or value == field.default:
            continue
        kind = field.kind
        if field.map_kinds is not None:
            key_kind, value_kind, value_unwrap = field.map_kinds
            for k, v in value.items():
                entry = (
                    _key(1, key_kind)
                    + _payload(key_kind, k, None)
                    + _key(2, value_kind)
                    + _payload(value_kind, v, value_unwrap)
                )
                out.append(field.key)
                out.append(_payload(K_BYTES, entry, None))
        elif field.packed:
            body = b"".join(_payload(kind, item, None) for item in value)
            out.append(field.key)
            out.append(_payload(K_BYTES, body, None))
        elif field.repeated:
            for item in value:
                out.append(field.key)
                out.append(_payload(kind, item, field.unwrap))
        else:
            out.append(field.key)
            out.append(_payload(kind, value, field.unwrap))
    out.append(message._unknown_fields)
    return b"".join(out)
