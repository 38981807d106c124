"""The one field-path update the stand-in's stores and the sandboxer share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient._serve._fields import SANDBOX_FIELDS, copy_message, required, required_sandbox
from sandboxclient._wire._pb import AnyPb, SandboxPb, SandboxRuntimePb

EXT = AnyPb(type_url="example.com/E", value=b"e")
STORE = dataclasses.replace(SANDBOX_FIELDS, absent={"labels": str, "extensions": AnyPb})
SANDBOXER = dataclasses.replace(SANDBOX_FIELDS, drop_empty=True)


def _current() -> SandboxPb:
    return SandboxPb(
        sandbox_id="s",
        labels={"a": "1", "b": "2"},
        extensions={"x": EXT},
        runtime=SandboxRuntimePb(name="old"),
    )


def test_entries_and_whole_fields() -> None:
    current = _current()
    new = SandboxPb(labels={"c": "3", "e": ""}, spec=EXT, runtime=SandboxRuntimePb(name="new"))
    got = SANDBOXER.apply(current, new, ["labels.c", "labels.a", "labels.e", "spec"], "sandbox")
    assert got.labels == {"b": "2", "c": "3"}
    assert got.spec == EXT
    assert got.runtime is not None
    assert got.runtime.name == "old"
    # The current record is never changed, and the answer shares nothing with it.
    assert current.labels == {"a": "1", "b": "2"}
    got.extensions["y"] = EXT
    assert set(current.extensions) == {"x"}


def test_no_paths_means_the_default_ones() -> None:
    new = SandboxPb(labels={"z": "26", "empty": ""}, runtime=SandboxRuntimePb(name="new"))
    got = SANDBOXER.apply(_current(), new, [], "sandbox")
    assert got.labels == {"z": "26"}
    assert got.extensions == {}
    assert got.runtime is not None
    assert got.runtime.name == "new"
    # The stores keep an empty label until their write drops it.
    assert STORE.apply(_current(), new, [], "sandbox").labels == {"z": "26", "empty": ""}


def test_a_missing_entry_is_removed_or_set_to_the_zero_value() -> None:
    new = SandboxPb()
    assert SANDBOXER.apply(_current(), new, ["extensions.x"], "s").extensions == {}
    assert STORE.apply(_current(), new, ["extensions.x"], "s").extensions == {"x": AnyPb()}
    assert STORE.apply(_current(), new, ["labels.a"], "s").labels == {"a": "", "b": "2"}
    # A key may hold dots: only the first one separates it from the map's name.
    dotted = SandboxPb(labels={"k.with.dots": "v"})
    assert SANDBOXER.apply(_current(), dotted, ["labels.k.with.dots"], "s").labels == {
        "a": "1",
        "b": "2",
        "k.with.dots": "v",
    }


def _refusal(call: Callable[[], object]) -> tuple[Status, str | None]:
    with pytest.raises(GRPCError) as info:
        call()
    return info.value.status, info.value.message


@pytest.mark.parametrize("path", ["bogus", "sandboxer", "spec.x", "created_at"])
def test_unknown_paths_are_refused_naming_the_subject(path: str) -> None:
    current = _current()
    refusal = _refusal(
        lambda: STORE.apply(current, SandboxPb(labels={"n": "1"}), ["labels", path], 'sandbox "s"')
    )
    assert refusal == (
        Status.INVALID_ARGUMENT,
        f'cannot update "{path}" field on sandbox "s": invalid argument',
    )
    assert current.labels == {"a": "1", "b": "2"}


def test_required_fields() -> None:
    invalid = Status.INVALID_ARGUMENT
    assert _refusal(lambda: required_sandbox(None)) == (
        invalid,
        "sandbox must be set: invalid argument",
    )
    assert _refusal(lambda: required_sandbox(SandboxPb())) == (
        invalid,
        "sandbox.Runtime must be set: invalid argument",
    )
    empty_runtime = SandboxPb(runtime=SandboxRuntimePb())
    assert required_sandbox(empty_runtime) is empty_runtime
    assert _refusal(lambda: required(None, "container")) == (
        invalid,
        "container must be set: invalid argument",
    )
    assert required(0, "zero") == 0


def test_copy_message_is_deep() -> None:
    original = _current()
    copied = copy_message(original)
    assert copied == original
    assert copied.runtime is not original.runtime
