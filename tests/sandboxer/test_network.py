"""Sandboxes on a CNI network, under a real containerd with the Python sandboxer, checked
from inside and from the host. Traffic stays on this machine: loopback, the sandboxes, and
test hosts in network namespaces the tests make."""

from __future__ import annotations

import pytest

from sandboxclient import Client
from tests.sandboxer.netsupport import require_cni

pytestmark = [pytest.mark.anyio, pytest.mark.real]


@pytest.fixture(autouse=True)
def _cni() -> None:
    require_cni()


async def test_smoke(tenant: Client) -> None:
    async with tenant.sandbox("net1", network="bridge") as sb:
        done = await sb.run("ip", "-o", "addr")
        print(done.stdout.decode())
        print(await sb.network())
        done = await sb.run("ls", "/sys/class/net")
        print(done)
