"""A real containerd killed and restarted under a live Client and a pending wait."""

from __future__ import annotations

import asyncio

import pytest

from sandboxclient import Client

from .conftest import PLUGIN_NAME, RealContainerd, new_namespace

pytestmark = [pytest.mark.anyio, pytest.mark.real]

RUNTIME = "io.containerd.runc.v2"


@pytest.fixture
def real(real_containerd: RealContainerd) -> RealContainerd:
    real_containerd.ensure_running()
    return real_containerd


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
        channel = await sb.wait()
        await asyncio.sleep(0.2)
        real.daemon.kill()
        await asyncio.sleep(0.5)
        assert not channel.done()
        real.daemon.restart()
        status = await asyncio.wait_for(channel.get(), 30)
        assert status.error is None, status.error
        assert status.code == 5
        await sb.shutdown()
