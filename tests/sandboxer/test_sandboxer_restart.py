"""The Python sandboxer killed (SIGKILL) and started again under a real containerd.

Its sandboxes are containers and tasks in containerd, kept by their shims, so they outlive
it; the state directory keeps what containerd cannot. Started again, it takes them back, a
wait that was in flight through containerd still gets the sandbox's real exit status, and
Shutdown leaves nothing behind as ctr sees it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from sandboxclient import oci
from tests.support.backends import RealContainerd, new_namespace
from tests.support.constants import RUNTIME
from tests.support.ctr import answering, client_for, nothing_left
from tests.support.helpers import pid_gone, wait_pid_gone

pytestmark = [pytest.mark.anyio, pytest.mark.real]


def release(fifo: Path) -> None:
    """Let a sandbox blocked in ``read line < FIFO`` go on (blocks until it reads)."""
    with open(fifo, "w") as f:
        f.write("go\n")


def gated(fifo: Path, code: int) -> dict[str, object]:
    """A spec whose process waits for :func:`release`, then exits with ``code``: the FIFO's
    directory is bind-mounted into the sandbox (nothing else of the host is in it). With the
    host's users: the bound directory is the host root's, which a user namespace's root
    could not enter."""
    return {
        "annotations": {oci.HOST_USERS_ANNOTATION: "true"},
        "process": {"args": ["sh", "-c", f"read line < /gate/{fifo.name}; exit {code}"]},
        "mounts": [
            {
                "destination": "/gate",
                "type": "bind",
                "source": str(fifo.parent),
                "options": ["rbind", "rw"],
            },
        ],
    }


def records(real: RealContainerd, namespace: str) -> list[str]:
    """The sandboxes the sandboxer has on record in ``namespace``."""
    path = Path(real.sandboxer.state_dir, "sandboxes", namespace)
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


async def test_a_wait_in_flight_survives_a_sandboxer_kill_and_restart(
    real: RealContainerd, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    namespace = new_namespace()
    async with client_for(real, namespace) as client:
        sb = await client.new_sandbox("sr1", runtime=RUNTIME, spec=gated(fifo, 42))
        started = await sb.start()
        waits = real.sandboxer.call_count("Wait")
        channel = await sb.wait()
        await real.sandboxer.wait_for_call("Wait", waits + 1)  # in flight, through containerd
        assert (await sb.status()).ready
        real.sandboxer.kill()
        assert not pid_gone(started.pid), "the sandbox died with the sandboxer"
        assert not channel.done()
        real.sandboxer.start()
        status = await answering(sb)
        assert status.ready
        assert status.pid == started.pid
        # The client's Wait, cut by the kill, is sent again and reaches the new sandboxer.
        await real.sandboxer.wait_for_call("Wait", waits + 2)
        assert not channel.done()
        await asyncio.wait_for(asyncio.to_thread(release, fifo), 10)
        result = await asyncio.wait_for(channel.get(), 60)
        assert result.error is None, result.error
        assert result.returncode == 42
        after = await sb.status()
        assert not after.ready
        assert after.exited_at == result.exited_at
        assert "exit_reason" not in after.info
        await sb.shutdown()
    assert records(real, namespace) == []
    nothing_left(real, namespace)


async def test_an_exit_while_the_sandboxer_is_down_is_not_lost(
    real: RealContainerd, tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    namespace = new_namespace()
    async with client_for(real, namespace) as client:
        sb = await client.new_sandbox("sr2", runtime=RUNTIME, spec=gated(fifo, 7))
        started = await sb.start()
        real.sandboxer.kill()
        await asyncio.wait_for(asyncio.to_thread(release, fifo), 10)
        await wait_pid_gone(started.pid)  # its shim keeps the exit status
        real.sandboxer.start()
        status = await answering(sb)
        assert not status.ready
        assert status.exited_at is not None
        result = await asyncio.wait_for((await sb.wait()).get(), 30)
        assert result.error is None, result.error
        assert result.returncode == 7
        await sb.shutdown()
    nothing_left(real, namespace)


async def test_a_sandbox_started_before_the_restart_can_be_stopped_after_it(
    real: RealContainerd,
) -> None:
    namespace = new_namespace()
    async with client_for(real, namespace) as client:
        sb = await client.new_sandbox("sr3", runtime=RUNTIME)  # no spec: sleeps until stopped
        idle = await client.new_sandbox("sr4", runtime=RUNTIME)  # never started before
        started = await sb.start()
        real.sandboxer.kill()
        real.sandboxer.start()
        status = await answering(sb)
        assert status.ready
        assert status.pid == started.pid
        assert status.exited_at is None
        assert not (await idle.status()).ready
        await sb.stop(grace=5)
        assert pid_gone(started.pid)
        result = await asyncio.wait_for((await sb.wait()).get(), 30)
        assert (result.error, result.returncode) == (None, 128 + signal.SIGTERM)
        assert not (await sb.status()).ready
        later = await idle.start()
        assert not pid_gone(later.pid)
        await sb.shutdown()
        await idle.shutdown()
        assert pid_gone(later.pid)
    assert records(real, namespace) == []
    nothing_left(real, namespace)


async def test_a_task_deleted_while_the_sandboxer_is_down_is_255_with_a_reason(
    real: RealContainerd,
) -> None:
    namespace = new_namespace()
    async with client_for(real, namespace) as client:
        sb = await client.new_sandbox("sr5", runtime=RUNTIME)
        started = await sb.start()
        real.sandboxer.kill()
        # Behind the sandboxer's back: its task and container go.
        real.daemon.ctr("tasks", "kill", "-s", "SIGKILL", "sr5", namespace=namespace)
        await wait_pid_gone(started.pid)
        real.daemon.ctr("tasks", "rm", "sr5", namespace=namespace)
        real.daemon.ctr("containers", "rm", "sr5", namespace=namespace)
        real.sandboxer.start()
        status = await answering(sb)
        assert not status.ready
        assert "gone from containerd" in status.info["exit_reason"]
        result = await asyncio.wait_for((await sb.wait()).get(), 30)
        assert (result.error, result.returncode) == (None, 255)
        await sb.shutdown()
    nothing_left(real, namespace)
