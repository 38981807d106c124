"""Containers, tasks and execs through the public client, on the stand-in and a real daemon.

The real daemon runs them in runc containers on a busybox root; the stand-in runs them as
host processes. The commands are ones both have (busybox applets, the host's tools), and
where the two must differ the test says so: a container's own process is PID 1 in its PID
namespace under runc, and PID 1 ignores SIGTERM unless it handles it; on the stand-in it is
a plain process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandboxclient import (
    Client,
    Container,
    DeadlineExceededError,
    NotFoundError,
    TaskState,
    oci,
)
from sandboxclient._io import PIPE
from sandboxclient._wire._pb import cgroups_v1_pb, cgroups_v2_pb
from sandboxclient._wire._pb import tasks_pb as tpb
from sandboxclient.testing import FakeContainerd, busybox_rootfs
from tests.support.backends import Backend
from tests.support.helpers import cleanups_finish
from tests.support.taskwire import task_wire

pytestmark = pytest.mark.anyio

EIGHT_MIB = 8 * 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return busybox_rootfs(tmp_path / "root")


def fifo_dirs() -> set[str]:
    """The client's FIFO folders in the temporary directory."""
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("sandboxclient-io-")}


@contextlib.asynccontextmanager
async def container(
    client: Client, root: Path, cid: str, *args: str, tty: bool = False
) -> AsyncIterator[Container]:
    """A container on ``root`` running ``args``, deleted (its task killed) at the end."""
    opts = [oci.with_process_args(*args)] + ([oci.with_tty()] if tty else [])
    made = await client.new_container(cid, rootfs=root, spec=oci.generate_spec(*opts))
    try:
        yield made
    finally:
        await made.delete(force=True)


def in_container(backend: Backend, root: Path, path: str) -> str:
    """Where a process sees ``root``'s file ``path``: inside the container for runc, on the
    host for the stand-in's host processes."""
    return path if backend.kind == "real" else f"{root}{path}"


async def read_fifo_line(path: str) -> bytes:
    """Wait (on the event loop, no polling) for a line written into FIFO ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(fd, 100)
            if data and not got.done():
                got.set_result(data)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(20):
            return await got
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def test_output_error_and_exit_code(client: Client, root: Path) -> None:
    script = "echo out; echo err >&2; exit 3"
    async with container(client, root, "c1", "sh", "-c", script) as c:
        task = await c.new_task(stdout=PIPE, stderr=PIPE)
        assert task.pid > 0
        assert (await task.status()).state is TaskState.CREATED
        await task.start()
        assert await task.communicate() == (b"out\n", b"err\n")
        assert task.returncode == 3
        # Exited, not deleted: every Wait answers at once with the stored status.
        first, again = await task.wait_exit(), await task.wait_exit()
        assert first == again
        assert first.returncode == 3
        assert first.exited_at is not None
        status = await task.status()
        assert (status.state, status.returncode, status.exited_at) == (
            TaskState.STOPPED,
            3,
            first.exited_at,
        )
        assert await task.delete() == first


async def test_stdin_round_trip_through_cat(client: Client, root: Path) -> None:
    data = b"".join(b"line %d\n" % i for i in range(20000))
    async with container(client, root, "c1", "cat") as c:
        task = await c.new_task(stdin=PIPE, stdout=PIPE)
        await task.start()
        out, err = await task.communicate(data)
        assert (out, err, task.returncode) == (data, None, 0)
        await task.delete()


async def test_eight_mib_through_stdout_and_a_capped_run(client: Client, root: Path) -> None:
    expected = (b"abcdefg\n" * (EIGHT_MIB // 8 + 1))[:EIGHT_MIB]
    async with container(client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        result = await task.run("sh", "-c", f"yes abcdefg | head -c {EIGHT_MIB}")
        assert result.returncode == 0
        assert len(result.stdout) == EIGHT_MIB
        assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(expected).digest()
        capped = await task.run(
            "sh", "-c", "yes abcdefg | head -c 100000; echo e >&2", max_output=1000
        )
        assert (capped.stdout, capped.stdout_truncated) == (expected[:1000], True)
        assert (capped.stderr, capped.stderr_truncated) == (b"e\n", False)


async def test_killed_execs_exit_with_128_plus_the_signal(client: Client, root: Path) -> None:
    async with container(client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        for signum, code in ((signal.SIGKILL, 137), (signal.SIGTERM, 143)):
            process = await task.spawn("sleep", "60")
            channel = await process.wait()
            await process.send_signal(signum)
            status = await channel.get()
            assert (status.returncode, status.error) == (code, None)
            assert status.exited_at is not None
            assert (await process.delete()).returncode == code


async def test_sigterm_to_a_container_s_own_process(
    backend: Backend, client: Client, root: Path
) -> None:
    async with container(client, root, "c1", "sleep", "60") as c:
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
    backend: Backend, client: Client, root: Path
) -> None:
    async with container(client, root, "c1", "sleep", "60") as c:
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
        metric = await task.metrics()
        assert metric.data is not None
        version = cgroup_version(backend)
        assert metric.data.type_url == f"io.containerd.cgroups.{version}.Metrics"
        parse = cgroups_v2_pb.Metrics.parse if version == "v2" else cgroups_v1_pb.Metrics.parse
        sample = parse(metric.data.value)
        assert sample.pids is not None
        assert sample.pids.current == 2
        await task.update({"pids": {"limit": 100}})
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


async def test_a_timed_out_run_leaves_nothing(client: Client, root: Path) -> None:
    before = fifo_dirs()
    async with container(client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        with pytest.raises(DeadlineExceededError):
            await task.run("sleep", "60", timeout=0.5)
        await cleanups_finish()  # the kill and delete are the Client's, on its own time
        assert [p.pid for p in await task.pids()] == [task.pid]
        assert fifo_dirs() <= before


async def test_a_cancelled_run_leaves_nothing(backend: Backend, client: Client, root: Path) -> None:
    before = fifo_dirs()
    os.mkfifo(root / "tmp" / "sig")
    started = asyncio.ensure_future(read_fifo_line(str(root / "tmp" / "sig")))
    async with container(client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        signal_path = in_container(backend, root, "/tmp/sig")
        running = asyncio.create_task(task.run("sh", "-c", f"echo go > {signal_path}; sleep 60"))
        assert await started == b"go\n"
        assert len(await task.pids()) >= 2
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await cleanups_finish()
        assert [p.pid for p in await task.pids()] == [task.pid]
        assert fifo_dirs() <= before


async def test_closing_the_client_closes_its_streams(backend: Backend, root: Path) -> None:
    client = backend.client()
    made = await client.new_container(
        "c1", rootfs=root, spec=oci.generate_spec(oci.with_process_args("cat"))
    )
    task = await made.new_task(stdin=PIPE, stdout=PIPE, stderr=PIPE)
    await task.start()
    assert task.stdin is not None
    assert task.stdout is not None
    assert task.stderr is not None
    task.stdin.write(b"ping\n")
    await task.stdin.drain()
    assert await task.stdout.readline() == b"ping\n"
    await client.aclose()
    assert task.stdin.is_closing()
    assert await task.stdout.read() == b""
    assert await task.stderr.read() == b""
    async with backend.client() as other:
        await (await other.load_container("c1")).delete(force=True)


async def test_leaving_a_spawned_process_early_kills_and_deletes_it(
    client: Client, root: Path
) -> None:
    async with container(client, root, "c1", "sleep", "60") as c:
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


async def test_exec_takes_a_whole_process_spec(client: Client, root: Path) -> None:
    spec = {
        "args": ["sh", "-c", "echo $GREETING; pwd; exit 5"],
        "env": ["GREETING=hello", "PATH=/bin:/usr/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
    }
    async with container(client, root, "c1", "sleep", "60") as c:
        task = await c.new_task()
        await task.start()
        async with await task.exec("full1", spec, stdout=PIPE) as process:
            await process.start()
            out, _ = await process.communicate()
            assert out == b"hello\n/\n"
            assert (await process.wait_exit()).returncode == 5
        assert "terminal" not in spec  # the caller's mapping was not touched


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
