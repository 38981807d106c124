"""Events against a real containerd.

A task's life in events is checked on both backends, in ``test_events``; here is what
only a real daemon shows: an OOM kill, a restart, images, snapshots, content, namespaces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client, EventStream, oci
from sandboxclient.events import (
    ContainerCreate,
    ContentCreate,
    Event,
    EventsLagged,
    EventsReconnected,
    ImageCreate,
    ImageDelete,
    ImageUpdate,
    NamespaceCreate,
    NamespaceDelete,
    NamespaceUpdate,
    SnapshotCommit,
    SnapshotPrepare,
    SnapshotRemove,
    TaskExit,
    TaskOOM,
)
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import RealContainerd, new_namespace
from tests.support.helpers import until

pytestmark = [pytest.mark.anyio, pytest.mark.real]


@pytest.fixture
async def client(real: RealContainerd) -> AsyncIterator[Client]:
    async with Client(real.daemon.address, namespace=new_namespace(), timeout=30) as c:
        yield c


async def _next_event(events: EventStream, topic: str) -> Event:
    """The next event on ``topic``, skipping others (and failing on a marker)."""
    async with asyncio.timeout(30):
        async for item in events:
            assert isinstance(item, Event), item
            if item.topic == topic:
                return item
    raise AssertionError(f"the stream ended before {topic}")


async def test_an_oom_kill_is_an_event(client: Client, rootfs: Path) -> None:
    spec = oci.generate_spec(
        oci.with_process_args("sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"),
        oci.with_memory_limit(32 * 1024 * 1024),
    )
    async with client.events('topic~="/tasks/(oom|exit)"') as events:
        container = await client.new_container("oom1", rootfs=rootfs, spec=spec)
        task = await container.new_task()
        await task.start()
        oom = await _next_event(events, "/tasks/oom")
        assert isinstance(oom.payload, TaskOOM)
        assert oom.payload.container_id == "oom1"
        exit_event = await _next_event(events, "/tasks/exit")
        assert isinstance(exit_event.payload, TaskExit)
        assert exit_event.payload.returncode == 137
    await container.delete(force=True)


async def test_a_daemon_restart_is_marked_and_events_flow_again(
    real: RealContainerd, client: Client, rootfs: Path
) -> None:
    async with client.events() as events:
        real.daemon.kill()
        real.daemon.restart()
        async with asyncio.timeout(30):
            marker = await anext(events)
        assert isinstance(marker, EventsReconnected)
        spec = oci.generate_spec(oci.with_process_args("true"))
        container = await client.new_container("rs1", rootfs=rootfs, spec=spec)
        got = await _next_event(events, "/containers/create")
        assert isinstance(got.payload, ContainerCreate)
        assert got.payload.id == "rs1"
    await container.delete()


async def test_a_reader_that_falls_behind_is_told_how_many_it_lost(
    client: Client, rootfs: Path
) -> None:
    spec = oci.generate_spec(oci.with_process_args("true"))
    async with client.events("topic~=/containers/", buffer=4) as events:
        for i in range(13):  # 26 events into a buffer of 4
            container = await client.new_container(f"lag{i}", rootfs=rootfs, spec=spec)
            await container.delete()
        await until(lambda: events.dropped >= 22, 30)  # a count with no signal of its own
        assert events.held == 4  # never more than the buffer
        async with asyncio.timeout(30):
            items = [await anext(events) for _ in range(5)]
        assert (events.held, events.dropped) == (0, 0)
    kept = [i for i in items if isinstance(i, Event)]
    assert [e.topic for e in kept] == ["/containers/create", "/containers/delete"] * 2
    assert [e.payload.id for e in kept] == ["lag0", "lag0", "lag1", "lag1"]  # type: ignore[union-attr]
    assert items[-1] == EventsLagged(22)


async def test_images_snapshots_content_and_namespaces_come_typed(
    real: RealContainerd, client: Client, tmp_path: Path
) -> None:
    image = "example.test/pause:events"
    archive = tmp_path / "image.tar"
    archive.write_bytes(build_pause_archive(image))
    other = new_namespace()
    ns = client.namespace

    def ctr(*args: str, namespace: str = ns) -> None:
        real.daemon.ctr(*args, namespace=namespace)

    async with client.events(all_namespaces=True) as events:
        await asyncio.to_thread(ctr, "images", "import", str(archive))
        await asyncio.to_thread(ctr, "images", "label", image, "k=v")
        container = await client.new_container("evimg", image=image)
        await container.delete()
        await asyncio.to_thread(ctr, "images", "rm", image)
        await asyncio.to_thread(ctr, "namespaces", "create", other)
        await asyncio.to_thread(ctr, "namespaces", "label", other, "k=v")
        await asyncio.to_thread(ctr, "namespaces", "rm", other)
        seen: list[Event] = []
        async with asyncio.timeout(30):
            async for item in events:
                assert isinstance(item, Event), item
                seen.append(item)
                if item.topic == "/namespaces/delete":
                    break
    mine = [e.payload for e in seen if e.namespace == ns]
    content = [p for p in mine if isinstance(p, ContentCreate)]
    # Index, manifest, config and the layer; containerd publishes /content/create from 2.1.
    assert len(content) == (4 if real.daemon.version.at_least(2, 1) else 0)
    assert all(p.digest.startswith("sha256:") and p.size > 0 for p in content)
    unpacked = [p for p in mine if isinstance(p, SnapshotCommit)]
    assert len(unpacked) == 1
    layer = unpacked[0].name
    assert layer.startswith("sha256:")
    assert unpacked[0].snapshotter == "overlayfs"
    # In containerd's order: unpack, the image, the container's snapshot and its removal.
    ordered = [
        p
        for p in mine
        if isinstance(p, ImageCreate | ImageUpdate | ImageDelete | SnapshotPrepare)
        or (isinstance(p, SnapshotRemove) and p.key == "evimg")
    ]
    assert ordered[1:] == [
        ImageCreate(name=image, labels={}),
        ImageUpdate(name=image, labels={"k": "v"}),
        SnapshotPrepare(key="evimg", parent=layer, snapshotter="overlayfs"),
        SnapshotRemove(key="evimg", snapshotter="overlayfs"),
        ImageDelete(name=image),
    ]
    assert isinstance(ordered[0], SnapshotPrepare)
    assert (ordered[0].key, ordered[0].snapshotter) == (unpacked[0].key, "overlayfs")
    theirs = [(e.namespace, e.payload) for e in seen if e.topic.startswith("/namespaces/")]
    assert theirs == [
        (other, NamespaceCreate(name=other, labels={})),
        (other, NamespaceUpdate(name=other, labels={"k": "v"})),
        (other, NamespaceDelete(name=other)),
    ]
