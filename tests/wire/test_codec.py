"""The library's codec: byte for byte betterproto2's on valid input, strict on the rest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import betterproto2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxclient._wire import _codec
from sandboxclient._wire._codec import decode
from sandboxclient._wire._convert import sandbox_from_pb
from sandboxclient._wire._pb import (
    AnyPb,
    MountPb,
    SandboxPb,
    SandboxRuntimePb,
    TimestampPb,
    sandbox_pb,
)
from sandboxclient._wire._protowire import DecodeError
from sandboxclient._wire._wirecodec import LimitedCodec

strict = pytest.mark.skipif(
    not _codec.FAST, reason="the plain path is betterproto2's own parser, which is lax"
)

_text = st.text(max_size=12)
_u32 = st.integers(min_value=0, max_value=2**32 - 1)
_when = st.none() | st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
_any = st.builds(AnyPb, type_url=_text, value=st.binary(max_size=16))
_labels = st.dictionaries(_text, _text, max_size=4)
_record = st.builds(
    SandboxPb,
    sandbox_id=_text,
    runtime=st.none() | st.builds(SandboxRuntimePb, name=_text, options=st.none() | _any),
    spec=st.none() | _any,
    labels=_labels,
    created_at=_when,
    updated_at=_when,
    extensions=st.dictionaries(_text, _any, max_size=3),
    sandboxer=_text,
)


class Colour(betterproto2.Enum):
    RED = 0
    GREEN = 1


@dataclass(eq=False, repr=False)
class Inner(betterproto2.Message):
    name: str = betterproto2.field(1, betterproto2.TYPE_STRING)


@dataclass(eq=False, repr=False)
class AllKinds(betterproto2.Message):
    """One field of every kind the codec plans for, repeated and packed ones too."""

    i32: int = betterproto2.field(1, betterproto2.TYPE_INT32)
    i64: int = betterproto2.field(2, betterproto2.TYPE_INT64)
    u32: int = betterproto2.field(3, betterproto2.TYPE_UINT32)
    u64: int = betterproto2.field(4, betterproto2.TYPE_UINT64)
    s32: int = betterproto2.field(5, betterproto2.TYPE_SINT32)
    s64: int = betterproto2.field(6, betterproto2.TYPE_SINT64)
    flag: bool = betterproto2.field(7, betterproto2.TYPE_BOOL)
    colour: Colour = betterproto2.field(
        8, betterproto2.TYPE_ENUM, default_factory=lambda: Colour(0)
    )
    f32: int = betterproto2.field(9, betterproto2.TYPE_FIXED32)
    sf32: int = betterproto2.field(10, betterproto2.TYPE_SFIXED32)
    real32: float = betterproto2.field(11, betterproto2.TYPE_FLOAT)
    f64: int = betterproto2.field(12, betterproto2.TYPE_FIXED64)
    sf64: int = betterproto2.field(13, betterproto2.TYPE_SFIXED64)
    real64: float = betterproto2.field(14, betterproto2.TYPE_DOUBLE)
    text: str = betterproto2.field(15, betterproto2.TYPE_STRING)
    blob: bytes = betterproto2.field(16, betterproto2.TYPE_BYTES)
    inner: Inner | None = betterproto2.field(17, betterproto2.TYPE_MESSAGE, optional=True)
    many: list[Inner] = betterproto2.field(18, betterproto2.TYPE_MESSAGE, repeated=True)
    numbers: list[int] = betterproto2.field(19, betterproto2.TYPE_UINT64, repeated=True)
    doubles: list[float] = betterproto2.field(20, betterproto2.TYPE_DOUBLE, repeated=True)
    words: list[str] = betterproto2.field(21, betterproto2.TYPE_STRING, repeated=True)
    table: dict[str, int] = betterproto2.field(
        22,
        betterproto2.TYPE_MAP,
        map_meta=betterproto2.map_meta(betterproto2.TYPE_STRING, betterproto2.TYPE_INT64),
    )
    when: datetime | None = betterproto2.field(
        23, betterproto2.TYPE_MESSAGE, unwrap=lambda: TimestampPb, optional=True
    )
    choice_a: str | None = betterproto2.field(24, betterproto2.TYPE_STRING, group="choice")
    choice_b: int | None = betterproto2.field(25, betterproto2.TYPE_INT32, group="choice")


_i32 = st.integers(-(2**31), 2**31 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_u64 = st.integers(0, 2**64 - 1)
_f32 = st.floats(width=32, allow_nan=False)
_f64 = st.floats(allow_nan=False)
_all_kinds = st.builds(
    AllKinds,
    i32=_i32,
    i64=_i64,
    u32=_u32,
    u64=_u64,
    s32=_i32,
    s64=_i64,
    flag=st.booleans(),
    colour=st.sampled_from(list(Colour)),
    f32=_u32,
    sf32=_i32,
    real32=_f32,
    f64=_u64,
    sf64=_i64,
    real64=_f64,
    text=_text,
    blob=st.binary(max_size=8),
    inner=st.none() | st.builds(Inner, name=_text),
    many=st.lists(st.builds(Inner, name=_text), max_size=2),
    numbers=st.lists(_u64, max_size=3),
    doubles=st.lists(_f64, max_size=3),
    words=st.lists(_text, max_size=3),
    table=st.dictionaries(_text, _i64, max_size=3),
    when=_when,
    choice_a=st.none() | _text,
)
_messages: st.SearchStrategy[betterproto2.Message] = st.one_of(
    _all_kinds,
    st.builds(sandbox_pb.StoreGetResponse, sandbox=st.none() | _record),
    st.builds(sandbox_pb.StoreListResponse, list=st.lists(_record, max_size=3)),
    st.builds(sandbox_pb.ControllerWaitResponse, exit_status=_u32, exited_at=_when),
    st.builds(
        sandbox_pb.ControllerStatusResponse,
        sandbox_id=_text,
        pid=_u32,
        state=_text,
        info=_labels,
        created_at=_when,
        exited_at=_when,
        extra=st.none() | _any,
    ),
    st.builds(
        sandbox_pb.ControllerCreateRequest,
        sandbox_id=_text,
        rootfs=st.lists(
            st.builds(MountPb, type=_text, source=_text, options=st.lists(_text, max_size=2)),
            max_size=2,
        ),
        annotations=_labels,
        sandbox=st.none() | _record,
        sandboxer=_text,
    ),
    st.builds(
        sandbox_pb.ControllerStopRequest, sandbox_id=_text, timeout_secs=_u32, sandboxer=_text
    ),
)


def _well_typed(message: betterproto2.Message) -> None:
    """Every field holds a value of its declared kind: never an int in a str field."""
    meta: Any = type(message)._betterproto  # type: ignore[arg-type]
    kinds: dict[str, type | tuple[type, ...]] = {
        betterproto2.TYPE_STRING: str,
        betterproto2.TYPE_BYTES: bytes,
        betterproto2.TYPE_BOOL: bool,
        betterproto2.TYPE_FLOAT: float,
        betterproto2.TYPE_DOUBLE: float,
        betterproto2.TYPE_MAP: dict,
    }
    for name, field in meta.meta_by_field_name.items():
        value = getattr(message, name)
        if value is None:
            continue
        items = value if field.repeated else [value]
        for item in items:
            if field.proto_type == betterproto2.TYPE_MESSAGE:
                if field.unwrap is not None:
                    assert isinstance(item, datetime)
                    assert item.tzinfo is not None
                else:
                    assert isinstance(item, betterproto2.Message), name
                    _well_typed(item)
            else:
                want = kinds.get(field.proto_type, int)
                assert isinstance(item, want), (name, item)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_valid_input_decodes_as_betterproto2_decodes_it(message: betterproto2.Message) -> None:
    data = bytes(message)
    got = decode(type(message), data)
    want = type(message).FromString(data)
    assert got == want
    assert bytes(got) == data


@strict
@settings(max_examples=400, deadline=None)
@given(_messages, st.binary(max_size=24), st.integers(0, 40))
def test_odd_input_decodes_to_well_typed_values_or_fails_with_decode_error(
    message: betterproto2.Message, noise: bytes, cut: int
) -> None:
    whole = bytes(message)
    for data in (whole + noise, whole[: max(0, len(whole) - cut)], noise + whole, noise):
        try:
            got = decode(type(message), data)
        except DecodeError:
            continue
        _well_typed(got)


@strict
@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        # A varint where the id (a string) belongs.
        (b"\x0a\x02\x08\x05", "wire type"),
        # A string whose length runs past the end of the record.
        (b"\x0a\x07\x0a\x0asandb", "past the end"),
        (b"\x0a\x03\x0a\x01\xff", "UTF-8"),
        (b"\x0a\x02\x0a\xff", "truncated varint"),
        # A timestamp 2**62 seconds from the epoch.
        (b"\x0a\x0c\x2a\x0a\x08" + bytes([0x80] * 8) + b"\x40", "out of range"),
        (b"\x0a\x02\x0b\x00", "wire type"),  # a group
        (b"\x0a\x0b" + b"\x0a" + bytes([0xFF] * 10), "varint"),
    ],
)
def test_what_betterproto2_accepts_is_refused(data: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        decode(sandbox_pb.StoreGetResponse, data)


def test_unknown_fields_are_skipped_whatever_their_wire_type() -> None:
    known = bytes(sandbox_pb.ControllerWaitResponse(exit_status=3))
    unknown = b"\x78\x05" + b"\x81\x01" + bytes(8) + b"\x8a\x01\x02hi" + b"\x95\x01" + bytes(4)
    got = decode(sandbox_pb.ControllerWaitResponse, known + unknown)
    assert got.exit_status == 3


@strict
def test_a_oneof_keeps_the_last_member_set() -> None:
    data = bytes(AllKinds(choice_a="x")) + bytes(AllKinds(choice_b=7))
    got = decode(AllKinds, data)
    assert got.choice_b == 7
    assert got.choice_a is None


def test_timestamps_come_back_as_aware_datetimes() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC) + timedelta(0)
    got = decode(
        sandbox_pb.ControllerWaitResponse,
        bytes(sandbox_pb.ControllerWaitResponse(exit_status=1, exited_at=when)),
    )
    assert got.exited_at == when
    assert got.exited_at is not None
    assert got.exited_at.tzinfo is not None


@dataclass(eq=False, repr=False)
class Node(betterproto2.Message):
    child: Node | None = betterproto2.field(1, betterproto2.TYPE_MESSAGE, optional=True)


@strict
def test_deep_nesting_is_a_decode_error() -> None:
    data = b""
    for _ in range(5000):
        data = b"\x0a" + _length(len(data)) + data
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode(Node, data)


def _length(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(_record, max_size=3))
def test_records_come_back_from_the_wire_as_they_were_sent(many: list[SandboxPb]) -> None:
    listed = decode(sandbox_pb.StoreListResponse, bytes(sandbox_pb.StoreListResponse(list=many)))
    assert [sandbox_from_pb(pb) for pb in listed.list] == [sandbox_from_pb(pb) for pb in many]


def test_encoding_refuses_what_betterproto2_refuses() -> None:
    codec = LimitedCodec()
    for bad, error in (
        (sandbox_pb.ControllerStopRequest(timeout_secs=-(2**70)), ValueError),
        (sandbox_pb.StoreGetRequest(sandbox_id=5), AttributeError),  # type: ignore[arg-type]
    ):
        with pytest.raises(error):
            codec.encode(bad, type(bad))
    with pytest.raises(TypeError, match="Message must be of type"):
        codec.encode(sandbox_pb.StoreGetRequest(), sandbox_pb.StoreListRequest)
