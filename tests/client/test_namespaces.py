"""The Namespaces service's List and Delete, on both backends: the stand-in answers as
containerd's metadata store does (a namespace holding images or containers is not
deleted; sandbox records do not hold one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel

from sandboxclient import Client
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import namespaces_pb
from tests.support.backends import Backend, new_namespace
from tests.support.containers import container
from tests.support.images import seed

pytestmark = pytest.mark.anyio


@pytest.fixture
async def namespaces(backend: Backend) -> AsyncIterator[namespaces_pb.NamespacesStub]:
    async with Channel(path=backend.address) as channel:
        yield namespaces_pb.NamespacesStub(
            channel, metadata={NAMESPACE_HEADER: backend.namespace}, timeout=20
        )


async def listed(stub: namespaces_pb.NamespacesStub) -> dict[str, dict[str, str]]:
    answer = await stub.list(namespaces_pb.ListNamespacesRequest())
    return {n.name: dict(n.labels) for n in answer.namespaces}


async def delete(stub: namespaces_pb.NamespacesStub, name: str) -> None:
    await stub.delete(namespaces_pb.DeleteNamespaceRequest(name=name))


async def test_namespaces_are_listed_and_only_empty_ones_deleted(
    backend: Backend,
    client: Client,
    namespaces: namespaces_pb.NamespacesStub,
    rootfs: Path,
) -> None:
    ns = backend.namespace
    assert ns not in await listed(namespaces)

    # Written in, it exists; one holding an image or a container is refused, naming them.
    await seed(backend, "example.test/ns:1")
    async with container(client, rootfs, "holder", "true"):
        assert ns in await listed(namespaces)
        with pytest.raises(GRPCError) as refused:
            await delete(namespaces, ns)
        assert refused.value.status is Status.FAILED_PRECONDITION
        assert refused.value.message == (
            f'namespace "{ns}" must be empty, but it still has images, containers: '
            "failed precondition"
        )
    await client.delete_image("example.test/ns:1")
    await delete(namespaces, ns)
    assert ns not in await listed(namespaces)

    # Deleted twice, or never made: not found.
    for name in (ns, new_namespace()):
        with pytest.raises(GRPCError) as missing:
            await delete(namespaces, name)
        assert missing.value.status is Status.NOT_FOUND
        assert missing.value.message == f'namespace "{name}": not found'

    # Labels are listed with their namespace; a labelled, empty namespace goes.
    labelled = new_namespace()
    await namespaces.create(
        namespaces_pb.CreateNamespaceRequest(
            namespace=namespaces_pb.Namespace(name=labelled, labels={"team": "a"})
        )
    )
    assert (await listed(namespaces))[labelled] == {"team": "a"}
    await delete(namespaces, labelled)
    assert labelled not in await listed(namespaces)
