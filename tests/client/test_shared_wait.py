"""Many waiters on one sandbox share one Wait call; each keeps its own close and deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sandboxclient import CanceledError, Client, ClientClosedError, DeadlineExceededError
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer import ProcessSandboxer
from sandboxclient.testing import FakeContainerd
from tests.support.constants import RUNTIME
from tests.support.helpers import Changes, client_tasks, tasks_finish

pytestmark = pytest.mark.anyio

SLEEP = {"process": {"args": ["sleep", "60"]}}


class _CountingSandboxer(ProcessSandboxer):
    """Counts the Wait calls it is sent and how many are still open."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.open = 0
        self.changes = Changes()

    async def wait(
        self, message: sandbox_pb.ControllerWaitRequest
    ) -> sandbox_pb.ControllerWaitResponse:
        self.calls += 1
        self.open += 1
        self.changes.changed()
        try:
            return await super().wait(message)
        finally:
            self.open -= 1
            self.changes.changed()


@pytest.fixture
async def counted() -> AsyncIterator[tuple[_CountingSandboxer, Client]]:
    controller = _CountingSandboxer()
    try:
        async with (
            FakeContainerd(controller=controller) as server,
            Client(server.address, namespace="default", timeout=10) as client,
        ):
            yield controller, client
    finally:
        await controller.aclose()


async def test_waiters_on_one_sandbox_share_one_call(
    counted: tuple[_CountingSandboxer, Client],
) -> None:
    controller, client = counted
    sb = await client.new_sandbox("share1", runtime=RUNTIME, spec=SLEEP)
    await sb.start()
    channels = [await sb.wait() for _ in range(20)]
    await controller.changes.until(lambda: controller.open == 1, "one Wait call is open")
    await sb.stop(grace=5)
    statuses = [await asyncio.wait_for(channel.get(), 10) for channel in channels]
    assert controller.calls == 1
    assert {s.returncode for s in statuses} == {143}
    assert all(s.error is None for s in statuses)
    assert len({s.exited_at for s in statuses}) == 1
    # Once answered, a later wait makes a call of its own and learns the same exit.
    late = await asyncio.wait_for((await sb.wait()).get(), 10)
    assert late.returncode == 143
    assert controller.calls == 2
    await sb.shutdown()


async def test_closing_one_channel_leaves_the_others_waiting(
    counted: tuple[_CountingSandboxer, Client],
) -> None:
    controller, client = counted
    sb = await client.new_sandbox("share2", runtime=RUNTIME, spec=SLEEP)
    await sb.start()
    first, second, third = [await sb.wait() for _ in range(3)]
    await controller.changes.until(lambda: controller.open == 1, "the Wait call is open")
    first.close()
    closed = await asyncio.wait_for(first.get(), 5)
    assert isinstance(closed.error, CanceledError)
    assert closed.returncode == 255
    # A round trip on the same connection: a reset of the Wait stream would have reached
    # the server before this request, and been handled by the time it is answered.
    await sb.status()
    await asyncio.sleep(0)
    assert controller.open == 1
    assert not second.done()
    assert not third.done()
    await sb.stop(grace=5)
    for channel in (second, third):
        status = await asyncio.wait_for(channel.get(), 10)
        assert status.error is None
        assert status.returncode == 143
    assert controller.calls == 1
    await sb.shutdown()


async def test_the_last_close_cancels_the_call(
    counted: tuple[_CountingSandboxer, Client],
) -> None:
    controller, client = counted
    sb = await client.new_sandbox("share3", runtime=RUNTIME, spec=SLEEP)
    await sb.start()
    channels = [await sb.wait() for _ in range(3)]
    await controller.changes.until(lambda: controller.open == 1, "the Wait call is open")
    for channel in channels:
        channel.close()
    for channel in channels:
        status = await asyncio.wait_for(channel.get(), 5)
        assert isinstance(status.error, CanceledError)
    await controller.changes.until(
        lambda: controller.open == 0, "the server saw the call cancelled"
    )
    await tasks_finish()
    assert client_tasks() == []
    # A new waiter starts afresh rather than joining the cancelled call.
    again = await sb.wait()
    await controller.changes.until(lambda: controller.open == 1, "a new Wait call is open")
    assert controller.calls == 2
    await sb.stop(grace=5)
    assert (await asyncio.wait_for(again.get(), 10)).returncode == 143
    await sb.shutdown()


async def test_a_channel_closed_before_it_ran_still_gets_a_status(
    counted: tuple[_CountingSandboxer, Client],
) -> None:
    controller, client = counted
    sb = await client.new_sandbox("share4", runtime=RUNTIME, spec=SLEEP)
    await sb.start()
    channel = await sb.wait()
    channel.close()  # before its task ever ran
    status = await asyncio.wait_for(channel.get(), 5)
    assert isinstance(status.error, CanceledError)
    await tasks_finish()
    assert client_tasks() == []
    await controller.changes.until(lambda: controller.open == 0, "no Wait call is open")
    await sb.shutdown()


async def test_each_channel_keeps_its_own_deadline(
    counted: tuple[_CountingSandboxer, Client],
) -> None:
    controller, client = counted
    sb = await client.new_sandbox("share5", runtime=RUNTIME, spec=SLEEP)
    await sb.start()
    short = await sb.wait(timeout=0.2)
    longer = await sb.wait(timeout=30)
    forever = await sb.wait()
    status = await asyncio.wait_for(short.get(), 5)
    assert isinstance(status.error, DeadlineExceededError)
    assert "did not exit within 0.2 s" in str(status.error)
    assert not longer.done()
    assert not forever.done()
    assert controller.open == 1
    await sb.stop(grace=5)
    for channel in (longer, forever):
        assert (await asyncio.wait_for(channel.get(), 10)).returncode == 143
    assert controller.calls == 1
    await sb.shutdown()


async def test_other_sandboxes_and_sandboxers_get_calls_of_their_own(
    counted: tuple[_CountingSandboxer, Client],
) -> None:
    controller, client = counted
    one = await client.new_sandbox("share6", runtime=RUNTIME, spec=SLEEP)
    two = await client.new_sandbox("share7", runtime=RUNTIME, spec=SLEEP)
    await one.start()
    await two.start()
    channels = [await one.wait(), await one.wait(), await two.wait(), await two.wait()]
    await controller.changes.until(lambda: controller.open == 2, "one call per sandbox is open")
    # The same id under another sandboxer is another wait (the fake knows no such one).
    other = client.controller("elsewhere").wait("share6")
    status = await asyncio.wait_for(other.get(), 5)
    assert status.error is not None
    assert not channels[0].done()
    await one.stop(grace=5)
    await two.stop(grace=5)
    assert [(await c.get()).returncode for c in channels] == [143] * 4
    await one.shutdown()
    await two.shutdown()


async def test_closing_the_client_ends_shared_waits() -> None:
    controller = _CountingSandboxer()
    async with FakeContainerd(controller=controller) as server:
        client = Client(server.address, namespace="default", timeout=10)
        sb = await client.new_sandbox("share8", runtime=RUNTIME, spec=SLEEP)
        await sb.start()
        channels = [await sb.wait(timeout=t) for t in (None, 30.0, None)]
        await controller.changes.until(lambda: controller.open == 1, "the Wait call is open")
        await client.aclose()
        for channel in channels:
            status = channel.result()
            assert isinstance(status.error, ClientClosedError)
        await tasks_finish()
        assert client_tasks() == []
        async with Client(server.address, namespace="default") as other:
            await (await other.load_sandbox("share8")).shutdown()
    await controller.aclose()
