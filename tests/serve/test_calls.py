"""The call log the stand-in and the sandboxer count arriving calls in."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status

from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer import CallLog, SandboxController, serve
from tests.support.helpers import expect_error

pytestmark = pytest.mark.anyio

WAIT = "/containerd.services.sandbox.v1.Controller/Wait"
STORE_GET = "/containerd.services.sandbox.v1.Store/Get"
CONTAINERS_GET = "/containerd.services.containers.v1.Containers/Get"


async def test_counts_by_route_tail_or_name() -> None:
    calls = CallLog()
    for route in (WAIT, STORE_GET, CONTAINERS_GET, STORE_GET):
        calls.arrived(route)
    assert calls.count(WAIT) == 1
    assert calls.count("Controller/Wait") == 1
    assert calls.count("Wait") == 1
    assert calls.count("Store/Get") == 2
    assert calls.count("Get") == 3
    assert calls.count("ait") == 0  # a name is matched whole, never a part of one
    assert calls.count("Controller/Get") == 0


async def test_waiters_wake_once_their_count_is_reached() -> None:
    calls = CallLog()
    calls.arrived(WAIT)
    await asyncio.wait_for(calls.wait_for("Wait"), 1)  # already there: at once
    second = asyncio.create_task(calls.wait_for("Wait", 2))
    other = asyncio.create_task(calls.wait_for("Store/Get"))
    await asyncio.sleep(0)
    assert not second.done()
    calls.arrived(WAIT)
    await asyncio.wait_for(second, 1)
    assert not other.done()
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other
    calls.arrived(STORE_GET)  # no waiter left to wake, nothing breaks


async def test_trace_file_gets_one_line_per_arrival(tmp_path: Path) -> None:
    trace = tmp_path / "calls.log"
    trace.write_text(f"{STORE_GET}\n")  # appended to, never truncated
    calls = CallLog(trace)
    calls.arrived(WAIT)
    calls.arrived(WAIT)
    assert trace.read_text().splitlines() == [STORE_GET, WAIT, WAIT]
    calls.close()
    calls.close()
    calls.arrived(WAIT)  # still counted once the file is closed
    assert calls.count("Wait") == 3
    assert trace.read_text().splitlines() == [STORE_GET, WAIT, WAIT]


async def test_serve_counts_calls_before_the_method_runs(tmp_path: Path) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    class Slow(SandboxController):
        async def wait(
            self, message: sandbox_pb.ControllerWaitRequest
        ) -> sandbox_pb.ControllerWaitResponse:
            entered.set()
            await release.wait()
            return sandbox_pb.ControllerWaitResponse(exit_status=5)

    calls = CallLog(tmp_path / "trace")
    path = os.path.join(tmp_path, "s.sock")
    async with serve(Slow(), path, calls=calls), Channel(path=path) as channel:
        stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: "default"})
        bare = sandbox_pb.ControllerStub(channel)
        waiting = asyncio.create_task(stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="s")))
        await asyncio.wait_for(calls.wait_for("Wait"), 10)
        await asyncio.wait_for(entered.wait(), 10)
        assert not waiting.done()
        release.set()
        assert (await asyncio.wait_for(waiting, 10)).exit_status == 5
        # A call refused before the method runs (no namespace) has arrived all the same.
        await expect_error(
            bare.status(sandbox_pb.ControllerStatusRequest(sandbox_id="s")),
            Status.FAILED_PRECONDITION,
            "namespace is required: failed precondition",
        )
    assert calls.count("Status") == 1
    assert calls.count("Wait") == 1
    calls.close()
    assert (tmp_path / "trace").read_text().splitlines() == [
        WAIT,
        "/containerd.services.sandbox.v1.Controller/Status",
    ]
