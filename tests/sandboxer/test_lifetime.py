"""Sandboxes that end on their own: ``lifetime=`` and ``idle_timeout=`` under a real containerd.

The isolating sandboxer enforces them, not the client: the client that made the sandbox is
closed before its deadline, and the sandboxer may be killed and started again in between.
Past it, nothing of the sandbox is left (``ctr`` agrees), its exit status says why, and
containerd publishes ``/sandboxes/exit`` with it. The bound within which a sandbox is gone
after its deadline is :data:`GONE_WITHIN` (``docs/sandboxer.md``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import (
    IDLE_EXIT_STATUS,
    LIFETIME_EXIT_STATUS,
    EventStream,
    PortMapping,
)
from sandboxclient._facts._clock import utcnow
from sandboxclient.events import ContainerDelete, Event
from sandboxclient.sandboxer._pausepoints import ENDING_KILLED, PAUSE_ENV
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import RealContainerd, new_namespace
from tests.support.ctr import answering, client_for, ctr_ids, nothing_left
from tests.support.fifos import read_fifo_line
from tests.support.lifetimes import GONE_WITHIN, exit_of, record_gone
from tests.support.network import counts, require_cni, settled

pytestmark = [pytest.mark.anyio, pytest.mark.real]


IMAGE = "example.test/busybox-lifetime:1"


async def container_deleted(events: EventStream, container_id: str) -> None:
    """Return once ``/containers/delete`` of ``container_id`` comes."""
    async for item in events:
        payload = item.payload if isinstance(item, Event) else None
        if isinstance(payload, ContainerDelete) and payload.id == container_id:
            return
    raise AssertionError("the event stream ended")


@pytest.fixture
async def namespace(real: RealContainerd) -> AsyncIterator[str]:
    """A namespace of its own; checked empty (ctr) after the test."""
    name = new_namespace()
    yield name
    nothing_left(real, name)


async def test_a_sandbox_past_its_lifetime_is_gone_with_its_client_closed(
    real: RealContainerd, namespace: str, tmp_path: Path
) -> None:
    archive = tmp_path / "image.tar"
    archive.write_bytes(build_pause_archive(IMAGE))
    real.daemon.ctr("images", "import", str(archive), namespace=namespace)
    try:
        async with (
            client_for(real, namespace) as watcher,
            watcher.events('topic=="/sandboxes/exit"', 'topic=="/containers/delete"') as events,
        ):
            await events.subscribed()
            async with client_for(real, namespace) as client:
                sb = await client.new_sandbox("lt1", lifetime=2)
                await sb.start()
                member = await sb.new_container("lt1-m", image=IMAGE)
                await (await member.new_task()).start()
                deadline = (await watcher.get_sandbox("lt1")).deadline
                assert deadline is not None  # another client sees it
                status = await sb.status()
                assert status.deadline == deadline
                assert status.deadline.tzinfo is not None
                assert status.idle_deadline is None
                assert "lt1-m" in ctr_ids(real, namespace, "snapshots")
            # closed: the sandboxer alone ends it
            ended, heard = await exit_of(events, "lt1")
            assert ended.returncode == LIFETIME_EXIT_STATUS
            assert heard >= deadline
            await container_deleted(events, "lt1")
            await record_gone(watcher, "lt1")
            assert (utcnow() - deadline).total_seconds() < GONE_WITHIN
            assert await watcher.list_sandboxes() == []
            assert ctr_ids(real, namespace, "containers") == []
            assert "lt1-m" not in ctr_ids(real, namespace, "snapshots")  # the member's
    finally:
        real.daemon.ctr("images", "rm", "--sync", IMAGE, namespace=namespace)


async def test_deadlines_hold_across_a_sandboxer_restart(
    real: RealContainerd, namespace: str
) -> None:
    async with (
        client_for(real, namespace) as client,
        client.events('topic=="/sandboxes/exit"') as events,
    ):
        await events.subscribed()
        # lt2 passes its deadline while the sandboxer is down; lt3 is re-armed after
        early = await client.new_sandbox("lt2", lifetime=1)
        late = await client.new_sandbox("lt3", lifetime=6)
        await early.start()
        await late.start()
        early_deadline = early.metadata.deadline
        late_deadline = late.metadata.deadline
        assert early_deadline is not None
        assert late_deadline is not None
        real.sandboxer.kill()
        # the point of this test is time passing while no sandboxer runs
        await asyncio.sleep((early_deadline - utcnow()).total_seconds() + 0.2)
        assert (await early.task()).pid  # still there: nothing enforced it meanwhile
        real.sandboxer.start()
        # Its ending goes through containerd, which reconnects to the restarted sandboxer
        # with a backoff of its own: the bound runs from then.
        assert (await answering(late)).deadline == late_deadline  # re-armed from its state
        reachable = utcnow()
        ended, heard = await exit_of(events, "lt2")  # at once on start
        assert ended.returncode == LIFETIME_EXIT_STATUS
        assert (heard - reachable).total_seconds() < GONE_WITHIN
        await record_gone(client, "lt2")
        ended, heard = await exit_of(events, "lt3")
        assert ended.returncode == LIFETIME_EXIT_STATUS
        assert late_deadline <= heard
        await record_gone(client, "lt3")
        assert (utcnow() - late_deadline).total_seconds() < GONE_WITHIN


async def test_an_ending_cut_by_a_sandboxer_crash_is_finished_and_its_exit_says_why(
    real: RealContainerd, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandboxer is stopped where it has sent the ending's SIGKILL but not yet recorded
    the exit (a pause point it is told of), and killed there: the one started again finds
    the task killed, records 124 all the same (the cause was written down before the kill)
    and finishes the ending."""
    fifo = tmp_path / "paused"
    os.mkfifo(fifo)
    async with (
        client_for(real, namespace) as client,
        client.events('topic=="/sandboxes/exit"') as events,
    ):
        await events.subscribed()
        sb = await client.new_sandbox("lt8", lifetime=2)
        await sb.start()
        real.sandboxer.kill()
        monkeypatch.setenv(PAUSE_ENV, f"{ENDING_KILLED}={fifo}")
        try:
            real.sandboxer.start()  # it re-arms lt8 from its state, and stops at its ending
        finally:
            monkeypatch.delenv(PAUSE_ENV)
        assert await read_fifo_line(str(fifo)) == f"{ENDING_KILLED}\n".encode()
        real.sandboxer.kill()  # stopped there: killed as a crash would
        real.sandboxer.start()
        ended, _ = await exit_of(events, "lt8")
        assert ended.returncode == LIFETIME_EXIT_STATUS
        await record_gone(client, "lt8", timeout=30)  # containerd reconnects with a backoff


async def test_an_exec_across_a_sandboxer_restart_is_not_cut_by_the_idle_timeout(
    real: RealContainerd, namespace: str
) -> None:
    """The restarted sandboxer never heard the exec start: before ending the sandbox for
    idleness it asks containerd whether an exec runs in it."""
    async with (
        client_for(real, namespace) as client,
        client.events('topic=="/sandboxes/exit"') as events,
    ):
        await events.subscribed()
        sb = await client.new_sandbox("lt6", idle_timeout=1.5)
        await sb.start()
        proc = await sb.spawn("sleep", "4")
        exited = await proc.wait()
        real.sandboxer.kill()
        real.sandboxer.start()
        assert (await answering(sb)).ready  # its idle clock starts again now
        status = await exited  # the exec ran its course: not killed at restart + 1.5 s
        assert status.returncode == 0
        ran_until = utcnow()
        await proc.delete()
        ended, heard = await exit_of(events, "lt6")
        assert ended.returncode == IDLE_EXIT_STATUS
        assert heard >= ran_until
        await record_gone(client, "lt6")


async def test_a_networked_sandbox_past_its_lifetime_leaves_nothing_on_the_host(
    real: RealContainerd, namespace: str
) -> None:
    require_cni()
    async with client_for(real, namespace) as client:
        # The bridge and portmap's shared chains stay once made (as under CRI): made first.
        async with client.sandbox("lt7-warm", ports=[PortMapping(80)]):
            pass
        before = await settled(real.sandboxer.state_dir)  # the warm-up's DEL done
        async with client.events('topic=="/sandboxes/exit"') as events:
            await events.subscribed()
            sb = await client.new_sandbox("lt7", ports=[PortMapping(80)], lifetime=2)
            await sb.start()
            during = counts()
            assert during.veths == before.veths + 1
            assert during.netns_mounts == before.netns_mounts + 1
            ended, _ = await exit_of(events, "lt7")
            assert ended.returncode == LIFETIME_EXIT_STATUS
            await record_gone(client, "lt7")
    assert await settled(real.sandboxer.state_dir) == before  # veth, lease, rules, pin: gone
