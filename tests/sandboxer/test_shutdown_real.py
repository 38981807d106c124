"""An isolated sandbox's Shutdown under a real containerd: every process of it ends, by the
sandboxer's own signal to its first process where that ends its pid namespace, by
containerd's kill of the whole task where it cannot (a paused task), and nothing is left,
not even a member made while it ran."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from sandboxclient import Client, Container, EventStream, oci
from sandboxclient.errors import FailedPreconditionError, NotFoundError
from sandboxclient.events import ContainerCreate, Event
from sandboxclient.sandboxer._pausepoints import PAUSE_ENV, SHUTDOWN_LISTED
from sandboxclient.sandboxer._podsignal import first_process
from tests.support.backends import RealContainerd
from tests.support.ctr import nothing_left
from tests.support.fifos import read_fifo_line
from tests.support.helpers import pid_namespace_members, wait_pid_gone

pytestmark = [pytest.mark.anyio, pytest.mark.real]


async def test_shutdown_ends_every_process_and_leaves_nothing(
    real: RealContainerd, tenant: Client
) -> None:
    sb = await tenant.new_sandbox("end1")
    await sb.start()
    assert sb.pid is not None
    pid_ns = os.readlink(f"/proc/{sb.pid}/ns/pid")
    # Its first process is one the sandboxer notes, to signal it itself at Shutdown.
    assert first_process(sb.pid, {"linux": {"namespaces": [{"type": "pid"}]}}, False) is not None
    quiet = "</dev/null >/dev/null 2>&1"
    detach = f"setsid sleep 7781 {quiet} & ( (sleep 7782 {quiet} &) & ) {quiet}"
    assert (await sb.run("sh", "-c", detach, timeout=30)).returncode == 0
    inside = pid_namespace_members(pid_ns)
    assert sb.pid in inside
    assert len(inside) >= 2  # the default process, and what was left behind
    await sb.shutdown()
    for pid in inside:
        await wait_pid_gone(pid)
    assert pid_namespace_members(pid_ns) == set()
    nothing_left(real, tenant.namespace)
    assert await tenant.list_sandboxes() == []


async def test_a_paused_sandbox_is_shut_down_too(real: RealContainerd, tenant: Client) -> None:
    # A frozen process dies of SIGKILL only once thawed on cgroup v1: past a short grace the
    # sandboxer has containerd kill the whole task (runc thaws it).
    sb = await tenant.new_sandbox("end2")
    await sb.start()
    assert sb.pid is not None
    task = await sb.task()
    await task.pause()
    await sb.shutdown()
    await wait_pid_gone(sb.pid)
    nothing_left(real, tenant.namespace)
    assert await tenant.list_sandboxes() == []


async def test_a_member_made_while_the_sandbox_shuts_down_is_refused_and_deleted(
    real: RealContainerd,
    tenant: Client,
    rootfs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sandboxer is stopped where its Shutdown has read the container records (a pause
    point it is told of): a member whose record is made then is missed by that read, so its
    maker, told by the sandbox's Status that a Shutdown is under way (or that it is gone),
    deletes it and refuses it; nothing is left."""
    fifo = tmp_path / "paused"
    os.mkfifo(fifo)
    real.sandboxer.kill()
    monkeypatch.setenv(PAUSE_ENV, f"{SHUTDOWN_LISTED}={fifo}")
    try:
        real.sandboxer.start()
    finally:
        monkeypatch.delenv(PAUSE_ENV)
    assert real.sandboxer.proc is not None
    sandboxer_pid = real.sandboxer.proc.pid
    sb = await tenant.new_sandbox("end3")
    await sb.start()
    spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
    async with tenant.events('topic=="/containers/create"') as events:
        await events.subscribed()
        shutting = asyncio.ensure_future(sb.shutdown())
        making: asyncio.Task[Container] | None = None
        try:
            assert await read_fifo_line(str(fifo)) == f"{SHUTDOWN_LISTED}\n".encode()
            making = asyncio.ensure_future(
                sb.new_container("end3-m", rootfs=rootfs, spec=spec, join_namespaces=False)
            )
            await container_created(events, "end3-m")  # its record, after the read
            # Stopped there (its state waited for, not consumed), then let go on.
            await asyncio.to_thread(os.waitid, os.P_PID, sandboxer_pid, os.WSTOPPED | os.WNOWAIT)
            os.kill(sandboxer_pid, signal.SIGCONT)
            with pytest.raises(FailedPreconditionError, match=r"sandbox \"end3\" is shut"):
                await making
            await shutting
            nothing_left(real, tenant.namespace)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sandboxer_pid, signal.SIGCONT)
            await asyncio.gather(shutting, *([making] if making else []), return_exceptions=True)
            with contextlib.suppress(NotFoundError):  # the old leak, not left to the next tests
                await (await tenant.load_container("end3-m")).delete(force=True)


async def container_created(events: EventStream, container_id: str) -> None:
    """Return once ``/containers/create`` of ``container_id`` comes."""
    async for item in events:
        payload = item.payload if isinstance(item, Event) else None
        if isinstance(payload, ContainerCreate) and payload.id == container_id:
            return
    raise AssertionError("the event stream ended")
