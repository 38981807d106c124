"""The stand-in's Tasks service on its own: its host processes, what it holds and lets go.

What runs on both backends is in ``test_tasks_run``, ``test_task_errors``, ``test_shim_io``
and ``test_pod_tasks``; here is what only the stand-in can show (its processes are this
host's, its descriptors this process's) or only it decides (a cwd missing on the host).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import Client, NotFoundError, oci
from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._plumbing._stream_args import PIPE
from sandboxclient._serve._procfs import stat_fields
from sandboxclient._wire._pb import AnyPb
from sandboxclient._wire._pb import containers_pb as cpb
from sandboxclient._wire._pb import tasks_pb as tpb
from sandboxclient.testing import FakeContainerd
from tests.support.constants import NS, RUNTIME
from tests.support.fifos import fifo_dirs
from tests.support.taskwire import NULL, process_spec, task_wire

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeContainerd, Client]]:
    async with FakeContainerd() as fake, Client(fake.address, namespace=NS) as client:
        yield fake, client


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _gone(pid: int) -> bool:
    """No such process, or a zombie that is not this process's child to reap."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return True
    return fields[0] in ("Z", "X") and int(fields[1]) != os.getpid()


def _state(pid: int) -> str:
    return stat_fields(pid)[0]


async def test_aclose_kills_every_process_and_lets_go_of_everything(
    root: Path, fifo_home: Path
) -> None:
    fds, tasks_before = _open_fds(), asyncio.all_tasks()
    fake = await FakeContainerd().start()
    client = Client(fake.address, namespace=NS)
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    first = await client.new_container("c1", rootfs=root, spec=spec)
    task = await first.new_task(stdin=PIPE, stdout=PIPE, stderr=PIPE)
    await task.start()
    spawned = await task.spawn("sh", "-c", "sleep 60 & sleep 60", stdout=PIPE)
    tty = await client.new_container(
        "c2", rootfs=root, spec=oci.generate_spec(oci.with_process_args("sh"), oci.with_tty())
    )
    console = await tty.new_task(stdin=PIPE, stdout=PIPE, terminal=True)
    await console.start()
    waiting = await (await client.new_container("c3", rootfs=root, spec=spec)).new_task()
    sb = await client.new_sandbox("sb1", runtime=RUNTIME)
    await sb.start()
    in_sandbox = await sb.spawn("sleep", "60")
    member = await sb.new_container("m1", rootfs=root, spec=spec)
    member_task = await member.new_task()
    await member_task.start()
    pids = {p.pid for t in (task, console, member_task) for p in await t.pids()}
    pids |= {waiting.pid, in_sandbox.pid, spawned.pid, sb.pid or 0}
    assert len(pids) >= 8
    await client.aclose()
    await fake.aclose()
    # Gone; the orphans among them (reparented to PID 1) at most zombies it has to reap.
    assert [p for p in pids if not _gone(p)] == []
    assert fake.task_ids(NS) == []
    assert fifo_dirs() == set()
    assert _open_fds() == fds
    left = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
    assert [t for t in left if t is not asyncio.current_task()] == []


async def test_requests_that_crash_containerd_are_refused_and_counted(
    served: tuple[FakeContainerd, Client], root: Path
) -> None:
    fake, _ = served
    async with task_wire(fake.address, NS, root) as wire:
        record = cpb.Container(id="nospec", runtime=cpb.ContainerRuntime(name=RUNTIME))
        await wire.containers.create(cpb.CreateContainerRequest(container=record))
        await wire.task("c1")
        calls = [
            wire.tasks.create(tpb.CreateTaskRequest(container_id="nospec")),
            wire.tasks.exec(tpb.ExecProcessRequest(container_id="c1", exec_id="e1")),
            wire.tasks.update(tpb.UpdateTaskRequest(container_id="c1")),
        ]
        for call, field in zip(calls, ("container.Spec", "spec", "resources"), strict=True):
            with pytest.raises(GRPCError) as info:
                await call
            assert info.value.status is Status.INVALID_ARGUMENT
            assert info.value.message == f"{field} must be set: invalid argument"
        assert fake.crash_requests == 3


async def test_argv_and_env_are_exactly_the_spec_s(
    served: tuple[FakeContainerd, Client], root: Path
) -> None:
    _, client = served
    env = ["PATH=/usr/bin:/bin", "A-B=dash", "EMPTY=", "PWD=/nowhere"]
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    spec["process"]["env"] = env
    task = await (await client.new_container("c1", rootfs=root, spec=spec)).new_task()
    await task.start()
    shown = await task.run("env")
    assert shown.stdout.decode().splitlines() == env
    named = await task.run("sh", "-c", 'echo "$0 $1"', "name", "arg")
    assert named.stdout == b"name arg\n"
    assert (await task.run("sh", "-c", "kill -PIPE $$")).returncode == 128 + signal.SIGPIPE


async def test_a_cwd_missing_on_the_host_is_the_one_in_the_root(
    served: tuple[FakeContainerd, Client], root: Path
) -> None:
    _, client = served
    spec = oci.generate_spec(oci.with_process_args("pwd"), oci.with_process_cwd("/made/here"))
    task = await (await client.new_container("c1", rootfs=root, spec=spec)).new_task(stdout=PIPE)
    await task.start()
    # runc makes a missing cwd in the container's root: the stand-in makes it there too.
    assert await task.communicate() == (f"{root}/made/here\n".encode(), None)
    assert (root / "made" / "here").is_dir()
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    running = await (await client.new_container("c2", rootfs=root, spec=spec)).new_task()
    await running.start()
    assert (await running.run("pwd", cwd="/etc")).stdout == b"/etc\n"  # the host's
    assert (await running.run("pwd", cwd="/made")).stdout == f"{root}/made\n".encode()


async def test_pause_stops_every_process_and_resume_starts_them(
    served: tuple[FakeContainerd, Client], root: Path
) -> None:
    _, client = served
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    task = await (await client.new_container("c1", rootfs=root, spec=spec)).new_task()
    await task.start()
    spawned = await task.spawn("sleep", "60")
    await task.pause()
    assert {_state(p.pid) for p in await task.pids()} == {"T"}
    await task.resume()
    assert "T" not in {_state(p.pid) for p in await task.pids()}
    channel = await task.wait()
    await task.kill()
    assert (await channel.get()).returncode == 137
    # The task's own process took the rest with it.
    assert (await spawned.status()).returncode == 137


async def test_output_nobody_reads_blocks_the_process_not_memory(
    served: tuple[FakeContainerd, Client], root: Path, tmp_path: Path
) -> None:
    fake, client = served
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    task = await (await client.new_container("c1", rootfs=root, spec=spec)).new_task()
    await task.start()
    os.mkfifo(tmp_path / "done")
    done = os.open(tmp_path / "done", os.O_RDONLY | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    loop.add_reader(
        done, lambda: None if finished.done() else finished.set_result(os.read(done, 10))
    )
    try:
        writer = await task.spawn(
            "sh", "-c", f"head -c 4194304 /dev/zero; echo ok > {tmp_path}/done", stdout=PIPE
        )
        assert writer.stdout is not None
        # Nobody reads: the copy stops at a pipe's worth, so the writer cannot finish.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(finished), 0.5)
        assert len(await writer.stdout.readexactly(4194304)) == 4194304
        assert await asyncio.wait_for(finished, 20) == b"ok\n"
    finally:
        loop.remove_reader(done)
        os.close(done)
    reader = await task.spawn("sleep", "60", stdin=PIPE)
    assert reader.stdin is not None
    reader.stdin.write(b"x" * 4194304)
    # Nobody reads stdin: the writer's drain waits.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.stdin.drain(), 0.5)
    await reader.discard()
    assert fake.crash_requests == 0


async def test_the_sandbox_task_and_its_record_go_with_the_sandbox(
    served: tuple[FakeContainerd, Client], root: Path
) -> None:
    fake, client = served
    sb = await client.new_sandbox("sb1", runtime=RUNTIME)
    assert fake.container_ids(NS) == []
    await sb.start()
    assert fake.container_ids(NS) == ["sb1"]
    assert fake.task_ids(NS) == ["sb1"]
    spec = oci.generate_spec(oci.with_process_args("true"))
    # Joining no namespaces: a joining member's task is refused before containerd is asked,
    # its sandbox's process gone (tests/client/test_member_joined.py).
    member = await sb.new_container("m1", rootfs=root, spec=spec, join_namespaces=False)
    channel = await sb.wait()
    await sb.stop(grace=1)
    await channel.get()
    assert fake.task_ids(NS) == []
    # With the sandbox's task gone, its containers have no shim to run in.
    with pytest.raises(NotFoundError, match="can't find shim for sandbox sb1"):
        await member.new_task()
    await sb.shutdown()
    assert fake.container_ids(NS) == []


async def test_a_record_of_one_s_own_with_the_sandbox_s_id_is_kept(
    served: tuple[FakeContainerd, Client], root: Path
) -> None:
    fake, client = served
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    await client.new_container("sb2", rootfs=root, spec=spec)
    sb = await client.new_sandbox("sb2", runtime=RUNTIME)
    await sb.start()
    assert (await sb.run("sh", "-c", "echo hi")).stdout == b"hi\n"
    await sb.shutdown()
    assert fake.container_ids(NS) == ["sb2"]  # not made for the sandbox: not removed with it
    assert fake.task_ids(NS) == []


async def test_an_exec_s_spec_any_type_is_read_as_a_process(
    served: tuple[FakeContainerd, Client], root: Path
) -> None:
    fake, _ = served
    async with task_wire(fake.address, NS, root) as wire:
        await wire.task("c1")
        body = json.loads(process_spec("sh", "-c", "exit 9").value)
        spec = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(body).encode())
        await wire.tasks.exec(
            tpb.ExecProcessRequest(
                container_id="c1", exec_id="e1", spec=spec, stdout=NULL, stderr=NULL
            )
        )
        await wire.tasks.start(tpb.StartRequest(container_id="c1", exec_id="e1"))
        waited = await wire.tasks.wait(tpb.WaitRequest(container_id="c1", exec_id="e1"))
        assert waited.exit_status == 9


async def test_an_image_root_not_in_the_store_is_refused_as_the_daemon_refuses_it(
    served: tuple[FakeContainerd, Client],
) -> None:
    fake, client = served
    with pytest.raises(NotFoundError, match=r'image "example\.test/busybox:1" not found'):
        await client.new_container("img", image="example.test/busybox:1")
    assert await client.list_containers() == []
    assert fake.container_ids(NS) == []
