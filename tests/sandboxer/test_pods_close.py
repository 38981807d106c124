"""Closing the isolating sandboxer's connections to containerd: none is left open, neither
one a Shutdown still under way makes after the close nor the others when one fails to close.
(The Starts in flight end before the close: ``test_start_close.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient._plumbing._connection import ClientState
from sandboxclient.sandboxer._pods import PodRuntime
from sandboxclient.testing import FakeContainerd
from tests.support.constants import NS

pytestmark = pytest.mark.anyio


def left_open(runtime: PodRuntime) -> list[object]:
    """The runtime's Clients and connections not closed."""
    clients = [c for c in runtime._clients.values() if c.state is not ClientState.CLOSED]
    records = [c for c, _ in runtime._records.values() if c.state is not ClientState.CLOSED]
    return [*clients, *records]


async def test_a_shutdown_listing_after_the_close_is_refused_and_opens_nothing() -> None:
    async with FakeContainerd() as fake:
        runtime = PodRuntime(fake.address, timeout=10)

        closed = asyncio.Event()

        async def shutdown() -> None:
            with contextlib.suppress(GRPCError):  # its kill, cut short by the close
                await runtime.kill(NS, "sb1", signal.SIGKILL, all=True)
            await closed.wait()
            await runtime.containers(NS)  # then its listing, the close done meanwhile

        fake.stall = True
        try:
            under_way = asyncio.ensure_future(shutdown())
            await fake.wait_for_call("Containers/Get")  # the kill's first call, held
            await runtime.aclose()
        finally:
            fake.stall = False
        closed.set()
        with pytest.raises(GRPCError) as refused:
            await asyncio.wait_for(under_way, 10)
        assert refused.value.status is Status.UNAVAILABLE
        assert "closed" in (refused.value.message or "")
        assert left_open(runtime) == []


async def test_one_connection_failing_to_close_does_not_keep_the_others_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeContainerd() as fake:
        runtime = PodRuntime(fake.address, timeout=10)
        namespaces = [f"{NS}-{n}" for n in range(3)]
        for namespace in namespaces:
            await runtime.containers(namespace)
            await runtime.status(namespace, "sb1")
        first = runtime._clients[namespaces[0]]
        closed_for_real = first.aclose

        async def fails() -> None:
            await closed_for_real()
            raise RuntimeError("the first close failed")

        monkeypatch.setattr(first, "aclose", fails)
        others = [*runtime._clients.values()][1:] + [c for c, _ in runtime._records.values()]
        with pytest.raises(RuntimeError, match="the first close failed"):
            await runtime.aclose()
        assert [c.state for c in others] == [ClientState.CLOSED] * 5
