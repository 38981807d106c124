"""The daemon's error table, row by row, against the stand-in and the real daemon.

The client validates ids, namespaces and labels before sending, so these rows go through
raw stubs and the library's one error mapping: they pin the server side. Every row runs on
both backends (its error class and a fragment of its message), and once more on a fresh
stand-in answering as the real daemon's release and the real daemon side by side, whose
messages must then be the same, word for word.

The stand-in's known differences are listed, not skipped: the requests that crash
containerd 2.1.9 are never sent to it, and the stand-in refuses them instead (``CRASHES``);
see also the labels property in ``test_properties``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import (
    AlreadyExistsError,
    ContainerdError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
    UnknownError,
)
from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._wire._errdefs import map_error
from sandboxclient._wire._pb import AnyPb, FieldMaskPb, SandboxPb, SandboxRuntimePb
from sandboxclient._wire._pb import containers_pb as cpb
from sandboxclient._wire._pb import sandbox_pb as spb
from sandboxclient.testing import FakeContainerd
from tests.support.backends import PLUGIN_NAME, Backend, RealContainerd, new_namespace
from tests.support.constants import BAD_FILTERS, RUNTIME
from tests.support.helpers import Wire, wire_to

pytestmark = pytest.mark.anyio


Call = Callable[[Wire], Awaitable[object]]


@dataclass(frozen=True)
class Row:
    """One request the daemon refuses: the error class and a fragment of its message."""

    name: str
    call: Call
    error: type[ContainerdError]
    fragment: str
    runtime_says: bool = False
    """The rest of the message is the runtime's own: runc's through the real daemon's
    isolating sandboxer, the OS's from the stand-in's process sandboxer."""


# --- requests ---------------------------------------------------------------------------------


def _record(sandbox_id: str, **fields: Any) -> SandboxPb:
    now = datetime.now(UTC)
    fields.setdefault("runtime", SandboxRuntimePb(name=RUNTIME))
    return SandboxPb(sandbox_id=sandbox_id, created_at=now, updated_at=now, **fields)


def _container(container_id: str, **fields: Any) -> cpb.Container:
    fields.setdefault("runtime", cpb.ContainerRuntime(name=RUNTIME))
    fields.setdefault("spec", AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b"{}"))
    return cpb.Container(id=container_id, **fields)


def _spec(*args: str) -> AnyPb:
    return AnyPb(
        type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps({"process": {"args": args}}).encode()
    )


async def _create(w: Wire, sandbox_id: str, **fields: Any) -> object:
    return await w.store().create(spb.StoreCreateRequest(sandbox=_record(sandbox_id, **fields)))


def _after_a_record(then: Call) -> Call:
    """``then``, in a namespace that has a record (some messages differ before the first)."""

    async def call(w: Wire) -> object:
        await _create(w, "other1")
        return await then(w)

    return call


async def _store_get(w: Wire) -> object:
    return await w.store().get(spb.StoreGetRequest(sandbox_id="nope"))


async def _store_delete(w: Wire) -> object:
    return await w.store().delete(spb.StoreDeleteRequest(sandbox_id="nope"))


def _store_update(sandbox_id: str, *fields: str, **values: Any) -> Call:
    async def call(w: Wire) -> object:
        request = spb.StoreUpdateRequest(sandbox=_record(sandbox_id, **values), fields=list(fields))
        return await w.store().update(request)

    return call


def _created_then_updated(*fields: str, **values: Any) -> Call:
    async def call(w: Wire) -> object:
        await _create(w, "upd1")
        return await _store_update("upd1", *fields, **values)(w)

    return call


def _store_list(*filters: str) -> Call:
    async def call(w: Wire) -> object:
        return await w.store().list(spb.StoreListRequest(filters=list(filters)))

    return call


def _in_namespace(namespace: str | None, service: str) -> Call:
    async def call(w: Wire) -> object:
        if service == "store":
            return await w.elsewhere(namespace).store().list(spb.StoreListRequest())
        if service == "containers":
            return await w.elsewhere(namespace).containers().list(cpb.ListContainersRequest())
        request = spb.ControllerStatusRequest(sandbox_id="x", sandboxer=w.sandboxer)
        return await w.elsewhere(namespace).controller().status(request)

    return call


def _controller_start(sandboxer: str | None = None, sandbox_id: str = "ctl1") -> Call:
    async def call(w: Wire) -> object:
        name = w.sandboxer if sandboxer is None else sandboxer
        return await w.controller().start(
            spb.ControllerStartRequest(sandbox_id=sandbox_id, sandboxer=name)
        )

    return call


def _controller_create(sandbox_id: str = "ctl1", **fields: Any) -> Call:
    async def call(w: Wire) -> object:
        request = spb.ControllerCreateRequest(
            sandbox_id=sandbox_id, sandboxer=w.sandboxer, sandbox=_record(sandbox_id, **fields)
        )
        return await w.controller().create(request)

    return call


def _then(first: Call, second: Call) -> Call:
    async def call(w: Wire) -> object:
        await first(w)
        return await second(w)

    return call


async def _controller_wait(w: Wire) -> object:
    request = spb.ControllerWaitRequest(sandbox_id="nope", sandboxer=w.sandboxer)
    return await w.controller().wait(request)


async def _controller_metrics(w: Wire) -> object:
    request = spb.ControllerMetricsRequest(sandbox_id="ctl1", sandboxer=w.sandboxer)
    return await w.controller().metrics(request)


def _controller_update(
    sandboxer: str | None = None, sandbox: SandboxPb | None = None, *fields: str
) -> Call:
    async def call(w: Wire) -> object:
        request = spb.ControllerUpdateRequest(
            sandbox_id="ctl1",
            sandboxer=w.sandboxer if sandboxer is None else sandboxer,
            sandbox=sandbox,
            fields=list(fields),
        )
        return await w.controller().update(request)

    return call


async def _platform(w: Wire) -> object:
    request = spb.ControllerPlatformRequest(sandbox_id="x1", sandboxer=w.sandboxer)
    return await w.controller().platform(request)


def _container_create(container: cpb.Container) -> Call:
    async def call(w: Wire) -> object:
        return await w.containers().create(cpb.CreateContainerRequest(container=container))

    return call


def _container_update(container: cpb.Container, *paths: str) -> Call:
    async def call(w: Wire) -> object:
        mask = FieldMaskPb(paths=list(paths)) if paths else None
        request = cpb.UpdateContainerRequest(container=container, update_mask=mask)
        return await w.containers().update(request)

    return call


def _with_container(then: Call) -> Call:
    return _then(_container_create(_container("c1")), then)


async def _container_get(w: Wire) -> object:
    return await w.containers().get(cpb.GetContainerRequest(id="nope"))


async def _container_delete(w: Wire) -> object:
    return await w.containers().delete(cpb.DeleteContainerRequest(id="nope"))


async def _container_list_bad(w: Wire) -> object:
    return await w.containers().list(cpb.ListContainersRequest(filters=["labels.=="]))


# --- the table --------------------------------------------------------------------------------

_BAD_FILTERS = ("labels.==", *BAD_FILTERS)
_BAD_NAMESPACES = (("Bad_NS!", "must match"), ("a" * 77, "greater than maximum length"))

ROWS: list[Row] = [
    # The sandbox store.
    Row("get-first", _store_get, NotFoundError, "no sandbox buckets"),
    Row("delete-first", _store_delete, NotFoundError, "no sandbox buckets"),
    Row("update-first", _store_update("nope", "labels"), NotFoundError, "no sandbox buckets"),
    Row("get-missing", _after_a_record(_store_get), NotFoundError, 'bucket "nope" not found'),
    Row(
        "create-duplicate",
        _then(lambda w: _create(w, "dup1"), lambda w: _create(w, "dup1")),
        AlreadyExistsError,
        "already exists",
    ),
    Row("create-empty-id", lambda w: _create(w, ""), InvalidArgumentError, "must not be empty"),
    Row("create-bad-id", lambda w: _create(w, "bad id/!"), InvalidArgumentError, "must match"),
    Row(
        "create-long-id",
        lambda w: _create(w, "a" * 77),
        InvalidArgumentError,
        "greater than maximum length (76 characters)",
    ),
    Row(
        "create-empty-label-key",
        lambda w: _create(w, "lab1", labels={"": "v"}),
        UnknownError,
        "key required",
    ),
    Row(
        "create-empty-extension-key",
        lambda w: _create(w, "ext1", extensions={"": AnyPb(type_url="example.com/E")}),
        UnknownError,
        "write error: key required",
    ),
    Row(
        "delete-missing",
        _after_a_record(_store_delete),
        NotFoundError,
        'failed to delete sandbox "nope"',
    ),
    Row(
        "update-missing",
        _after_a_record(_store_update("nope", "labels")),
        NotFoundError,
        "not found",
    ),
    Row(
        "update-bogus-field",
        _created_then_updated("bogus"),
        InvalidArgumentError,
        '"bogus" field',
    ),
    Row(
        "update-sandboxer",
        _created_then_updated("sandboxer"),
        InvalidArgumentError,
        '"sandboxer" field',
    ),
    Row(
        "update-runtime-name",
        _created_then_updated(runtime=SandboxRuntimePb(name="other")),
        InvalidArgumentError,
        "sandbox.Runtime.Name field is immutable",
    ),
    Row(
        "update-empty-label-key",
        _created_then_updated("labels", labels={"": "v"}),
        UnknownError,
        "key required",
    ),
    *(
        Row(f"filter {text}", _store_list(text), InvalidArgumentError, "filters: parse error")
        for text in _BAD_FILTERS
    ),
    # The namespace, on every service.
    *(
        Row(
            f"no-namespace {service}",
            _in_namespace(None, service),
            FailedPreconditionError,
            "namespace is required",
        )
        for service in ("store", "containers", "controller")
    ),
    *(
        Row(
            f"namespace {namespace[:10]} {service}",
            _in_namespace(namespace, service),
            InvalidArgumentError,
            f"namespace validation: identifier {json.dumps(namespace)} {fragment}",
        )
        for namespace, fragment in _BAD_NAMESPACES
        for service in ("store", "containers", "controller")
    ),
    # The controller service, and behind it the Python sandboxer.
    Row("unknown-sandboxer", _controller_start("bogus"), NotFoundError, "by bogus"),
    Row("empty-sandboxer", _controller_start(""), InvalidArgumentError, "can not be empty"),
    Row("platform", _platform, UnimplementedError, ""),
    Row("update-no-sandbox", _controller_update(), UnknownError, "sandbox can not be nil"),
    Row(
        "update-no-sandboxer",
        _controller_update("", _record("ctl1")),
        InvalidArgumentError,
        "can not be empty",
    ),
    Row("start-missing", _controller_start(), NotFoundError, 'sandbox "ctl1" does not exist'),
    Row("wait-missing", _controller_wait, NotFoundError, "does not exist"),
    Row(
        "ctl-create-duplicate",
        _then(_controller_create(), _controller_create()),
        AlreadyExistsError,
        'sandbox "ctl1"',
    ),
    Row(
        "ctl-create-bad-id",
        _controller_create("bad id/!"),
        InvalidArgumentError,
        "invalid sandbox ID",
    ),
    Row(
        "ctl-create-bad-spec",
        _controller_create(spec=AnyPb(type_url="example.com/Spec", value=b"{}")),
        InvalidArgumentError,
        "is not supported",
    ),
    Row(
        "start-twice",
        _then(_then(_controller_create(), _controller_start()), _controller_start()),
        AlreadyExistsError,
        "was already started",
    ),
    Row(
        "start-no-program",
        _then(_controller_create(spec=_spec("no-such-program-here")), _controller_start()),
        FailedPreconditionError,
        'failed to start sandbox "ctl1": ',
        runtime_says=True,
    ),
    Row(
        "metrics-not-running",
        _then(_controller_create(), _controller_metrics),
        FailedPreconditionError,
        "is not running",
    ),
    Row(
        "ctl-update-bogus-field",
        _then(_controller_create(), _controller_update(None, _record("ctl1"), "bogus")),
        InvalidArgumentError,
        '"bogus" field on sandbox "ctl1"',
    ),
    # The containers store.
    Row("ctr-get-missing", _container_get, NotFoundError, 'container "nope" in namespace'),
    Row("ctr-delete-first", _container_delete, NotFoundError, "cannot delete container"),
    Row(
        "ctr-update-first",
        _container_update(_container("nope")),
        NotFoundError,
        "cannot update container",
    ),
    Row(
        "ctr-create-bad-id",
        _container_create(_container("bad id/!")),
        InvalidArgumentError,
        "container.ID: identifier",
    ),
    Row(
        "ctr-create-empty-id",
        _container_create(_container("")),
        InvalidArgumentError,
        "identifier must not be empty",
    ),
    Row(
        "ctr-create-extension-key",
        _container_create(_container("c", extensions={"": AnyPb()})),
        InvalidArgumentError,
        "Extension keys must not be zero-length",
    ),
    Row(
        "ctr-create-no-runtime",
        _container_create(_container("c", runtime=cpb.ContainerRuntime())),
        InvalidArgumentError,
        "container.Runtime.Name must be set",
    ),
    Row(
        "ctr-create-snapshot-key",
        _container_create(_container("c", snapshot_key="k")),
        InvalidArgumentError,
        "Snapshotter must be set",
    ),
    Row(
        "ctr-create-long-label",
        _container_create(_container("c", labels={"k": "v" * 5000})),
        InvalidArgumentError,
        "(5001 bytes) greater than maximum size (4096 bytes), key: k",
    ),
    Row(
        "ctr-create-empty-label-key",
        _container_create(_container("c", labels={"": "v"})),
        UnknownError,
        'failed to write container "c": failed to set label ""="v": key required',
    ),
    Row(
        "ctr-create-duplicate",
        _with_container(_container_create(_container("c1"))),
        AlreadyExistsError,
        'container "c1"',
    ),
    Row(
        "ctr-update-missing",
        _with_container(_container_update(_container("nope"))),
        NotFoundError,
        'container "nope"',
    ),
    Row(
        "ctr-update-no-id",
        _with_container(_container_update(_container(""))),
        InvalidArgumentError,
        "Container.ID required",
    ),
    Row(
        "ctr-update-runtime-path",
        _with_container(_container_update(_container("c1"), "runtime")),
        InvalidArgumentError,
        'cannot update "runtime" field on "c1"',
    ),
    Row(
        "ctr-update-runtime-name",
        _with_container(
            _container_update(_container("c1", runtime=cpb.ContainerRuntime(name="x")))
        ),
        InvalidArgumentError,
        "container.Runtime.Name field is immutable",
    ),
    Row(
        "ctr-update-snapshotter",
        _with_container(_container_update(_container("c1", snapshotter="overlayfs"))),
        InvalidArgumentError,
        "container.Snapshotter field is immutable",
    ),
    Row(
        "ctr-update-long-label",
        _with_container(_container_update(_container("c1", labels={"k": "v" * 5000}), "labels")),
        InvalidArgumentError,
        "update failed validation: containers.Labels",
    ),
    Row(
        "ctr-update-empty-label-key",
        _with_container(_container_update(_container("c1", labels={"": "v"}), "labels")),
        UnknownError,
        "key required",
    ),
    Row(
        "ctr-delete-missing",
        _with_container(_container_delete),
        NotFoundError,
        "container nope: not found",
    ),
    Row("ctr-bad-filter", _container_list_bad, InvalidArgumentError, "filters: parse error"),
]

CRASHES: list[tuple[str, Call]] = [
    ("store-create-no-sandbox", lambda w: w.store().create(spb.StoreCreateRequest())),
    (
        "store-create-no-runtime",
        lambda w: w.store().create(spb.StoreCreateRequest(sandbox=SandboxPb(sandbox_id="x"))),
    ),
    (
        "store-update-no-sandbox",
        _after_a_record(lambda w: w.store().update(spb.StoreUpdateRequest(fields=["labels"]))),
    ),
    (
        "ctl-create-no-runtime",
        lambda w: w.controller().create(
            spb.ControllerCreateRequest(
                sandbox_id="x", sandboxer=w.sandboxer, sandbox=SandboxPb(sandbox_id="x")
            )
        ),
    ),
    ("ctl-update-no-runtime", _controller_update(None, SandboxPb(sandbox_id="ctl1"))),
]
"""Requests containerd 2.1.9 dies on (SIGSEGV): the stand-in refuses and counts them."""


# --- running a row ----------------------------------------------------------------------------


async def refusal(row: Row, wire: Wire) -> ContainerdError:
    """The library error ``row`` ends in on ``wire``; the row fails if it is answered."""
    with pytest.raises(GRPCError) as info:
        await row.call(wire)
    error = map_error(info.value)
    assert error is not None
    return error


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
async def test_error_table_row(backend: Backend, row: Row) -> None:
    async with wire_to(backend.address, backend.namespace) as wire:
        error = await refusal(row, wire)
    assert type(error) is row.error, error
    assert row.fragment in str(error)


@pytest.mark.real
@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
async def test_the_stand_in_answers_word_for_word_as_the_daemon(
    real_containerd: RealContainerd, row: Row
) -> None:
    real_containerd.ensure_running()
    namespace = new_namespace()  # the same on both sides: some messages name it
    async with wire_to(real_containerd.address, namespace) as wire:
        daemon = await refusal(row, wire)
    async with (
        FakeContainerd(sandboxers=(PLUGIN_NAME,), version=real_containerd.daemon.version) as fake,
        wire_to(fake.address, namespace) as wire,
    ):
        stand_in = await refusal(row, wire)
    if row.runtime_says:
        for error in (stand_in, daemon):
            assert type(error) is row.error
            assert error.message.startswith(row.fragment)
            assert "no-such-program-here" in error.message
        return
    assert (type(stand_in), stand_in.message) == (type(daemon), daemon.message)


@pytest.mark.parametrize(("name", "call"), CRASHES, ids=[name for name, _ in CRASHES])
async def test_what_crashes_the_daemon_is_refused_and_counted(name: str, call: Call) -> None:
    async with (
        FakeContainerd(sandboxers=(PLUGIN_NAME,)) as fake,
        wire_to(fake.address, new_namespace()) as wire,
    ):
        with pytest.raises(GRPCError) as info:
            await call(wire)
        assert info.value.status is Status.INVALID_ARGUMENT
        assert (info.value.message or "").endswith(" must be set: invalid argument")
        assert fake.crash_requests == 1


async def test_unvalidated_sandboxer_and_unknown_namespace_are_fine(backend: Backend) -> None:
    async with wire_to(backend.address, backend.namespace) as wire:
        assert await _create(wire, "anysb1", sandboxer="never-heard-of-it") is not None
        empty = (
            await wire.elsewhere(backend.namespace + "-empty").store().list(spb.StoreListRequest())
        )
        assert empty.list == []
