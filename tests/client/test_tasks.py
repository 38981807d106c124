"""Containers, tasks and processes: run code, stream its IO, bound its time, leave nothing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import (
    DEVNULL,
    PIPE,
    STDOUT,
    Client,
    Container,
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    Task,
    TaskState,
    oci,
)
from sandboxclient.testing import busybox_rootfs
from tests.support.backends import Backend
from tests.support.helpers import cleanups_finish

pytestmark = pytest.mark.anyio

RUNTIME = "io.containerd.runc.v2"


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("busybox"))


@contextlib.asynccontextmanager
async def _ready_signal(rootfs: Path) -> AsyncIterator[tuple[str, asyncio.Future[None]]]:
    """A FIFO a process inside can write to, and a future set when it does.

    The path inside is ``/tmp/<name>``: the container's root is ``rootfs``, while the
    stand-in runs processes on the host, so the FIFO is made at both places.
    """
    name = f"ready-{uuid.uuid4().hex[:8]}"
    places = {rootfs / "tmp" / name, Path("/tmp") / name}
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fds = []

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        for place in places:
            os.mkfifo(place)
            fd = os.open(place, os.O_RDONLY | os.O_NONBLOCK)
            fds.append(fd)
            loop.add_reader(fd, wake)
        yield f"/tmp/{name}", ready
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
        for place in places:
            place.unlink(missing_ok=True)


def _io_dirs() -> set[str]:
    tmp = os.environ.get("TMPDIR", "/tmp")
    return {name for name in os.listdir(tmp) if name.startswith("sandboxclient-io-")}


@pytest.fixture
async def tasks_client(backend: Backend) -> AsyncIterator[Client]:
    """A Client on the backend; the test fails if it leaves a container or FIFO behind."""
    before = _io_dirs()
    async with backend.client(timeout=30) as client:
        yield client
        assert await client.list_containers() == []
    assert _io_dirs() - before == set()


async def _container(
    client: Client, rootfs: Path, name: str, *args: str, **spec_opts: object
) -> Container:
    opts = [oci.with_process_args(*args)] if args else [oci.with_process_args("sleep", "600")]
    if spec_opts.get("tty"):
        opts.append(oci.with_tty())
    return await client.new_container(name, rootfs=rootfs, spec=oci.generate_spec(*opts))


async def test_a_standalone_container_gives_its_output_and_exit_code(
    tasks_client: Client, rootfs: Path
) -> None:
    script = "echo out; echo err >&2; exit 3"
    container = await _container(tasks_client, rootfs, "std1", "sh", "-c", script)
    task = await container.new_task(stdout=PIPE, stderr=PIPE)
    assert task.pid > 0
    assert (await task.status()).state is TaskState.CREATED
    await task.start()
    out, err = await task.communicate()
    assert (out, err, task.returncode) == (b"out\n", b"err\n", 3)
    status = await task.delete()
    assert status.returncode == 3
    assert status.exited_at is not None
    await container.delete()

    # The same through run(), as an exec into a running container.
    sleeper = await _container(tasks_client, rootfs, "std2")
    task = await sleeper.new_task()
    await task.start()
    done = await task.run("sh", "-c", script)
    assert (done.stdout, done.stderr, done.returncode) == (b"out\n", b"err\n", 3)
    assert not done.stdout_truncated
    assert done.started_at is not None
    assert done.exited_at is not None
    assert done.started_at <= done.exited_at
    await sleeper.delete(force=True)


async def test_exec_kill_and_delete(tasks_client: Client, rootfs: Path) -> None:
    container = await _container(tasks_client, rootfs, "kill1")
    task = await container.new_task()
    await task.start()
    for signum, code in ((signal.SIGKILL, 137), (signal.SIGTERM, 143)):
        process = await task.exec(f"sleep-{signum}", ["sleep", "600"])
        channel = await process.wait()
        await process.start()
        assert (await process.status()).state is TaskState.RUNNING
        await process.send_signal(signum)
        status = await asyncio.wait_for(channel.get(), 20)
        assert status.returncode == code
        assert (await process.delete()).returncode == code
    # A running task is not deleted by accident.
    with pytest.raises(FailedPreconditionError):
        await task.delete()
    with pytest.raises(FailedPreconditionError, match="has a task"):
        await container.delete()
    assert (await task.delete(force=True)).returncode == 137
    await container.delete()


async def test_stdin_round_trip_and_a_large_stdout(
    backend: Backend, tasks_client: Client, rootfs: Path
) -> None:
    container = await _container(tasks_client, rootfs, "io1")
    task = await container.new_task()
    await task.start()
    echoed = await task.run("cat", input=b"hello through stdin\n")
    assert echoed.stdout == b"hello through stdin\n"

    size = 64 * 1024 * 1024
    # The copy goes into the root's /tmp under a name of its own; the stand-in's processes
    # run on the host, so they are given the host's path to it.
    blob = rootfs / "tmp" / f"blob-{uuid.uuid4().hex[:8]}"
    seen_as = f"/tmp/{blob.name}" if backend.kind == "real" else str(blob)
    try:
        await _blob_round_trip(task, size, seen_as)
        assert blob.exists()  # where the test said, so the clean-up below reaches it
    finally:
        blob.unlink(missing_ok=True)

    cut = await task.run("sh", "-c", "head -c 100000 /dev/zero", max_output=1000)
    assert cut.stdout == b"\0" * 1000
    assert cut.stdout_truncated
    assert not cut.stderr_truncated
    await container.delete(force=True)


async def _blob_round_trip(task: Task, size: int, path: str) -> None:
    """Stream ``size`` random bytes out while ``tee`` writes them to ``path``; the
    digest of what came out must be the file's."""
    process = await task.spawn(
        "sh", "-c", f"head -c {size} /dev/urandom | tee {path}", stdout=PIPE, stderr=PIPE
    )
    async with process:
        assert process.stdout is not None
        digest = hashlib.sha256()
        total = 0
        while chunk := await process.stdout.read(1 << 16):
            digest.update(chunk)
            total += len(chunk)
        assert process.stderr is not None
        assert await process.stderr.read() == b""
        assert (await process.wait_exit()).returncode == 0
    assert total == size
    summed = await task.run("sha256sum", path)
    assert summed.stdout.split()[0].decode() == digest.hexdigest()


async def test_stderr_into_stdout_and_a_log_file(
    tasks_client: Client, rootfs: Path, tmp_path: Path
) -> None:
    container = await _container(tasks_client, rootfs, "merge1")
    task = await container.new_task()
    await task.start()
    process = await task.spawn("sh", "-c", "echo a; echo b >&2", stdout=PIPE, stderr=STDOUT)
    async with process:
        out, err = await process.communicate()
    assert err is None
    assert out is not None
    assert sorted(out.split()) == [b"a", b"b"]
    log = tmp_path / "exec.log"
    # containerd 2.1's shim closes a log file when stdout's copy ends, so stderr written at
    # the very end can be lost (see the guide): here stderr comes first.
    script = "echo two >&2; sleep 0.2; echo one"
    process = await task.spawn("sh", "-c", script, stdout=log, stderr=STDOUT)
    async with process:
        assert (await process.wait_exit()).returncode == 0
    assert log.read_text().split() == ["two", "one"]
    quiet = await task.spawn("sh", "-c", "echo hidden", stdout=DEVNULL, stderr=PIPE)
    async with quiet:
        assert await quiet.communicate() == (None, b"")
    await container.delete(force=True)


async def test_a_pty(tasks_client: Client, rootfs: Path) -> None:
    container = await _container(tasks_client, rootfs, "tty1")
    task = await container.new_task()
    await task.start()
    script = "test -t 0 && echo tty; read go; stty size"
    process = await task.spawn("sh", "-c", script, stdout=PIPE, stdin=PIPE, terminal=True)
    async with process:
        assert process.stdout is not None
        assert process.stdin is not None
        assert await process.stdout.readline() == b"tty\r\n"  # a pty writes CR LF
        await process.resize(100, 40)
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        text = (await process.stdout.read()).decode()
        assert "40 100" in text
        assert (await process.wait_exit()).returncode == 0
    await container.delete(force=True)


async def test_timeout_and_cancellation_of_run_leave_nothing(
    tasks_client: Client, rootfs: Path
) -> None:
    container = await _container(tasks_client, rootfs, "bound1")
    task = await container.new_task()
    await task.start()
    with pytest.raises(DeadlineExceededError, match=r"within 0\.5 s"):
        await task.run("sleep", "600", timeout=0.5)
    async with _ready_signal(rootfs) as (path, ready):
        script = f"echo up > {path}; exec sleep 600"
        running = asyncio.create_task(task.run("sh", "-c", script))
        await asyncio.wait_for(ready, 20)  # the exec says it is up
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await cleanups_finish()  # the kill and delete are the Client's, on its own time
    # Only the task's own process is left: every exec was killed and deleted.
    assert [p.pid for p in await task.pids()] == [task.pid]
    await container.delete(force=True)


async def test_bad_input_is_a_typed_error_that_names_the_problem(
    tasks_client: Client, rootfs: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError):
        await tasks_client.load_container("nope1")
    with pytest.raises(ValueError, match="not a directory"):
        await tasks_client.new_container("bad1", rootfs=tmp_path / "missing")
    with pytest.raises(ValueError, match="rootfs= or image="):
        await tasks_client.new_container("bad2", rootfs=rootfs, image="busybox:latest")
    container = await _container(tasks_client, rootfs, "bad3", "true")
    with pytest.raises(ValueError, match="only for stderr"):
        await container.new_task(stdout=STDOUT)
    with pytest.raises(ValueError, match="terminal"):
        await container.new_task(terminal=True)
    task = await container.new_task()
    await task.start()
    await task.wait_exit()
    with pytest.raises(FailedPreconditionError):
        await task.run("true")
    await task.delete()
    with pytest.raises(NotFoundError):
        await task.status()
    await container.delete()
    assert await tasks_client.list_containers() == []
