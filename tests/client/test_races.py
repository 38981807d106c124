"""Closing, cancelling and deadlines that land in the middle of things."""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import AsyncIterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import (
    CanceledError,
    Client,
    ClientClosedError,
    ClientState,
    DeadlineExceededError,
    InternalError,
    NotFoundError,
)
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.testing import FakeContainerd
from sandboxclient.testing._services import StoreService
from tests.support.constants import RUNTIME
from tests.support.helpers import GatedSandboxer, until

pytestmark = pytest.mark.anyio


class _HeldStoreCreate:
    """Lets Store.Create write its record, then holds the answer back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.written = asyncio.Event()
        self.release = asyncio.Event()
        original = StoreService.create

        async def create(
            service: StoreService, message: sandbox_pb.StoreCreateRequest
        ) -> sandbox_pb.StoreCreateResponse:
            answer = await original(service, message)
            self.written.set()
            await self.release.wait()
            return answer

        monkeypatch.setattr(StoreService, "create", create)


@pytest.fixture
async def gated() -> AsyncIterator[tuple[FakeContainerd, GatedSandboxer]]:
    controller = GatedSandboxer()
    async with FakeContainerd(controller=controller) as server:
        yield server, controller
    await controller.aclose()


async def test_closing_the_client_during_new_sandbox_leaves_no_record(
    gated: tuple[FakeContainerd, GatedSandboxer],
) -> None:
    server, controller = gated
    client = Client(server.address)
    creating = asyncio.create_task(client.new_sandbox("race1", runtime=RUNTIME))
    await asyncio.wait_for(controller.entered.wait(), 10)
    closing = asyncio.create_task(client.aclose())
    await asyncio.sleep(0)  # aclose() marks the client closed at its first step
    assert client.state is ClientState.CLOSED
    controller.release.set()
    with pytest.raises((ClientClosedError, asyncio.CancelledError)):
        await creating
    await closing
    assert server.sandbox_ids("default") == []
    assert controller.sandbox_ids("default") == []


async def test_no_call_is_made_once_the_client_is_closed(
    gated: tuple[FakeContainerd, GatedSandboxer],
) -> None:
    server, _ = gated
    server.stall = True
    client = Client(server.address, timeout=10)
    listing = asyncio.create_task(client.list_sandboxes())
    await server.wait_for_call("Store/List")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        await client.aclose()
        server.stall = False
        with pytest.raises((ClientClosedError, asyncio.CancelledError)):
            await listing
    with pytest.raises(ClientClosedError):
        await client.get_sandbox("x")


async def test_a_second_cancel_does_not_stop_the_rollback(
    gated: tuple[FakeContainerd, GatedSandboxer],
) -> None:
    server, controller = gated
    async with Client(server.address) as client:
        creating = asyncio.create_task(client.new_sandbox("race2", runtime=RUNTIME))
        await asyncio.wait_for(controller.entered.wait(), 10)
        creating.cancel()
        await asyncio.sleep(0)
        creating.cancel()
        controller.release.set()
        with pytest.raises(asyncio.CancelledError):
            await creating
        assert server.sandbox_ids("default") == []


async def test_a_cancelled_aclose_still_closes(
    gated: tuple[FakeContainerd, GatedSandboxer],
) -> None:
    server, controller = gated
    controller.release.set()
    client = Client(server.address)
    async with client.sandbox("race3", runtime=RUNTIME) as sb:
        channel = await sb.wait()
        closing = asyncio.create_task(client.aclose())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await client.aclose()
        status = await asyncio.wait_for(channel.get(), 5)
        assert isinstance(status.error, ClientClosedError)
    # Leaving the block still shut the sandbox down, closed client or not.
    assert server.sandbox_ids("default") == []
    assert controller.sandbox_ids("default") == []


async def test_cancel_while_the_store_writes_leaves_no_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = _HeldStoreCreate(monkeypatch)
    async with FakeContainerd() as server, Client(server.address) as client:
        creating = asyncio.create_task(client.new_sandbox("race4", runtime=RUNTIME))
        await asyncio.wait_for(held.written.wait(), 10)
        creating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await creating
        held.release.set()
        assert server.sandbox_ids("default") == []
        # and the id can be used again at once
        held.written.clear()
        creating = asyncio.create_task(client.new_sandbox("race4", runtime=RUNTIME))
        await asyncio.wait_for(held.written.wait(), 10)
        sb = await creating
        await sb.shutdown()


async def test_a_deadline_while_the_store_writes_leaves_no_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = _HeldStoreCreate(monkeypatch)
    async with FakeContainerd() as server, Client(server.address, timeout=0.3) as client:
        with pytest.raises(DeadlineExceededError):
            await client.new_sandbox("race5", runtime=RUNTIME)
        held.release.set()
        assert server.sandbox_ids("default") == []


async def test_two_readers_of_one_channel_both_get_the_status(
    gated: tuple[FakeContainerd, GatedSandboxer],
) -> None:
    server, controller = gated
    controller.release.set()
    async with Client(server.address) as client, client.sandbox("race6", runtime=RUNTIME) as sb:
        channel = await sb.wait()
        readers = [asyncio.create_task(channel.get()) for _ in range(3)]
        await server.wait_for_call("Controller/Wait")
        await asyncio.sleep(0)  # each reader is blocked in get()
        assert not any(reader.done() for reader in readers)
        await sb.stop(grace=1)
        statuses = await asyncio.wait_for(asyncio.gather(*readers), 10)
        assert [s.returncode for s in statuses] == [143, 143, 143]
        assert statuses[0] is statuses[1] is statuses[2]


async def test_closing_a_channel_says_canceled(
    gated: tuple[FakeContainerd, GatedSandboxer],
) -> None:
    server, controller = gated
    controller.release.set()
    async with Client(server.address) as client, client.sandbox("race7", runtime=RUNTIME) as sb:
        channel = await sb.wait()
        channel.close()
        status = await asyncio.wait_for(channel.get(), 5)
        assert isinstance(status.error, CanceledError)


async def test_a_failing_shutdown_does_not_replace_the_cancellation(
    gated: tuple[FakeContainerd, GatedSandboxer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, controller = gated
    controller.release.set()

    async def broken_shutdown(
        message: sandbox_pb.ControllerShutdownRequest,
    ) -> sandbox_pb.ControllerShutdownResponse:
        raise GRPCError(Status.INTERNAL, "shutdown broke")

    inside = asyncio.Event()
    async with Client(server.address) as client:

        async def hold() -> None:
            async with client.sandbox("race8", runtime=RUNTIME):
                monkeypatch.setattr(controller, "shutdown", broken_shutdown)
                inside.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(hold())
        await asyncio.wait_for(inside.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        monkeypatch.undo()
        # The body's error wins as well; the shutdown's failure goes to the log.

        async def failing_body() -> None:
            async with client.sandbox("race9", runtime=RUNTIME):
                monkeypatch.setattr(controller, "shutdown", broken_shutdown)
                raise KeyError("body")

        with pytest.raises(KeyError):
            await failing_body()
        monkeypatch.undo()
        # Without an error of its own, the block reports the shutdown's.

        async def quiet_body() -> None:
            async with client.sandbox("race10", runtime=RUNTIME):
                monkeypatch.setattr(controller, "shutdown", broken_shutdown)

        with pytest.raises(InternalError, match="shutdown broke"):
            await quiet_body()
        monkeypatch.undo()
        for leftover in ("race8", "race9", "race10"):
            await (await client.load_sandbox(leftover)).shutdown()
        with pytest.raises(NotFoundError):
            await client.get_sandbox("race8")


async def test_a_timed_out_create_never_deletes_a_record_that_was_there_before() -> None:
    async with (
        FakeContainerd() as server,
        Client(server.address, sandboxer="shim") as owner,
        Client(server.address, sandboxer="shim") as other,
    ):
        await owner.new_sandbox("taken1", labels={"owner": "a"}, runtime=RUNTIME)
        await other.default_sandboxer()  # read once, before the server stalls
        server.stall = True
        # The answer would have been AlreadyExists, but it comes too late to be heard.
        creating = asyncio.create_task(other.new_sandbox("taken1", runtime=RUNTIME, timeout=0.2))
        # The roll-back's look at the record arrives once the create has timed out.
        await server.wait_for_call("Store/Get")
        server.stall = False
        with pytest.raises(DeadlineExceededError):
            await creating
        assert server.call_count("Store/Create") == 2
        assert server.call_count("Store/Delete") == 0
        assert server.sandbox_ids("default") == ["taken1"]
        assert (await owner.get_sandbox("taken1")).labels == {"owner": "a"}
        await (await owner.load_sandbox("taken1")).shutdown()


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


async def test_a_call_still_connecting_when_the_client_closes_fails_and_leaks_nothing() -> None:
    async with FakeContainerd() as server:
        before = _open_sockets()
        client = Client(server.address)
        listing = asyncio.ensure_future(client.list_sandboxes())
        await asyncio.sleep(0)  # the call is making its connection
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            await client.aclose()
            with pytest.raises(ClientClosedError):
                await listing
        # Both ends of a leaked connection would live in this process.
        await until(lambda: _open_sockets() == before, timeout=5)
