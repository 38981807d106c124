"""The runc shim's way with a process's streams, on the stand-in and a real containerd.

These go below the client (whose FIFOs vanish once the shim holds them) to the FIFOs and
files themselves, opened here the way containerd's Go client opens them: the read ends of
stdout and stderr, and stdin's write end, non-blocking, before the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from sandboxclient._wire._pb import tasks_pb as tpb
from tests.support.backends import Backend
from tests.support.taskwire import NULL, TaskWire, process_spec, task_wire

pytestmark = pytest.mark.anyio


@pytest.fixture
async def wire(backend: Backend, root: Path) -> AsyncIterator[TaskWire]:
    async with task_wire(backend.address, backend.namespace, root) as w:
        await w.task("c1", "sleep", "60")
        yield w


def fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def reader(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


async def read_to_end(fd: int) -> bytes:
    """Everything until every writer has closed, woken by the event loop."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(20):
            await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)


async def exec_and_wait(w: TaskWire, eid: str, *args: str, **streams: object) -> int:
    await w.tasks.exec(
        tpb.ExecProcessRequest(container_id="c1", exec_id=eid, spec=process_spec(*args), **streams)  # type: ignore[arg-type]
    )
    await w.tasks.start(tpb.StartRequest(container_id="c1", exec_id=eid))
    return (await w.tasks.wait(tpb.WaitRequest(container_id="c1", exec_id=eid))).exit_status


async def test_stdin_ends_once_the_client_closed_and_called_closeio(
    wire: TaskWire, tmp_path: Path
) -> None:
    stdin, stdout = fifo(tmp_path / "in"), fifo(tmp_path / "out")
    hold = reader(stdin)  # the Go client's trick: a reader, so the writer can open
    first = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
    out = reader(stdout)
    request = tpb.ExecProcessRequest(
        container_id="c1",
        exec_id="cat1",
        spec=process_spec("cat"),
        stdin=stdin,
        stdout=stdout,
        stderr=NULL,
    )
    await wire.tasks.exec(request)
    await wire.tasks.start(tpb.StartRequest(container_id="c1", exec_id="cat1"))
    os.close(hold)
    os.write(first, b"one\n")
    os.close(first)
    # The shim still holds a writer of its own: a second client can come and write more.
    second = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
    os.write(second, b"two\n")
    os.close(second)
    reading = asyncio.ensure_future(read_to_end(out))
    await wire.tasks.close_io(tpb.CloseIoRequest(container_id="c1", exec_id="cat1", stdin=True))
    assert await reading == b"one\ntwo\n"
    waited = await wire.tasks.wait(tpb.WaitRequest(container_id="c1", exec_id="cat1"))
    assert waited.exit_status == 0


async def test_stdout_and_stderr_into_one_fifo(wire: TaskWire, tmp_path: Path) -> None:
    both = fifo(tmp_path / "both")
    reading = asyncio.ensure_future(read_to_end(reader(both)))
    code = await exec_and_wait(
        wire, "e1", "sh", "-c", "echo out; echo err >&2; exit 2", stdout=both, stderr=both
    )
    assert code == 2
    assert sorted((await reading).splitlines()) == [b"err", b"out"]


async def test_a_file_uri_appends_both_streams(
    backend: Backend, wire: TaskWire, tmp_path: Path
) -> None:
    log = tmp_path / "a log" / "out.log"
    log.parent.mkdir()
    log.write_bytes(b"before\n")
    uri = "file://" + quote(str(log))
    assert "%20" in uri
    code = await exec_and_wait(
        wire, "e1", "sh", "-c", "echo out; echo err >&2", stdout=uri, stderr=uri
    )
    assert code == 0
    await wire.tasks.delete_process(tpb.DeleteProcessRequest(container_id="c1", exec_id="e1"))
    lines = log.read_bytes().splitlines()
    assert lines[0] == b"before"  # appended to, not truncated
    assert set(lines[1:]) <= {b"out", b"err"}
    if backend.kind == "fake":
        # The real shim's copies into the log can still be on their way after DeleteProcess
        # has returned (a line was missing once in a dozen runs): both are checked here.
        assert sorted(lines[1:]) == [b"err", b"out"]


async def test_a_reader_that_went_away_does_not_break_the_process(
    wire: TaskWire, tmp_path: Path
) -> None:
    stdin, out = fifo(tmp_path / "in"), fifo(tmp_path / "out")
    hold = reader(stdin)
    go = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
    fd = reader(out)
    await wire.tasks.exec(
        tpb.ExecProcessRequest(
            container_id="c1",
            exec_id="e1",
            spec=process_spec("sh", "-c", "read x; echo a; echo b"),
            stdin=stdin,
            stdout=out,
            stderr=NULL,
        )
    )
    await wire.tasks.start(tpb.StartRequest(container_id="c1", exec_id="e1"))
    os.close(fd)  # gone before the process writes: the shim's own reader keeps the pipe
    # The line waits in the pipe for the shim's reader of stdin, which a real shim may open
    # only after Start has returned: held till then, stdin takes it whenever that comes.
    os.write(go, b"\n")
    os.close(hold)
    os.close(go)
    waited = await wire.tasks.wait(tpb.WaitRequest(container_id="c1", exec_id="e1"))
    assert waited.exit_status == 0  # not 141: no SIGPIPE


async def test_no_streams_at_all_is_dev_null(wire: TaskWire) -> None:
    code = await exec_and_wait(wire, "e1", "sh", "-c", "echo lost; read x; exit 7")
    assert code == 7


async def test_a_pty_carries_output_and_takes_its_size(wire: TaskWire, tmp_path: Path) -> None:
    stdin, stdout = fifo(tmp_path / "in"), fifo(tmp_path / "out")
    hold = reader(stdin)
    writer = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
    reading = asyncio.ensure_future(read_to_end(reader(stdout)))
    spec = process_spec("sh", "-c", "read x; stty size; tty >/dev/null && echo tty", terminal=True)
    await wire.tasks.exec(
        tpb.ExecProcessRequest(
            container_id="c1",
            exec_id="t1",
            spec=spec,
            stdin=stdin,
            stdout=stdout,
            terminal=True,
        )
    )
    await wire.tasks.start(tpb.StartRequest(container_id="c1", exec_id="t1"))
    os.close(hold)
    await wire.tasks.resize_pty(
        tpb.ResizePtyRequest(container_id="c1", exec_id="t1", width=100, height=30)
    )
    os.write(writer, b"go\n")
    waited = await wire.tasks.wait(tpb.WaitRequest(container_id="c1", exec_id="t1"))
    assert waited.exit_status == 0
    output = await reading
    assert b"30 100\r\n" in output
    assert b"tty\r\n" in output
    with contextlib.suppress(OSError):
        os.close(writer)
