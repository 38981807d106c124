"""Records built through their slots are the records their constructors build, as frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxclient import AnyValue, RuntimeInfo, SandboxInfo
from sandboxclient._facts._clock import to_utc
from sandboxclient._wire._convert import sandbox_from_pb
from sandboxclient._wire._pb import AnyPb, SandboxPb, SandboxRuntimePb
from sandboxclient._wire._records import (
    make_any_value,
    make_runtime_info,
    make_sandbox_info,
    slot_setters,
)

_text = st.text(max_size=12)
_zone = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min])
_when = st.none() | st.builds(
    lambda when, zone: when.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    _zone,
)
_any = st.builds(AnyPb, type_url=_text, value=st.binary(max_size=16))
_record = st.builds(
    SandboxPb,
    sandbox_id=_text,
    runtime=st.none() | st.builds(SandboxRuntimePb, name=_text, options=st.none() | _any),
    spec=st.none() | _any,
    labels=st.dictionaries(_text, _text, max_size=4),
    created_at=_when,
    updated_at=_when,
    extensions=st.dictionaries(_text, _any, max_size=3),
    sandboxer=_text,
)


def _any_value(pb: AnyPb | None) -> AnyValue | None:
    return None if pb is None else AnyValue(pb.type_url, bytes(pb.value))


def _by_constructors(pb: SandboxPb) -> SandboxInfo:
    runtime = pb.runtime
    return SandboxInfo(
        id=pb.sandbox_id,
        runtime=RuntimeInfo("")
        if runtime is None
        else RuntimeInfo(runtime.name, _any_value(runtime.options)),
        sandboxer=pb.sandboxer,
        created_at=to_utc(pb.created_at),
        updated_at=to_utc(pb.updated_at),
        labels=MappingProxyType(dict(pb.labels)),
        extensions=MappingProxyType(
            {k: _any_value(v) or AnyValue("", b"") for k, v in pb.extensions.items()}
        ),
        spec_any=_any_value(pb.spec),
    )


@settings(max_examples=300, deadline=None)
@given(_record)
def test_a_converted_record_is_the_one_the_constructors_build(pb: SandboxPb) -> None:
    got = sandbox_from_pb(pb)
    assert got == _by_constructors(pb)
    assert repr(got) == repr(_by_constructors(pb))
    for when in (got.created_at, got.updated_at):
        assert when is None or when.tzinfo is UTC
    assert isinstance(got.labels, MappingProxyType)
    assert isinstance(got.extensions, MappingProxyType)


def test_a_converted_record_is_as_frozen_as_a_constructed_one() -> None:
    got = sandbox_from_pb(
        SandboxPb(
            sandbox_id="sb",
            runtime=SandboxRuntimePb(name="io.containerd.runc.v2"),
            labels={"a": "b"},
            spec=AnyPb(type_url="t", value=b"v"),
        )
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.runtime.name = "other"  # type: ignore[misc]
    assert got.spec_any is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.spec_any.value = b"other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        got.labels["a"] = "c"  # type: ignore[index]
    assert got.labels == {"a": "b"}
    assert dataclasses.replace(got, id="x").id == "x"


def test_the_makers_build_what_the_constructors_build() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    spec = make_any_value("u", b"v")
    assert spec == AnyValue("u", b"v")
    assert make_runtime_info("r", spec) == RuntimeInfo("r", spec)
    made = make_sandbox_info(
        "id", RuntimeInfo("r"), "sb", when, None, MappingProxyType({}), {}, spec
    )
    assert made == SandboxInfo("id", RuntimeInfo("r"), "sb", when, None, {}, {}, spec)
    assert hash(spec) == hash(AnyValue("u", b"v"))


def test_records_with_the_same_runtime_without_options_share_it() -> None:
    def runtime_of(name: str) -> RuntimeInfo:
        return sandbox_from_pb(SandboxPb(runtime=SandboxRuntimePb(name=name))).runtime

    assert runtime_of("io.containerd.runc.v2") is runtime_of("io.containerd.runc.v2")
    assert runtime_of("other") == RuntimeInfo("other")
    assert runtime_of("io.containerd.runc.v2") == RuntimeInfo("io.containerd.runc.v2")
    with_options = SandboxRuntimePb(name="r", options=AnyPb(type_url="t", value=b"o"))
    assert sandbox_from_pb(SandboxPb(runtime=with_options)).runtime == RuntimeInfo(
        "r", AnyValue("t", b"o")
    )
    assert runtime_of("r") == RuntimeInfo("r")


@dataclass(frozen=True, slots=True)
class _Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("negative")


@dataclass(frozen=True, slots=True)
class _Computed:
    a: int
    b: int = dataclasses.field(init=False, default=0)


@dataclass(frozen=True)
class _Unslotted:
    a: int


def test_a_record_whose_init_does_more_than_store_is_refused() -> None:
    with pytest.raises(TypeError, match="does more than store"):
        slot_setters(_Checked, ("a",))
    with pytest.raises(TypeError, match="does more than store"):
        slot_setters(_Computed, ("a", "b"))
    with pytest.raises(TypeError, match="has the fields"):
        slot_setters(_Computed, ("a",))
    with pytest.raises(TypeError, match="not a slotted dataclass"):
        slot_setters(_Unslotted, ("a",))
    with pytest.raises(TypeError, match="has the fields"):
        slot_setters(SandboxInfo, ("id", "runtime"))
