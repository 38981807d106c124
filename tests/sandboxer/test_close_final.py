"""The isolating sandboxer's close is final: no background work it did not wait for
outlives it, even when a call under way when it began (asking containerd about a sandbox taken
back from the state directory) only ends after it.

The call is held on an event the test sets (never a sleep)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from grpclib.const import Status

from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._serve._server import request_scope
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer, _podwatch
from sandboxclient.testing import FakeContainerd
from tests.sandboxer.test_sandboxer import create_request
from tests.sandboxer.test_sandboxer_security import controller_stub
from tests.sandboxer.test_start_close import mounts_under, rooted
from tests.support.constants import NS
from tests.support.helpers import expect_error

pytestmark = pytest.mark.anyio

WATCH = "sandboxclient.sandboxer.watch."


def watches() -> list[asyncio.Task[Any]]:
    """The sandboxer's watch tasks still under way."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(WATCH) and not t.done()]


async def test_a_sync_ending_after_the_close_begins_no_watch(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No grace: the close goes on past the sandbox it cannot see exit (nothing watches it
    # yet) and past the call holding its lock, as it does once its grace is over.
    monkeypatch.setattr(_podwatch, "_CLOSE_GRACE", 0.0)
    state = os.path.join(workdir, "state")
    async with FakeContainerd() as fake:
        first = ContainerSandboxer(containerd=fake.address, timeout=20, state_dir=state)
        async with controller_stub(first, workdir) as stub:
            await stub.create(create_request("kept", rooted(workdir)))
            await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="kept"))
            first.detach()  # it runs on, for the next sandboxer to take back

        second = ContainerSandboxer(containerd=fake.address, timeout=20, state_dir=state)
        reached, release = asyncio.Event(), asyncio.Event()
        status = second._runtime.status

        async def held_status(namespace: str, sandbox_id: str) -> Any:
            answer = await status(namespace, sandbox_id)  # running, as containerd said
            reached.set()
            await release.wait()
            return answer

        second._runtime.status = held_status  # type: ignore[method-assign]
        try:
            with request_scope({NAMESPACE_HEADER: NS}):
                asking = asyncio.ensure_future(
                    second.status(sandbox_pb.ControllerStatusRequest(sandbox_id="kept"))
                )
            await asyncio.wait_for(reached.wait(), 20)
            await asyncio.wait_for(second.aclose(), 20)
            assert watches() == []
            release.set()
            # The sync ends after the close; the call then finds the controller closed.
            await expect_error(asyncio.wait_for(asking, 20), Status.UNAVAILABLE)
            assert watches() == []  # and began no watch: nothing outlives the close
            assert not second._watch.watching
        finally:
            release.set()
            for task in watches():
                task.cancel()
            second._users.pool.release(f"{NS}/kept")  # the pin a Shutdown would let go
        assert mounts_under(workdir, second._table.base) == []
