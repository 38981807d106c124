"""``SandboxerProcess``: starting the Python sandboxer within a deadline, and knowing when a
call has reached it. None of this needs containerd: the tests talk to its socket."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import SandboxPb, SandboxRuntimePb, sandbox_pb
from sandboxclient.testing import SandboxerProcess
from tests.support.constants import RUNTIME
from tests.support.helpers import pid_gone

pytestmark = pytest.mark.anyio


def fake_sandboxer(workdir: str, body: str) -> SandboxerProcess:
    """A sandboxer whose program is ``body``, a Python script that first writes its pid."""
    pidfile = os.path.join(workdir, "pid")
    code = f"import os, sys, time\nopen({pidfile!r}, 'w').write(str(os.getpid()))\n{body}"
    return SandboxerProcess(os.path.join(workdir, "s.sock"), command=(sys.executable, "-c", code))


def pid_of(workdir: str) -> int:
    with open(os.path.join(workdir, "pid")) as f:
        return int(f.read())


@pytest.mark.parametrize(
    ("body", "problem", "printed"),
    [
        ("time.sleep(600)", "did not say it listens within 0.5 s", ""),
        (
            "print('half a line', end='', flush=True)\ntime.sleep(600)",
            "did not say it listens within 0.5 s",
            "half a line",
        ),
        ("print('going away')\nsys.exit(3)", "exited with status 3", "going away\n"),
        (
            "print('listening, honest', flush=True)\ntime.sleep(600)",
            "said it listens but has no socket",
            "listening, honest\n",
        ),
        (
            "os.close(1)\ntime.sleep(600)",
            "closed its output without saying it listens",
            "",
        ),
    ],
    ids=["silent", "half-a-line", "exits", "no-socket", "closes-stdout"],
)
def test_a_sandboxer_that_does_not_come_up_is_reported_and_reaped(
    workdir: str, body: str, problem: str, printed: str
) -> None:
    sandboxer = fake_sandboxer(workdir, body)
    started = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        sandboxer.start(timeout=0.5)
    assert time.monotonic() - started < 10
    assert problem in str(info.value)
    assert f"it printed {printed!r}" in str(info.value)
    assert sandboxer.proc is None
    assert not sandboxer.alive()
    pid = pid_of(workdir)
    assert pid_gone(pid)
    assert not os.path.exists(f"/proc/{pid}"), "the child was not reaped"


async def test_wait_for_call_sees_calls_arrive_across_restarts(workdir: str) -> None:
    sandboxer = SandboxerProcess(os.path.join(workdir, "s.sock"), isolation="none")
    sandboxer.start()
    try:
        assert sandboxer.alive()
        assert sandboxer.call_count("Wait") == 0
        async with Channel(path=sandboxer.socket_path) as channel:
            stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: "default"})
            sandbox = SandboxPb(sandbox_id="w1", runtime=SandboxRuntimePb(name=RUNTIME))
            await stub.create(sandbox_pb.ControllerCreateRequest(sandbox_id="w1", sandbox=sandbox))
            assert sandboxer.call_count("Create") == 1
            await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="w1"))
            waiting = asyncio.create_task(
                stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="w1"), timeout=60)
            )
            await sandboxer.wait_for_call("Wait", timeout=20)
            assert not waiting.done()
            assert sandboxer.call_count("Controller/Wait") == 1
            assert sandboxer.call_count("/containerd.services.sandbox.v1.Controller/Wait") == 1
            assert sandboxer.call_count("Status") == 0
            with pytest.raises(TimeoutError, match="1 of 2 calls of Wait"):
                await sandboxer.wait_for_call("Wait", 2, timeout=0.2)

            # Killed and started again: the sandbox runs on, and the counts add up.
            sandboxer.kill()
            sandboxer.start()
        with pytest.raises((StreamTerminatedError, GRPCError)):  # the connection died with it
            await waiting
        async with Channel(path=sandboxer.socket_path) as channel:
            stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: "default"})
            waiting = asyncio.create_task(
                stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="w1"), timeout=60)
            )
            await sandboxer.wait_for_call("Wait", 2, timeout=20)
            assert not waiting.done()
            await stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="w1"))
            assert (await asyncio.wait_for(waiting, 20)).exit_status == 137
        assert sandboxer.call_count("Create") == 1
        assert sandboxer.call_count("Shutdown") == 1
    finally:
        sandboxer.stop()
    assert not sandboxer.alive()
