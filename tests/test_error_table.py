"""The daemon's error table, row by row, against the stand-in and the real daemon.

The client validates ids, namespaces and labels before sending, so these rows go through
the raw stubs on the Client's own channel and through its one error mapping: they pin the
server side, where the stand-in must answer exactly as containerd 2.1 does. None of them is
a request that crashes the daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from sandboxclient import (
    AlreadyExistsError,
    Client,
    ContainerdError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from sandboxclient._pb import SandboxPb, SandboxRuntimePb, sandbox_pb

from ._helpers import Raw, raw_connection
from .conftest import Backend

pytestmark = pytest.mark.anyio

Row = Callable[[Raw], Awaitable[object]]


def _record(sandbox_id: str, sandboxer: str = "") -> SandboxPb:
    now = datetime.now(UTC)
    return SandboxPb(
        sandbox_id=sandbox_id,
        runtime=SandboxRuntimePb(name="io.containerd.runc.v2"),
        created_at=now,
        updated_at=now,
        sandboxer=sandboxer,
    )


async def _create(raw: Raw, sandbox_id: str, sandboxer: str = "") -> object:
    return await raw.call(
        raw.store.create, sandbox_pb.StoreCreateRequest(sandbox=_record(sandbox_id, sandboxer))
    )


async def _get_missing(raw: Raw) -> object:
    await _create(raw, "other1")  # the namespace exists, the id does not
    return await raw.call(raw.store.get, sandbox_pb.StoreGetRequest(sandbox_id="nope"))


async def _create_twice(raw: Raw) -> object:
    await _create(raw, "dup1")
    return await _create(raw, "dup1")


async def _delete_missing(raw: Raw) -> object:
    return await raw.call(raw.store.delete, sandbox_pb.StoreDeleteRequest(sandbox_id="nope"))


async def _update_missing(raw: Raw) -> object:
    return await raw.call(
        raw.store.update, sandbox_pb.StoreUpdateRequest(sandbox=_record("nope"), fields=["labels"])
    )


def _update_field(field: str) -> Row:
    async def row(raw: Raw) -> object:
        await _create(raw, "upd1")
        return await raw.call(
            raw.store.update, sandbox_pb.StoreUpdateRequest(sandbox=_record("upd1"), fields=[field])
        )

    return row


async def _bad_filter(raw: Raw) -> object:
    return await raw.call(raw.store.list, sandbox_pb.StoreListRequest(filters=["labels.=="]))


def _controller_start(sandboxer: str) -> Row:
    async def row(raw: Raw) -> object:
        return await raw.call(
            raw.controller.start,
            sandbox_pb.ControllerStartRequest(sandbox_id="x1", sandboxer=sandboxer),
        )

    return row


async def _platform(raw: Raw) -> object:
    return await raw.call(
        raw.controller.platform,
        sandbox_pb.ControllerPlatformRequest(sandbox_id="x1", sandboxer=raw.sandboxer),
    )


def _with_metadata(metadata: dict[str, str]) -> Row:
    async def row(raw: Raw) -> object:
        bare = sandbox_pb.StoreStub(raw.store.channel, metadata=metadata)
        return await raw.call(bare.list, sandbox_pb.StoreListRequest())

    return row


ROWS: list[tuple[str, Row, type[ContainerdError], str]] = [
    ("get-missing", _get_missing, NotFoundError, "not found"),
    ("create-duplicate", _create_twice, AlreadyExistsError, "already exists"),
    ("create-empty-id", lambda c: _create(c, ""), InvalidArgumentError, "must not be empty"),
    ("create-bad-id", lambda c: _create(c, "bad id/!"), InvalidArgumentError, "must match"),
    ("no-namespace", _with_metadata({}), FailedPreconditionError, "namespace is required"),
    (
        "bad-namespace",
        _with_metadata({"containerd-namespace": "Bad_NS!"}),
        InvalidArgumentError,
        "namespace validation",
    ),
    ("bad-filter", _bad_filter, InvalidArgumentError, "parse error"),
    ("delete-missing", _delete_missing, NotFoundError, "not found"),
    ("update-missing", _update_missing, NotFoundError, "not found"),
    ("update-bogus-field", _update_field("bogus"), InvalidArgumentError, '"bogus" field'),
    ("update-sandboxer", _update_field("sandboxer"), InvalidArgumentError, '"sandboxer" field'),
    ("unknown-sandboxer", _controller_start("bogus"), NotFoundError, "bogus"),
    ("empty-sandboxer", _controller_start(""), InvalidArgumentError, "can not be empty"),
    ("platform", _platform, UnimplementedError, ""),
]


@pytest.mark.parametrize(
    ("row", "expected", "fragment"),
    [pytest.param(r, e, f, id=name) for name, r, e, f in ROWS],
)
async def test_error_table_row(
    backend: Backend, row: Row, expected: type[ContainerdError], fragment: str
) -> None:
    async with raw_connection(backend.address, backend.namespace, backend.sandboxer) as raw:
        with pytest.raises(expected) as info:
            await row(raw)
    assert type(info.value) is expected
    assert fragment in str(info.value)


async def test_unvalidated_sandboxer_and_unknown_namespace_are_fine(
    backend: Backend, client: Client
) -> None:
    async with raw_connection(backend.address, backend.namespace, backend.sandboxer) as raw:
        assert await _create(raw, "anysb1", sandboxer="never-heard-of-it") is not None
    async with backend.client(namespace=backend.namespace + "-empty") as other:
        assert await other.list_sandboxes() == []
