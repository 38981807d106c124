"""A Start cancelled (once or twice) while a thread of it runs (making the sandbox's user
namespace pin, or building the default root) waits for the thread, then undoes what it made:
no pin is left behind it, no build goes on unowned after it.

The thread is held on an event the test sets (never a sleep)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sandboxclient._facts._wirenames import NAMESPACE_HEADER, RUNTIME_SPEC_TYPE_URL
from sandboxclient._serve._server import request_scope
from sandboxclient._wire._pb import AnyPb, sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer, _userns
from tests.sandboxer.test_sandboxer import create_request
from tests.sandboxer.test_start_close import mounts_under, over_the_stand_in, rooted, turns
from tests.support.constants import NS

pytestmark = pytest.mark.anyio


class HeldThread:
    """Holds the next call of ``target.name`` (run in a thread) until :attr:`release`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
        self.reached = asyncio.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        loop = asyncio.get_running_loop()
        real: Callable[..., Any] = getattr(target, name)

        def held(*args: Any) -> Any:
            loop.call_soon_threadsafe(self.reached.set)
            self.release.wait(60)
            try:
                return real(*args)
            finally:
                self.done.set()

        monkeypatch.setattr(target, name, held)


async def cancelled_start(controller: ContainerSandboxer, held: HeldThread, sid: str) -> bool:
    """Cancel the Start of ``sid`` once its thread is held; whether the Start, cancelled,
    waited for the thread. Returns once the Start and the thread have ended."""
    with request_scope({NAMESPACE_HEADER: NS}):
        starting = asyncio.ensure_future(
            controller.start(sandbox_pb.ControllerStartRequest(sandbox_id=sid))
        )
    try:
        await asyncio.wait_for(held.reached.wait(), 20)
        starting.cancel()
        await turns()  # a Start that does not wait for its thread has ended by now
        waited = not starting.done()
    finally:
        held.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(starting, 20)
    assert await asyncio.to_thread(held.done.wait, 20)
    return waited


async def test_a_start_cancelled_while_its_namespace_is_pinned_leaves_no_pin(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with over_the_stand_in(workdir) as (fake, controller, stub):
        base = controller._table.base
        held = HeldThread(monkeypatch, _userns, "make_pinned")
        await stub.create(create_request("cut-pin", rooted(workdir)))
        waited = await cancelled_start(controller, held, "cut-pin")
        assert mounts_under(base) == []  # the pin made after the cancel is undone
        assert controller._users.pool.held(f"{NS}/cut-pin") is None  # its block given back
        assert fake.container_ids(NS) == []
        assert waited


async def test_a_start_cancelled_while_the_default_root_is_built_ends_after_the_build(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"process": {"args": ["sleep", "600"]}}  # no root: the default one
    spec = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(body).encode())
    async with over_the_stand_in(workdir) as (fake, controller, stub):
        root = controller._root
        held = HeldThread(monkeypatch, root, "_build")
        await stub.create(create_request("cut-root", spec))
        with request_scope({NAMESPACE_HEADER: NS}):
            starting = asyncio.ensure_future(
                controller.start(sandbox_pb.ControllerStartRequest(sandbox_id="cut-root"))
            )
        try:
            await asyncio.wait_for(held.reached.wait(), 20)
            starting.cancel()
            await turns()
            assert not starting.done()  # it waits for the build
        finally:
            held.release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(starting, 20)
        assert held.done.is_set()  # no build goes on after the Start
        assert root.built()
        assert [n for n in os.listdir(os.path.dirname(root.path)) if n != "fs"] == []
        assert fake.container_ids(NS) == []


async def test_a_start_cancelled_twice_while_its_namespace_is_pinned_ends_after_the_thread(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client cancelling its Start, then the controller's close cancelling it again: the
    # second cancel must not leave the thread pinning after the Start gave its block back.
    async with over_the_stand_in(workdir) as (fake, controller, stub):
        base = controller._table.base
        held = HeldThread(monkeypatch, _userns, "make_pinned")
        await stub.create(create_request("cut-twice", rooted(workdir)))
        with request_scope({NAMESPACE_HEADER: NS}):
            starting = asyncio.ensure_future(
                controller.start(sandbox_pb.ControllerStartRequest(sandbox_id="cut-twice"))
            )
        thread_done_at_end: list[bool] = []
        starting.add_done_callback(lambda _: thread_done_at_end.append(held.done.is_set()))
        try:
            await asyncio.wait_for(held.reached.wait(), 20)
            starting.cancel()
            await turns()
            starting.cancel()
            await turns()  # a Start that does not wait for its thread has ended by now
            assert not starting.done()
        finally:
            held.release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(starting, 20)
        assert thread_done_at_end == [True]  # it ended only after the thread
        assert mounts_under(base) == []  # the pin the thread made is undone
        assert controller._users.pool.held(f"{NS}/cut-twice") is None
        assert fake.container_ids(NS) == []
