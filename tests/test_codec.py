"""The library's decoding of answers gives exactly what betterproto2's own parser gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import betterproto2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxclient._convert import sandbox_from_pb
from sandboxclient._pb import (
    AnyPb,
    MountPb,
    SandboxPb,
    SandboxRuntimePb,
    containers_pb,
    sandbox_pb,
)
from sandboxclient._wire import _decode, _encode, _plan_for, _records

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
_answers: st.SearchStrategy[betterproto2.Message] = st.one_of(
    st.builds(sandbox_pb.StoreGetResponse, sandbox=st.none() | _record),
    st.builds(sandbox_pb.StoreListResponse, list=st.lists(_record, max_size=3)),
    st.builds(sandbox_pb.StoreCreateResponse, sandbox=st.none() | _record),
    st.builds(sandbox_pb.ControllerWaitResponse, exit_status=_u32, exited_at=_when),
    st.builds(
        sandbox_pb.ControllerStartResponse,
        sandbox_id=_text,
        pid=_u32,
        created_at=_when,
        labels=_labels,
        address=_text,
        version=_u32,
    ),
    st.builds(
        sandbox_pb.ControllerStatusResponse,
        sandbox_id=_text,
        pid=_u32,
        state=_text,
        info=_labels,
        created_at=_when,
        exited_at=_when,
        extra=st.none() | _any,
        address=_text,
        version=_u32,
    ),
)


def _same(got: betterproto2.Message, want: betterproto2.Message, *, reencode: bool = True) -> None:
    assert type(got) is type(want)
    assert got == want
    assert got._unknown_fields == want._unknown_fields
    if reencode:
        assert bytes(got) == bytes(want)


@settings(max_examples=300, deadline=None)
@given(_answers)
def test_decoding_matches_betterproto2(message: betterproto2.Message) -> None:
    data = bytes(message)
    _same(_decode(type(message), data), type(message).FromString(data))


@settings(max_examples=200, deadline=None)
@given(_answers, st.binary(max_size=24))
def test_odd_input_decodes_or_fails_as_betterproto2_does(
    message: betterproto2.Message, tail: bytes
) -> None:
    # Unknown fields, truncation and garbage go to betterproto2's own parser.
    data = bytes(message) + tail
    cls = type(message)
    try:
        want = cls.FromString(data)
    except Exception as exc:
        with pytest.raises(type(exc)):
            _decode(cls, data)
    else:
        # betterproto2 accepts some garbage into values it cannot encode again.
        _same(_decode(cls, data), want, reencode=False)


def test_unknown_fields_are_kept() -> None:
    wire = bytes(sandbox_pb.ControllerWaitResponse(exit_status=3)) + b"\x78\x05"  # field 15
    got = _decode(sandbox_pb.ControllerWaitResponse, wire)
    assert got.exit_status == 3
    assert got._unknown_fields == b"\x78\x05"


def test_the_hot_answers_have_plans() -> None:
    for cls in (
        sandbox_pb.StoreGetResponse,
        sandbox_pb.StoreListResponse,
        sandbox_pb.ControllerWaitResponse,
        sandbox_pb.ControllerStatusResponse,
        sandbox_pb.ControllerStartResponse,
        containers_pb.CreateContainerResponse,
    ):
        assert _plan_for(cls) is not None, cls


def test_timestamps_come_back_as_aware_datetimes() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC) + timedelta(0)
    got = _decode(
        sandbox_pb.ControllerWaitResponse,
        bytes(sandbox_pb.ControllerWaitResponse(exit_status=1, exited_at=when)),
    )
    assert got.exited_at == when
    assert got.exited_at is not None
    assert got.exited_at.tzinfo is not None


def _general_get(data: bytes) -> list[object]:
    got = sandbox_pb.StoreGetResponse.FromString(data).sandbox
    return [] if got is None else [sandbox_from_pb(got)]


def _general_list(data: bytes) -> list[object]:
    return [sandbox_from_pb(pb) for pb in sandbox_pb.StoreListResponse.FromString(data).list]


@settings(max_examples=300, deadline=None)
@given(st.none() | _record, st.lists(_record, max_size=3))
def test_records_decode_as_sandbox_from_pb_converts_them(
    one: SandboxPb | None, many: list[SandboxPb]
) -> None:
    get = bytes(sandbox_pb.StoreGetResponse(sandbox=one))
    assert _records(get, True) == _general_get(get)
    listed = bytes(sandbox_pb.StoreListResponse(list=many))
    assert _records(listed, False) == _general_list(listed)


@settings(max_examples=300, deadline=None)
@given(st.lists(_record, min_size=1, max_size=2), st.binary(max_size=24), st.integers(0, 40))
def test_odd_records_decode_or_fail_as_the_general_way_does(
    many: list[SandboxPb], noise: bytes, cut: int
) -> None:
    whole = bytes(sandbox_pb.StoreListResponse(list=many))
    for data in (whole + noise, whole[: max(0, len(whole) - cut)], noise + whole):
        for single, general in ((True, _general_get), (False, _general_list)):
            try:
                want = general(data)
            except Exception as exc:
                with pytest.raises(type(exc)):
                    _records(data, single)
            else:
                assert _records(data, single) == want


_mount = st.builds(
    MountPb, type=_text, source=_text, target=_text, options=st.lists(_text, max_size=3)
)
_requests: st.SearchStrategy[betterproto2.Message] = st.one_of(
    st.builds(sandbox_pb.StoreCreateRequest, sandbox=st.none() | _record),
    st.builds(
        sandbox_pb.StoreUpdateRequest,
        sandbox=st.none() | _record,
        fields=st.lists(_text, max_size=3),
    ),
    st.builds(sandbox_pb.StoreGetRequest, sandbox_id=_text),
    st.builds(sandbox_pb.StoreListRequest, filters=st.lists(_text, max_size=3)),
    st.builds(
        sandbox_pb.ControllerCreateRequest,
        sandbox_id=_text,
        rootfs=st.lists(_mount, max_size=2),
        options=st.none() | _any,
        netns_path=_text,
        annotations=_labels,
        sandbox=st.none() | _record,
        sandboxer=_text,
    ),
    st.builds(
        sandbox_pb.ControllerStopRequest, sandbox_id=_text, timeout_secs=_u32, sandboxer=_text
    ),
    st.builds(
        sandbox_pb.ControllerStatusRequest,
        sandbox_id=_text,
        verbose=st.booleans(),
        sandboxer=_text,
    ),
    st.builds(sandbox_pb.ControllerWaitRequest, sandbox_id=_text, sandboxer=_text),
    _answers,
)


@settings(max_examples=400, deadline=None)
@given(_requests)
def test_encoding_matches_betterproto2(message: betterproto2.Message) -> None:
    assert _encode(message) == bytes(message)


def test_encoding_keeps_unknown_fields_and_refuses_what_betterproto2_refuses() -> None:
    got = sandbox_pb.ControllerWaitResponse.FromString(b"\x08\x03\x78\x05")
    assert _encode(got) == bytes(got) == b"\x08\x03\x78\x05"
    for bad, error in (
        (sandbox_pb.ControllerStopRequest(timeout_secs=-(2**70)), ValueError),
        (sandbox_pb.StoreGetRequest(sandbox_id=5), AttributeError),  # type: ignore[arg-type]
    ):
        with pytest.raises(error):
            bytes(bad)
        with pytest.raises(error):
            _encode(bad)
