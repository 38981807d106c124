"""A task's and its execs' life through the public client, on the stand-in and a real
daemon: signals and exit codes, states, pids, pause, metrics, update, bounded and cancelled
runs that leave nothing, one Wait per process, and bad input refused naming the problem.

The real daemon runs them in runc containers on a busybox root; the stand-in runs them as
host processes. Where the two must differ the test says so: a container's own process is
PID 1 in its PID namespace under runc, and PID 1 ignores SIGTERM unless it handles it; on
the stand-in it is a plain process.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandboxclient import (
    STDOUT,
    Client,
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    SandboxMetrics,
    TaskState,
    oci,
)
from sandboxclient._wire._pb import tasks_pb as tpb
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend
from tests.support.containers import container, in_container
from tests.support.fifos import fifo_dirs, read_fifo_line
from tests.support.helpers import cleanups_finish
from tests.support.taskwire import task_wire

pytestmark = pytest.mark.anyio


async def test_killed_execs_exit_with_128_plus_the_signal(tasks_client: Client, root: Path) -> None:
    async with container(tasks_client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        for signum, code in ((signal.SIGKILL, 137), (signal.SIGTERM, 143)):
            process = await task.exec(f"sleep-{signum}", ["sleep", "60"])
            channel = await process.wait()
            await process.start()
            assert (await process.status()).state is TaskState.RUNNING
            await process.send_signal(signum)
            status = await asyncio.wait_for(channel.get(), 20)
            assert (status.returncode, status.error) == (code, None)
            assert status.exited_at is not None
            assert (await process.delete()).returncode == code


async def test_a_running_task_is_not_deleted_by_accident(tasks_client: Client, root: Path) -> None:
    made = await tasks_client.new_container(
        "c1", rootfs=root, spec=oci.generate_spec(oci.with_process_args("sleep", "600"))
    )
    task = await made.new_task()
    await task.start()
    with pytest.raises(FailedPreconditionError):
        await task.delete()
    with pytest.raises(FailedPreconditionError, match="has a task"):
        await made.delete()
    assert (await task.delete(force=True)).returncode == 137
    await made.delete()


async def test_sigterm_to_a_container_s_own_process(
    backend: Backend, tasks_client: Client, root: Path
) -> None:
    async with container(tasks_client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        channel = await task.wait()
        await task.terminate()
        if backend.kind == "fake":
            # Known difference: the stand-in's process is a plain one, and dies of it.
            assert (await channel.get()).returncode == 143
            return
        # runc: PID 1 of its PID namespace has no handler, so the signal is dropped; a
        # process exec'd after the signal still runs, proof that the task lives on.
        assert (await task.run("true")).returncode == 0
        assert not channel.done()
        await task.kill()
        assert (await channel.get()).returncode == 137


def cgroup_version(backend: Backend) -> str:
    """The cgroup version a task's metrics come in: the host's under runc (v2 when the host
    has the unified hierarchy), v1 from the stand-in, which always reports v1."""
    unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    return "v2" if backend.kind == "real" and unified else "v1"


async def test_states_pids_pause_metrics_and_update(
    backend: Backend, tasks_client: Client, root: Path
) -> None:
    async with container(tasks_client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        created = await task.status()
        assert (created.state, created.returncode, created.exited_at) == (
            TaskState.CREATED,
            None,
            None,
        )
        await task.start()
        assert (await task.status()).state is TaskState.RUNNING
        process = await task.spawn("sleep", "60")
        pids = {p.pid: p.info for p in await task.pids()}
        assert pids[task.pid] is None
        info = pids[process.pid]
        assert info is not None
        assert info.type_url == "containerd.runc.v1.ProcessDetails"
        await task.pause()
        assert (await task.status()).state is TaskState.PAUSED
        assert (await process.status()).state is TaskState.PAUSED
        await task.resume()
        assert (await process.status()).state is TaskState.RUNNING
        usage = await task.metrics()
        assert isinstance(usage, SandboxMetrics)
        assert usage.source == f"io.containerd.cgroups.{cgroup_version(backend)}.Metrics"
        assert usage.pids == 2
        assert usage.pids_limit is None
        assert usage.memory_usage_bytes > 0
        assert usage.timestamp is not None
        assert usage.timestamp.tzinfo is UTC
        await task.update({"pids": {"limit": 100}})
        assert (await task.metrics()).pids_limit == 100
        await process.discard()


async def test_go_zero_time_until_exit(backend: Backend, root: Path) -> None:
    async with task_wire(backend.address, backend.namespace, root) as wire:
        pid = await wire.task("c1", "sleep", "60")
        got = await wire.tasks.get(tpb.GetRequest(container_id="c1"))
        assert got.process is not None
        assert (got.process.pid, got.process.id, got.process.container_id) == (pid, "c1", "")
        assert got.process.exited_at == datetime(1, 1, 1, tzinfo=UTC)
        listed = await wire.tasks.list(tpb.ListTasksRequest())
        assert [(t.id, t.status) for t in listed.tasks] == [("c1", got.process.status)]


async def test_a_timed_out_run_leaves_nothing(tasks_client: Client, root: Path) -> None:
    async with container(tasks_client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        with pytest.raises(DeadlineExceededError, match=r"within 0\.5 s"):
            await task.run("sleep", "60", timeout=0.5)
        await cleanups_finish()  # the kill and delete are the Client's, on its own time
        assert [p.pid for p in await task.pids()] == [task.pid]
        assert fifo_dirs() == set()


async def test_a_cancelled_run_leaves_nothing(
    backend: Backend, tasks_client: Client, root: Path
) -> None:
    os.mkfifo(root / "tmp" / "sig")
    started = asyncio.ensure_future(read_fifo_line(str(root / "tmp" / "sig")))
    async with container(tasks_client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        signal_path = in_container(backend, root, "/tmp/sig")
        # exec: a child of the shell would stay in the task, as in a container, where
        # killing an exec kills its own process only.
        running = asyncio.create_task(
            task.run("sh", "-c", f"echo go > {signal_path}; exec sleep 60")
        )
        assert await started == b"go\n"
        assert len(await task.pids()) >= 2
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await cleanups_finish()  # the kill and delete are the Client's, on its own time
        # Only the task's own process is left: every exec was killed and deleted.
        assert [p.pid for p in await task.pids()] == [task.pid]
        assert fifo_dirs() == set()


async def test_leaving_a_spawned_process_early_kills_and_deletes_it(
    tasks_client: Client, root: Path
) -> None:
    async with container(tasks_client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        process = await task.spawn("sleep", "60")

        async def leave_on_an_error() -> None:
            async with process:
                assert (await process.status()).state is TaskState.RUNNING
                raise LookupError("left early")

        with pytest.raises(LookupError, match="left early"):
            await leave_on_an_error()
        with pytest.raises(NotFoundError):
            await process.status()
        quiet = await task.spawn("sleep", "60")
        async with quiet:
            assert (await quiet.status()).state is TaskState.RUNNING
        with pytest.raises(NotFoundError):
            await quiet.status()
        assert [p.pid for p in await task.pids()] == [task.pid]


async def test_one_wait_call_per_process_however_many_wait(
    fake: FakeContainerd, root: Path
) -> None:
    async with (
        Client(fake.address, namespace="waits", timeout=20) as client,
        container(client, root, "c1", "sleep", "60") as c,
    ):
        task = await c.new_task()
        await task.start()
        process = await task.spawn("sleep", "60")
        seen = fake.call_count("Tasks/Wait")
        channels = [await process.wait() for _ in range(4)]
        channels += [await task.wait() for _ in range(3)]
        await fake.wait_for_call("Tasks/Wait", seen + 2)  # one for the exec, one for the task
        await process.kill()
        statuses = [await ch.get() for ch in channels[:4]]
        assert {(s.returncode, s.exited_at) for s in statuses} == {(137, statuses[0].exited_at)}
        await task.kill()
        assert {(await ch.get()).returncode for ch in channels[4:]} == {137}
        assert fake.call_count("Tasks/Wait") == seen + 2
        await process.delete()


async def test_bad_input_is_a_typed_error_that_names_the_problem(
    tasks_client: Client, root: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError):
        await tasks_client.load_container("nope1")
    with pytest.raises(ValueError, match="not a directory"):
        await tasks_client.new_container("bad1", rootfs=tmp_path / "missing")
    with pytest.raises(ValueError, match="rootfs= or image="):
        await tasks_client.new_container("bad2", rootfs=root, image="busybox:latest")
    made = await tasks_client.new_container(
        "bad3", rootfs=root, spec=oci.generate_spec(oci.with_process_args("true"))
    )
    with pytest.raises(ValueError, match="only for stderr"):
        await made.new_task(stdout=STDOUT)
    with pytest.raises(ValueError, match="terminal"):
        await made.new_task(terminal=True)
    task = await made.new_task()
    await task.start()
    await task.wait_exit()
    with pytest.raises(FailedPreconditionError):
        await task.run("true")
    await task.delete()
    with pytest.raises(NotFoundError):
        await task.status()
    await made.delete()
    assert await tasks_client.list_containers() == []
