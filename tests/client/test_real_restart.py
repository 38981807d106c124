"""A real containerd killed and restarted under a live Client and a pending wait."""

from __future__ import annotations

import asyncio

import pytest

from sandboxclient import Client, UnavailableError
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.constants import RUNTIME

pytestmark = [pytest.mark.anyio, pytest.mark.real]


async def test_the_same_client_works_after_a_daemon_restart(real: RealContainerd) -> None:
    async with Client(
        real.daemon.address, namespace=new_namespace(), sandboxer=PLUGIN_NAME, timeout=20
    ) as client:
        sb = await client.new_sandbox("rs1", runtime=RUNTIME)
        real.daemon.kill()
        real.daemon.restart()
        assert [s.id for s in await client.list_sandboxes()] == ["rs1"]
        await sb.shutdown()


async def test_a_wait_survives_a_daemon_kill_and_restart(real: RealContainerd) -> None:
    async with Client(
        real.daemon.address, namespace=new_namespace(), sandboxer=PLUGIN_NAME, timeout=20
    ) as client:
        sb = await client.new_sandbox(
            "rs2", runtime=RUNTIME, spec={"process": {"args": ["sh", "-c", "sleep 2; exit 5"]}}
        )
        await sb.start()
        seen = real.sandboxer.call_count("Wait")
        channel = await sb.wait()
        await real.sandboxer.wait_for_call("Wait", seen + 1)  # the Wait is in flight
        real.daemon.kill()
        # Once a call has seen the daemon gone, the Wait's stream has ended too; the
        # channel must still be waiting (retrying), not done with an error.
        with pytest.raises(UnavailableError):
            await client.list_sandboxes()
        await asyncio.sleep(0)
        assert not channel.done()
        real.daemon.restart()
        status = await asyncio.wait_for(channel.get(), 30)
        assert status.error is None, status.error
        assert status.returncode == 5
        await sb.shutdown()
