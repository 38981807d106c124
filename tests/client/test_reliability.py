"""Deadlines, cancellation and clean-up: nothing hangs, nothing is left behind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from sandboxclient import (
    Client,
    DeadlineExceededError,
    NotFoundError,
)
from sandboxclient.testing import FakeContainerd
from tests.support.backends import PLUGIN_NAME, Backend
from tests.support.constants import RUNTIME
from tests.support.helpers import GatedSandboxer, client_tasks, until

pytestmark = pytest.mark.anyio

SLACK = 1.0


@pytest.fixture
async def stallable() -> AsyncIterator[FakeContainerd]:
    async with FakeContainerd() as server:
        yield server
        server.stall = False


async def test_a_silent_server_gives_deadline_exceeded_in_time(
    stallable: FakeContainerd,
) -> None:
    loop = asyncio.get_running_loop()
    async with Client(stallable.address, timeout=0.5) as client:
        await client.list_sandboxes()  # connected and answering
        stallable.stall = True
        started = loop.time()
        with pytest.raises(DeadlineExceededError) as info:
            await client.list_sandboxes()
        assert isinstance(info.value, TimeoutError)
        assert loop.time() - started < 0.5 + SLACK

        started = loop.time()
        with pytest.raises(DeadlineExceededError):
            await client.get_sandbox("x", timeout=0.1)  # per-call override
        assert loop.time() - started < 0.1 + SLACK

        stallable.stall = False
        assert await client.list_sandboxes() == []


def _server_streams() -> int:
    """Calls the in-process server is still handling."""
    handlers = [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "").startswith("request_handler")
    ]
    return len(handlers)


async def test_cancelling_a_call_leaves_no_task_and_no_open_stream(
    stallable: FakeContainerd,
) -> None:
    before = asyncio.all_tasks()
    async with Client(stallable.address, timeout=30) as client:
        await client.list_sandboxes()
        stallable.stall = True
        call = asyncio.create_task(client.list_sandboxes())
        await asyncio.wait_for(stallable.wait_for_call("Store/List", 2), 10)
        assert _server_streams() == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The client reset the stream, so the server stops handling it.
        await until(lambda: _server_streams() == 0)
        stallable.stall = False
        assert await client.list_sandboxes() == []
    assert client_tasks(before) == []


async def test_cancelling_new_sandbox_after_the_store_leaves_no_record() -> None:
    controller = GatedSandboxer()
    async with (
        FakeContainerd(controller=controller) as server,
        Client(server.address, namespace="default") as client,
    ):
        creating = asyncio.create_task(client.new_sandbox("half1", runtime=RUNTIME))
        await asyncio.wait_for(controller.entered.wait(), 10)
        assert server.sandbox_ids("default") == ["half1"]
        creating.cancel()
        controller.release.set()
        with pytest.raises(asyncio.CancelledError):
            await creating
        assert server.sandbox_ids("default") == []
        assert controller.sandbox_ids("default") == []
    await controller.aclose()


async def test_sandbox_context_shuts_down_on_exit_error_and_cancel(backend: Backend) -> None:
    async with backend.client() as client:
        async with client.sandbox("ctx1", runtime=RUNTIME) as sb:
            assert (await sb.status()).ready
            pid = sb.pid
        assert pid is not None
        with pytest.raises(NotFoundError):
            await client.get_sandbox("ctx1")

        with pytest.raises(RuntimeError, match="boom"):
            async with client.sandbox("ctx2", runtime=RUNTIME):
                raise RuntimeError("boom")
        with pytest.raises(NotFoundError):
            await client.get_sandbox("ctx2")

        inside = asyncio.Event()

        async def hold() -> None:
            async with client.sandbox("ctx3", runtime=RUNTIME):
                inside.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(hold())
        await asyncio.wait_for(inside.wait(), 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(NotFoundError):
            await client.get_sandbox("ctx3")
        assert await client.list_sandboxes() == []


async def test_wait_timeout_yields_deadline_exceeded(backend: Backend) -> None:
    async with backend.client() as client, client.sandbox("wt1", runtime=RUNTIME) as sb:
        loop = asyncio.get_running_loop()
        started = loop.time()
        channel = await sb.wait(timeout=0.3)
        status = await asyncio.wait_for(channel.get(), 10)
        assert status.returncode == 255
        assert isinstance(status.error, DeadlineExceededError)
        assert loop.time() - started < 0.3 + SLACK


async def test_no_label_values_specs_or_extensions_in_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-value-do-not-log"
    caplog.set_level(logging.DEBUG)
    async with (
        FakeContainerd(sandboxers=("shim", PLUGIN_NAME)) as server,
        Client(server.address) as client,
    ):
        async with client.sandbox(
            "log1",
            labels={"token": secret},
            runtime=RUNTIME,
            spec={"process": {"args": ["sh", "-c", f"exit 0 # {secret}"]}},
            extensions={"blob": ("example.com/Blob", secret.encode())},
        ) as sb:
            await (await sb.wait()).get()
            await sb.update(labels={"token": secret + "2"})
        with pytest.raises(NotFoundError):
            await client.load_sandbox("log1")
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [line for line in shown if secret in line]
