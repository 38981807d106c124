"""``run()`` holds its deadline whatever the sandbox's processes do, and a cancelled call
returns at once; the kill and delete go on as clean-up the Client owns, and leave nothing.

Every test runs on the stand-in and on a real containerd with the isolating sandboxer: a
child left in the background holding the output open, a process that ignores SIGTERM, an
endless stream, a cancellation three ways. "Nothing left" is checked as the suite does
elsewhere: no exec (containerd answers NotFound for its id), no process of it in the
sandbox's task, no FIFO folder, no task of the library once the Client is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import sandboxclient._task
from sandboxclient import (
    PIPE,
    Client,
    CommandTimeoutError,
    DeadlineExceededError,
    Sandbox,
    errors,
)
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._run import CLEANUP_GRACE
from sandboxclient._wire._pb import tasks_pb as tpb
from tests.support.backends import Backend
from tests.support.constants import RUNTIME
from tests.support.fifos import fifo_dirs
from tests.support.helpers import cleanups_finish, client_tasks

pytestmark = pytest.mark.anyio

MARGIN = CLEANUP_GRACE + 0.25
"""How far past its timeout a run may end: the documented grace, and the loop's own time on
a busy machine. A run that waited for the stream or the process would not end at all."""
CANCEL_BOUND = 0.1
"""How soon a cancelled call must raise CancelledError: asyncio's promise, in seconds, of
time the event loop could run (see :class:`LoopStalls`)."""
TICK = 0.002


class LoopStalls:
    """How long the event loop could not run, tick by tick: a loaded machine (or the
    stand-in's own work on the same loop) delays every callback alike, which no code of the
    library can shorten; waiting on containerd does not stall the loop, so it still counts."""

    def __init__(self) -> None:
        self._ticks: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            now = loop.time()
            self._ticks.append((now, max(0.0, now - due)))

    async def __aenter__(self) -> LoopStalls:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def between(self, start: float, end: float) -> float:
        """Seconds the loop stalled in ticks that ended between ``start`` and ``end``."""
        return sum(late for at, late in self._ticks if start < at <= end + TICK)


@pytest.fixture
def exec_ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The exec ids ``run()`` uses from here on, in order, so a test can look them up."""
    made: list[str] = []
    counter = itertools.count()

    def next_id() -> str:
        made.append(f"exec-dl{next(counter)}-{uuid.uuid4().hex[:6]}")
        return made[-1]

    monkeypatch.setattr(sandboxclient._task, "_new_exec_id", next_id)
    return made


@pytest.fixture
async def sandbox(client: Client, fifo_home: Path) -> AsyncIterator[Sandbox]:
    """A started sandbox, shut down after the test, which fails if a FIFO folder of the
    client's is left (in the test's own ``fifo_home``)."""
    async with client.sandbox(f"dl{uuid.uuid4().hex[:8]}", runtime=RUNTIME) as sb:
        yield sb
        await cleanups_finish()
    assert fifo_dirs() == set()


async def exec_exists(backend: Backend, container_id: str, exec_id: str) -> bool:
    """Whether containerd still has exec ``exec_id`` (asked on a channel of its own)."""
    async with Channel(path=backend.address) as channel:
        tasks = tpb.TasksStub(channel, metadata={NAMESPACE_HEADER: backend.namespace}, timeout=20)
        try:
            await tasks.get(tpb.GetRequest(container_id=container_id, exec_id=exec_id))
        except GRPCError as exc:
            if exc.status is Status.NOT_FOUND:
                return False
            raise
    return True


async def timed(coro: Coroutine[Any, Any, Any]) -> tuple[BaseException | None, float]:
    """What ``coro`` raised (None if nothing) and how long it took, in seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await coro
    except (Exception, asyncio.CancelledError) as exc:
        return exc, loop.time() - started
    return None, loop.time() - started


async def test_a_child_holding_the_output_ends_the_run_at_its_deadline(
    backend: Backend, sandbox: Sandbox, exec_ids: list[str]
) -> None:
    error, took = await timed(sandbox.run("sh", "-c", "sleep 5 & echo bg", timeout=1))
    assert took < 1 + MARGIN, took
    assert isinstance(error, CommandTimeoutError), repr(error)
    assert isinstance(error, DeadlineExceededError)
    assert isinstance(error, TimeoutError)
    # The command exited; what held the run is its child, and the message says so.
    assert (error.returncode, error.stdout, error.stderr) == (0, b"bg\n", b"")
    assert error.command == ("sh", "-c", "sleep 5 & echo bg")
    assert error.timeout == 1
    text = str(error)
    assert "sh -c 'sleep 5 & echo bg'" in text
    assert "exited with 0" in text
    assert "background" in text
    assert "containerd" not in text
    # The exec is deleted by the Client's clean-up, and the sandbox answers meanwhile.
    assert (await sandbox.run("echo", "next", timeout=10)).stdout == b"next\n"
    await cleanups_finish()
    assert not await exec_exists(backend, sandbox.id, exec_ids[0])


async def test_a_process_ignoring_sigterm_is_killed_at_the_deadline(
    backend: Backend, sandbox: Sandbox, exec_ids: list[str]
) -> None:
    task = await sandbox.task()
    before = {p.pid for p in await task.pids()}
    # An ignored signal stays ignored across exec: the sleep itself ignores SIGTERM.
    script = "trap '' TERM INT HUP; echo up; exec sleep 30"
    error, took = await timed(sandbox.run("sh", "-c", script, timeout=1))
    assert took < 1 + MARGIN, took
    assert isinstance(error, CommandTimeoutError), repr(error)
    assert (error.returncode, error.stdout) == (None, b"up\n")
    assert "did not exit within 1 s" in str(error)
    assert "containerd" not in str(error)
    await cleanups_finish()
    assert {p.pid for p in await task.pids()} == before
    assert not await exec_exists(backend, sandbox.id, exec_ids[0])


async def test_an_endless_stream_is_cut_at_the_deadline(
    backend: Backend, sandbox: Sandbox, exec_ids: list[str]
) -> None:
    task = await sandbox.task()
    before = {p.pid for p in await task.pids()}
    error, took = await timed(sandbox.run("yes", timeout=1, max_output=1000))
    assert took < 1 + MARGIN, took
    assert isinstance(error, CommandTimeoutError), repr(error)
    assert error.returncode is None
    assert error.stdout == b"y\n" * 500  # what it wrote, up to max_output
    assert "did not exit" in str(error)
    # The clean-up reads what is left so the shim lets go of the exec at once.
    loop = asyncio.get_running_loop()
    started = loop.time()
    await cleanups_finish()
    assert loop.time() - started < 5
    assert {p.pid for p in await task.pids()} == before
    assert not await exec_exists(backend, sandbox.id, exec_ids[0])


async def _cancel_task(
    run: Coroutine[Any, Any, Any], up: asyncio.Future[None]
) -> tuple[float, float]:
    running = asyncio.ensure_future(run)
    await up
    loop = asyncio.get_running_loop()
    started = loop.time()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    return started, loop.time()


async def _cancel_by_task_group(
    run: Coroutine[Any, Any, Any], up: asyncio.Future[None]
) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    failed_at: list[float] = []

    async def fail_once_up() -> None:
        await up
        failed_at.append(loop.time())
        raise LookupError("a sibling failed")

    async def in_a_group() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(run)
            group.create_task(fail_once_up())

    with pytest.raises(ExceptionGroup) as info:
        await in_a_group()
    assert info.group_contains(LookupError)
    return failed_at[0], loop.time()


CANCELLERS: dict[str, Callable[..., Coroutine[Any, Any, tuple[float, float]]]] = {
    "task.cancel": _cancel_task,
    "task group": _cancel_by_task_group,
}


@pytest.mark.parametrize("how", sorted(CANCELLERS))
async def test_a_cancelled_run_raises_within_100_ms_and_leaves_nothing(
    backend: Backend, sandbox: Sandbox, exec_ids: list[str], how: str
) -> None:
    task = await sandbox.task()
    before = {p.pid for p in await task.pids()}
    fifo = f"/tmp/up-{uuid.uuid4().hex[:8]}"
    await sandbox.run("mkfifo", fifo, timeout=10)
    try:
        # The command says it is up through a FIFO another exec reads: the signal.
        async with await sandbox.spawn("cat", fifo, stdout=PIPE) as reader:
            assert reader.stdout is not None
            stdout = reader.stdout
            up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def watch() -> None:
                assert await stdout.readline() == b"up\n"
                up.set_result(None)

            watcher = asyncio.ensure_future(watch())
            first = len(exec_ids)
            run = sandbox.run("sh", "-c", f"trap '' TERM; echo up > {fifo}; exec sleep 30")
            async with LoopStalls() as stalls:
                started, ended = await CANCELLERS[how](run, up)
            await watcher
        took, stalled = ended - started, stalls.between(started, ended)
        assert took < CANCEL_BOUND + stalled, (took, stalled)
        assert took < 10 * CANCEL_BOUND, took
        await cleanups_finish()
        assert {p.pid for p in await task.pids()} == before
        assert not await exec_exists(backend, sandbox.id, exec_ids[first])
    finally:
        await sandbox.run("rm", "-f", fifo, timeout=10)


async def test_wait_for_ends_a_run_on_its_own_deadline(
    backend: Backend, sandbox: Sandbox, exec_ids: list[str]
) -> None:
    error, took = await timed(asyncio.wait_for(sandbox.run("sleep", "30"), 1))
    assert isinstance(error, TimeoutError)
    assert not isinstance(error, errors.ContainerdError)  # wait_for's own
    assert took < 1 + CANCEL_BOUND, took
    await cleanups_finish()
    assert not await exec_exists(backend, sandbox.id, exec_ids[0])


async def test_closing_the_client_finishes_the_clean_up(
    backend: Backend, exec_ids: list[str]
) -> None:
    before = asyncio.all_tasks()
    client = backend.client()
    sandbox_id = f"dl{uuid.uuid4().hex[:8]}"
    sb = await client.new_sandbox(sandbox_id, runtime=RUNTIME)
    await sb.start()
    with pytest.raises(CommandTimeoutError):
        await sb.run("sh", "-c", "sleep 3 & echo bg", timeout=0.5)
    await client.aclose()  # at once after the timeout: the exec's delete is still under way
    assert client_tasks(before) == []
    assert not await exec_exists(backend, sandbox_id, exec_ids[0])
    async with backend.client() as other:
        await (await other.load_sandbox(sandbox_id)).shutdown()


async def test_a_detached_child_does_not_hold_the_run(sandbox: Sandbox) -> None:
    # The guide's recipe: a session of its own, and its streams elsewhere.
    detached = "setsid sleep 3 >/dev/null 2>&1 </dev/null & echo detached"
    error, took = await timed(sandbox.run("sh", "-c", detached, timeout=2))
    assert error is None, repr(error)
    assert took < 1, took
