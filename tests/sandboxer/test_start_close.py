"""A whole Start racing the isolating sandboxer's close: closing waits for the Start (or, past
its grace, cancels it), then kills and deletes what it made, and no Start begins after it.
Nothing is left: no task, container, mount, user namespace pin or connection to containerd.

The Start is held on an event the test sets (never a sleep): before its process runs (its
container, task and namespace pin made, its root off the host's table) or once it runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status

from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._plumbing._connection import ClientState
from sandboxclient._wire._pb import AnyPb, sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer, _isolated, _podstarts
from sandboxclient.testing import FakeContainerd
from tests.sandboxer.test_sandboxer import create_request
from tests.sandboxer.test_sandboxer_security import controller_stub
from tests.support.backends import RealContainerd
from tests.support.constants import NS
from tests.support.ctr import nothing_left
from tests.support.helpers import expect_error

pytestmark = pytest.mark.anyio

HOLDS = ("created", "running")
"""Where the Start is held: its task made, not started; or its process running."""


class HeldStart:
    """Holds the controller's next Start at ``where`` until :attr:`release` is set."""

    def __init__(self, controller: ContainerSandboxer, where: str) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        runtime = controller._runtime
        launch = runtime.launch

        async def held_launch(
            namespace: str,
            sandbox_id: str,
            spec: dict[str, Any],
            rootfs: Any,
            output: Any,
            options: Any,
            attach: Callable[[int], Awaitable[None]] | None,
        ) -> int:

            async def before_start(pid: int) -> None:
                if attach is not None:
                    await attach(pid)
                if where == "created":
                    await self.hold()

            made = (namespace, sandbox_id, spec, rootfs, output, options)
            pid = await launch(*made, before_start=before_start)
            if where == "running":
                await self.hold()
            return pid

        runtime.launch = held_launch  # type: ignore[method-assign,assignment]

    async def hold(self) -> None:
        self.reached.set()
        await self.release.wait()


def rooted(root: str) -> AnyPb:
    body = {"root": {"path": root}, "process": {"args": ["sleep", "600"]}}
    return AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(body).encode())


def mounts_under(*roots: str) -> list[str]:
    """The host's mount points under ``roots``."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(tuple(r.rstrip("/") + "/" for r in roots))]


@contextlib.asynccontextmanager
async def over_the_stand_in(workdir: str) -> AsyncIterator[tuple[FakeContainerd, Any, Any]]:
    async with FakeContainerd() as fake:
        controller = ContainerSandboxer(containerd=fake.address, timeout=20)
        async with controller_stub(controller, workdir) as stub:
            yield fake, controller, stub


async def turns(count: int = 20) -> None:
    """Let the event loop run ``count`` times (not time: what is ready runs)."""
    for _ in range(count):
        await asyncio.sleep(0)


def connections(controller: ContainerSandboxer) -> list[Any]:
    """The sandboxer's Clients and connections to containerd, open or not."""
    runtime = controller._runtime
    return [*runtime._clients.values(), *(c for c, _ in runtime._records.values())]


def assert_nothing_left(controller: ContainerSandboxer, base: str, opened: list[Any]) -> None:
    assert opened != []
    assert [c.state for c in opened] == [ClientState.CLOSED] * len(opened)
    assert connections(controller) == []  # and none opened after the close
    assert len(controller._starts) == 0
    assert mounts_under(base) == []  # no root mount, no namespace pin
    assert not os.path.exists(base)  # the private directory, the pins' with it


@pytest.mark.parametrize("where", HOLDS)
async def test_close_waits_for_a_start_in_flight_then_kills_and_deletes_it(
    workdir: str, where: str
) -> None:
    async with over_the_stand_in(workdir) as (fake, controller, stub):
        base = controller._table.base
        held = HeldStart(controller, where)
        await stub.create(create_request("race1", rooted(workdir)))
        starting = asyncio.ensure_future(
            stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="race1"))
        )
        await asyncio.wait_for(held.reached.wait(), 20)
        opened = connections(controller)  # the Start's, held
        assert fake.task_ids(NS) == ["race1"]
        closing = asyncio.ensure_future(controller.aclose())
        await turns()
        assert not closing.done()  # it waits for the Start
        assert fake.task_ids(NS) == ["race1"]  # and touched nothing of it yet
        held.release.set()
        message = await expect_error(asyncio.wait_for(starting, 20), Status.UNAVAILABLE)
        assert message == (  # waited for, not cancelled: no "undone"
            'the sandbox controller is closed: it closed while sandbox "race1" was starting'
            ": unavailable"
        )
        await asyncio.wait_for(closing, 20)
        assert fake.container_ids(NS) == []
        assert fake.task_ids(NS) == []
        assert_nothing_left(controller, base, opened)


@pytest.mark.parametrize("where", HOLDS)
async def test_close_cancels_a_start_past_its_grace_and_leaves_nothing(
    workdir: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_podstarts, "START_GRACE", 0.0)
    async with over_the_stand_in(workdir) as (fake, controller, stub):
        base = controller._table.base
        held = HeldStart(controller, where)  # never released: only the close ends it
        await stub.create(create_request("race2", rooted(workdir)))
        await stub.create(create_request("later", rooted(workdir)))
        starting = asyncio.ensure_future(
            stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="race2"))
        )
        await asyncio.wait_for(held.reached.wait(), 20)
        opened = connections(controller)  # the Start's, held
        await asyncio.wait_for(controller.aclose(), 20)
        assert starting.done()  # the close returned only once the Start had ended
        message = await expect_error(starting, Status.UNAVAILABLE)
        assert 'closed while sandbox "race2" was starting, and the Start was undone' in message
        assert fake.container_ids(NS) == []
        assert fake.task_ids(NS) == []
        assert_nothing_left(controller, base, opened)
        # No Start begins after the close.
        message = await expect_error(
            stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="later")), Status.UNAVAILABLE
        )
        assert (
            message
            == 'the sandbox controller is closed: sandbox "later" is not started: unavailable'
        )
        assert fake.container_ids(NS) == []


@pytest.mark.parametrize("where", HOLDS)
async def test_a_cancelled_close_cuts_the_starts_it_waited_for(workdir: str, where: str) -> None:
    async with over_the_stand_in(workdir) as (fake, controller, stub):
        held = HeldStart(controller, where)  # never released: only the close ends it
        await stub.create(create_request("race3", rooted(workdir)))
        starting = asyncio.ensure_future(
            stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="race3"))
        )
        await asyncio.wait_for(held.reached.wait(), 20)
        base, opened = controller._table.base, connections(controller)
        closing = asyncio.ensure_future(controller.aclose())
        await turns()
        assert not closing.done()  # it waits for the Start, within its grace
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(closing, 20)
        assert len(controller._starts) == 0  # cut, and ended, before the cancel went on
        message = await expect_error(asyncio.wait_for(starting, 20), Status.UNAVAILABLE)
        assert message == (
            'the sandbox controller is closed: it closed while sandbox "race3" was starting, '
            "and the Start was undone: unavailable"
        )
        assert fake.container_ids(NS) == []
        assert fake.task_ids(NS) == []
        await asyncio.wait_for(controller.aclose(), 20)  # does what the cancelled one did not
        assert_nothing_left(controller, base, opened)


async def test_a_start_cut_once_its_process_runs_says_so_and_keeps_its_block(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default-process sandbox's Start cut while it waits for the trap of SIGTERM: its
    sandbox runs (closing kills it), so it is not "undone", and its id block is kept."""
    monkeypatch.setattr(_podstarts, "START_GRACE", 0.0)
    trapping = asyncio.Event()

    async def handles_sigterm(pid: int, command: Any) -> None:
        trapping.set()
        await asyncio.Event().wait()  # only the close ends it

    monkeypatch.setattr(_isolated, "handles_sigterm", handles_sigterm)
    default = {"root": {"path": workdir}}  # no command: the sandboxer's own process
    spec = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(default).encode())
    async with FakeContainerd() as fake:
        controller = ContainerSandboxer(
            containerd=fake.address, timeout=20, state_dir=os.path.join(workdir, "state")
        )
        async with controller_stub(controller, workdir) as stub:
            await stub.create(create_request("race4", spec))
            starting = asyncio.ensure_future(
                stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="race4"))
            )
            await asyncio.wait_for(trapping.wait(), 20)
            assert fake.task_ids(NS) == ["race4"]
            await asyncio.wait_for(controller.aclose(), 20)
            message = await expect_error(starting, Status.UNAVAILABLE)
            assert message == (
                'the sandbox controller is closed: it closed while sandbox "race4" was '
                "starting, after its process ran: closing kills it: unavailable"
            )
            try:
                assert controller._users.pool.held(f"{NS}/race4") is not None  # kept
            finally:  # its pin with it: what the next sandboxer's Shutdown would let go
                controller._users.pool.release(f"{NS}/race4")
                assert mounts_under(workdir) == []


@pytest.mark.real
async def test_a_start_cut_by_the_close_leaves_nothing_on_a_real_containerd(
    real: RealContainerd, workdir: str, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_podstarts, "START_GRACE", 0.0)
    controller = ContainerSandboxer(containerd=real.daemon.address)
    base = controller._table.base
    tasks = f"{real.daemon.base_dir}/state/io.containerd.runtime.v2.task/{NS}/"
    async with controller_stub(controller, workdir) as stub:
        held = HeldStart(controller, "created")  # its task and pin made, its root detached
        await stub.create(create_request("race-real", rooted(str(rootfs))))
        starting = asyncio.ensure_future(
            stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="race-real"))
        )
        await asyncio.wait_for(held.reached.wait(), 60)
        opened = connections(controller)
        assert "race-real" in os.listdir(tasks)  # the task's bundle
        assert mounts_under(tasks) == []  # its root detached from the host's table once made
        assert any(p.endswith(".userns") for p in mounts_under(base))  # the pin
        await asyncio.wait_for(controller.aclose(), 60)
        assert starting.done()
        await expect_error(starting, Status.UNAVAILABLE)
    nothing_left(real, NS)  # no container, task or shim
    assert mounts_under(tasks) == []
    assert_nothing_left(controller, base, opened)
