"""Snapshots, leases and content as the client's image code uses them, on both backends:
the stand-in answers with containerd 2.1.9's codes and messages."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from sandboxclient import Client
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._images import image_store_any, import_stream_any, stream_init_any
from sandboxclient._wire._pb import (
    AnyPb,
    EmptyPb,
    content_pb,
    leases_pb,
    namespaces_pb,
    snapshots_pb,
    transfer_pb,
)
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import Backend

pytestmark = pytest.mark.anyio

IMAGE = "example.test/snap:1"
SNAPSHOTTER = "overlayfs"


@pytest.fixture
async def channel(backend: Backend) -> AsyncIterator[Channel]:
    channel = Channel(path=backend.address)
    try:
        yield channel
    finally:
        channel.close()


async def refused(call: object) -> tuple[Status, str]:
    with pytest.raises(GRPCError) as caught:
        await call  # type: ignore[misc]
    return caught.value.status, caught.value.message or ""


async def test_snapshots_and_leases_answer_as_the_daemon(
    backend: Backend, client: Client, channel: Channel
) -> None:
    meta = {NAMESPACE_HEADER: backend.namespace}
    snapshots = snapshots_pb.SnapshotsStub(channel, metadata=meta)
    leases = leases_pb.LeasesStub(channel, metadata=meta)
    content = content_pb.ContentStub(channel, metadata=meta)
    (image,) = await client.import_image(io.BytesIO(build_pause_archive(IMAGE)))
    (top,) = [k for k in backend.snapshots() if k.startswith("sha256:")]

    # A lease holds what is made under its header; it is listed with its labels.
    await leases.create(leases_pb.CreateRequest(id="held", labels={"a": "b"}))
    assert await refused(leases.create(leases_pb.CreateRequest(id="held"))) == (
        Status.ALREADY_EXISTS,
        'lease "held": already exists',
    )
    prepared = await snapshots.prepare(
        snapshots_pb.PrepareSnapshotRequest(snapshotter=SNAPSHOTTER, key="work", parent=top),
        metadata={**meta, "containerd-lease": "held"},
    )
    assert [m.type for m in prepared.mounts] != []
    resources = await leases.list_resources(leases_pb.ListResourcesRequest(id="held"))
    assert [(r.id, r.type) for r in resources.resources] == [("work", "snapshots/overlayfs")]
    listed = await leases.list(leases_pb.ListRequest(filters=["id==held"]))
    assert [(lease.id, dict(lease.labels)) for lease in listed.leases] == [("held", {"a": "b"})]

    stat = await snapshots.stat(
        snapshots_pb.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key="work")
    )
    assert stat.info is not None
    assert (stat.info.parent, stat.info.kind) == (top, snapshots_pb.Kind.ACTIVE)
    top_stat = await snapshots.stat(
        snapshots_pb.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key=top)
    )
    assert top_stat.info is not None
    assert top_stat.info.kind == snapshots_pb.Kind.COMMITTED

    assert await refused(
        snapshots.prepare(
            snapshots_pb.PrepareSnapshotRequest(snapshotter=SNAPSHOTTER, key="work", parent=top)
        )
    ) == (Status.ALREADY_EXISTS, 'snapshot "work": already exists')
    orphan = await refused(
        snapshots.prepare(
            snapshots_pb.PrepareSnapshotRequest(
                snapshotter=SNAPSHOTTER, key="orphan", parent="sha256:" + "0" * 64
            )
        )
    )
    assert orphan == (
        Status.NOT_FOUND,
        f"parent snapshot sha256:{'0' * 64} does not exist: not found",
    )
    assert await refused(
        snapshots.mounts(snapshots_pb.MountsRequest(snapshotter="nope", key="work"))
    ) == (Status.INVALID_ARGUMENT, "snapshotter not loaded: nope: invalid argument")
    missing = await refused(
        snapshots.mounts(snapshots_pb.MountsRequest(snapshotter=SNAPSHOTTER, key="ghost"))
    )
    assert missing == (Status.NOT_FOUND, "snapshot ghost does not exist: not found")
    with_child = await refused(
        snapshots.remove(snapshots_pb.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key=top))
    )
    assert with_child == (
        Status.FAILED_PRECONDITION,
        "cannot remove snapshot with child: failed precondition",
    )

    await snapshots.remove(snapshots_pb.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key="work"))
    await leases.delete(leases_pb.DeleteRequest(id="held"))
    assert await refused(leases.delete(leases_pb.DeleteRequest(id="held"))) == (
        Status.NOT_FOUND,
        'lease "held": not found',
    )
    assert backend.leases() == []

    # The image's manifest is content the namespace has; a digest it lacks is not found.
    info = await content.info(content_pb.InfoRequest(digest=image.target.digest))
    assert info.info is not None
    assert info.info.size == image.target.size
    absent = "sha256:" + "1" * 64
    assert await refused(content.info(content_pb.InfoRequest(digest=absent))) == (
        Status.NOT_FOUND,
        f"content digest {absent}: not found",
    )

    # A namespace holding an image's content and snapshots is not empty.
    namespaces = namespaces_pb.NamespacesStub(channel)
    delete = namespaces.delete(namespaces_pb.DeleteNamespaceRequest(name=backend.namespace))
    assert await refused(delete) == (
        Status.FAILED_PRECONDITION,
        f'namespace "{backend.namespace}" must be empty, but it still has images, blobs, '
        'snapshots on "overlayfs" snapshotter: failed precondition',
    )


async def test_what_nothing_references_is_collected(
    backend: Backend, client: Client, channel: Channel
) -> None:
    meta = {NAMESPACE_HEADER: backend.namespace}
    snapshots = snapshots_pb.SnapshotsStub(channel, metadata=meta)
    leases = leases_pb.LeasesStub(channel, metadata=meta)
    await client.import_image(io.BytesIO(build_pause_archive(IMAGE)))
    (top,) = backend.snapshots()
    await leases.create(leases_pb.CreateRequest(id="held"))
    await snapshots.prepare(
        snapshots_pb.PrepareSnapshotRequest(snapshotter=SNAPSHOTTER, key="work", parent=top),
        metadata={**meta, "containerd-lease": "held"},
    )

    # The image goes: what the lease holds stays, with its parent.
    await client.delete_image(IMAGE, sync=True)
    assert backend.snapshots() == sorted([top, "work"])
    # The lease goes too: nothing is left, and the namespace is empty.
    await leases.delete(leases_pb.DeleteRequest(id="held", sync=True))
    assert backend.snapshots() == []
    namespaces = namespaces_pb.NamespacesStub(channel)
    await namespaces.delete(namespaces_pb.DeleteNamespaceRequest(name=backend.namespace))


async def test_a_lease_id_is_any_text_and_an_empty_one_is_made_up(
    backend: Backend, channel: Channel
) -> None:
    leases = leases_pb.LeasesStub(channel, metadata={NAMESPACE_HEADER: backend.namespace})
    odd = "not an identifier/!" + "x" * 80  # containerd checks no lease id's form
    made = await leases.create(leases_pb.CreateRequest(id=odd))
    assert made.lease is not None
    assert made.lease.id == odd
    made_up = await leases.create(leases_pb.CreateRequest(id=""))
    assert made_up.lease is not None
    assert made_up.lease.id
    nanos, _, token = made_up.lease.id.partition("-")
    assert nanos.isdigit()
    assert len(token) == 4
    for lease_id in (odd, made_up.lease.id):
        await leases.delete(leases_pb.DeleteRequest(id=lease_id))
    assert backend.leases() == []


async def test_commit_and_content_refusals_are_worded_as_the_daemons(
    backend: Backend, channel: Channel
) -> None:
    meta = {NAMESPACE_HEADER: backend.namespace}
    snapshots = snapshots_pb.SnapshotsStub(channel, metadata=meta)
    content = content_pb.ContentStub(channel, metadata=meta)

    def commit(name: str, key: str) -> Awaitable[EmptyPb]:
        return snapshots.commit(
            snapshots_pb.CommitSnapshotRequest(snapshotter=SNAPSHOTTER, name=name, key=key)
        )

    await snapshots.prepare(snapshots_pb.PrepareSnapshotRequest(snapshotter=SNAPSHOTTER, key="a"))
    assert await refused(commit("", "a")) == (Status.UNKNOWN, "bucket name required")
    assert await refused(commit("c", "none")) == (
        Status.NOT_FOUND,
        "snapshot none does not exist: not found",
    )
    await commit("c", "a")
    await snapshots.prepare(snapshots_pb.PrepareSnapshotRequest(snapshotter=SNAPSHOTTER, key="b"))
    # The name is checked before the key, as containerd does.
    assert await refused(commit("c", "none")) == (
        Status.ALREADY_EXISTS,
        'snapshot "c": already exists',
    )
    status, message = await refused(commit("d", "c"))
    assert status is Status.FAILED_PRECONDITION
    internal = f"{backend.namespace}/2/c"  # prepare "a" took 1, its commit 2
    assert message == (
        f'failed to commit snapshot {internal}: snapshot "{internal}" is not active: '
        "failed precondition"
    )
    for key in ("b", "c"):
        await snapshots.remove(snapshots_pb.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key=key))
    for call in (
        content.info(content_pb.InfoRequest(digest="nope")),
        content.update(content_pb.UpdateRequest(info=content_pb.Info(digest="nope"))),
    ):
        assert await refused(call) == (Status.INVALID_ARGUMENT, '"nope" failed validation')


async def test_stream_refusals_are_worded_as_the_daemons(
    backend: Backend, channel: Channel
) -> None:
    meta = {NAMESPACE_HEADER: backend.namespace}
    route = "/containerd.services.streaming.v1.Streaming/Stream"
    async with channel.request(
        route, Cardinality.STREAM_STREAM, AnyPb, AnyPb, metadata=meta
    ) as first:
        await first.send_message(stream_init_any("same"))
        assert await first.recv_message() is not None  # registered

        async def register_again() -> None:
            async with channel.request(
                route, Cardinality.STREAM_STREAM, AnyPb, AnyPb, metadata=meta
            ) as second:
                await second.send_message(stream_init_any("same"))
                await second.recv_message()

        # containerd returns its bare error, which gRPC carries as UNKNOWN.
        assert await refused(register_again()) == (Status.UNKNOWN, "already exists")
        await first.cancel()
    transfer = transfer_pb.TransferStub(channel, metadata=meta)
    request = transfer_pb.TransferRequest(
        source=import_stream_any("nowhere"), destination=image_store_any(name="example.test/x:1")
    )
    assert await refused(transfer.transfer(request)) == (Status.NOT_FOUND, "not found")
