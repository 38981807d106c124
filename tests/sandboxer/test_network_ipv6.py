"""A dual-stack bridge (a unique-local IPv6 range beside the IPv4 one), under a real
containerd with the Python sandboxer started again with such a network list: IPv6
addresses, and IPv6 egress held to the same defaults as IPv4's. Traffic stays on this
machine: loopback, the sandboxes, and test hosts in network namespaces the tests make
(fd5b:c1e0:231:<n>::2, behind the host)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client, EgressPolicy, PortMapping
from sandboxclient.sandboxer._netconf import DUAL_STACK_SUBNET6, default_network_list
from tests.sandboxer.test_network import answer_self, fetch, serve
from tests.support.backends import RealContainerd
from tests.support.network import (
    Counts,
    http_get,
    netns_host,
    network_list_in_use,
    require_cni,
    settled,
)

pytestmark = [pytest.mark.anyio, pytest.mark.real]


@pytest.fixture
async def dual_stack(real: RealContainerd, tenant: Client, tmp_path: Path) -> AsyncIterator[Counts]:
    """The sandboxer started again with a dual-stack network list (then with its own
    again); the host's counts once one dual-stack sandbox made the shared IPv6 chains.
    The bridge keeps its IPv6 address after, and the host its IPv6 forwarding, which the
    bridge plugin turns on (as it does IPv4's)."""
    require_cni()
    listed = default_network_list(subnet6=DUAL_STACK_SUBNET6)
    with network_list_in_use(real.sandboxer, tmp_path / "cni", listed) as process:
        async with tenant.sandbox("warm6", ports=[PortMapping(80)]):
            pass
        yield await settled(process.state_dir)


async def test_a_dual_stack_bridge_gives_ipv6_held_to_the_same_egress_defaults(
    real: RealContainerd, tenant: Client, dual_stack: Counts, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.html").write_text(f"host-{name}\n")
    listener = await asyncio.start_server(answer_self, "::", 0)  # every host address
    port = listener.sockets[0].getsockname()[1]
    subnet6 = ipaddress.ip_network(DUAL_STACK_SUBNET6)
    with (
        netns_host(1, tmp_path / "a", ipv6=True) as host_a,
        netns_host(2, tmp_path / "b", ipv6=True) as host_b,
    ):
        allowed = EgressPolicy(allow=[f"{host_a.address6}/128", DUAL_STACK_SUBNET6])
        async with (
            tenant.sandbox("net6-a", egress=allowed, ports=[PortMapping(8080)]) as a,
            tenant.sandbox("net6-b", network="bridge") as b,
        ):
            net_a, net_b = await a.network(), await b.network()
            a6 = [i.ip for i in net_a.addresses if i.version == 6]
            b6 = [i.ip for i in net_b.addresses if i.version == 6]
            assert len(a6) == len(b6) == 1
            assert a6[0] in subnet6
            assert b6[0] in subnet6
            assert net_a.ip is not None
            assert net_a.ip.version == 4  # IPv4 first, as before
            await serve(a, "sandbox-a")
            await serve(b, "sandbox-b")
            # a's allow-list: test host A over IPv6, and its peers; not test host B
            assert await fetch(a, host_a.address6, host_a.port) == b"host-a"
            assert await fetch(a, host_b.address6, host_b.port) is None
            assert await fetch(a, b6[0], 8080) == b"sandbox-b"
            # b's default policy: no unique-local address (test hosts, peers), not the
            # host's own (its address on the bridge, every other one of its addresses)
            assert await fetch(b, host_a.address6, host_a.port) is None
            assert await fetch(b, a6[0], 8080) is None
            gateway6 = next(subnet6.hosts())  # the bridge's address: the host's
            assert await fetch(b, gateway6, port) is None
            assert await fetch(a, gateway6, port) == b"host-self"  # a allows the subnet
            for link in json.loads(_ip("-j", "-6", "addr")):
                for info in link.get("addr_info", []):
                    if info.get("scope") == "global" and info["local"] != str(gateway6):
                        assert await fetch(b, info["local"], port) is None, info
            # the published port still reaches a over IPv4 from loopback
            assert await http_get("127.0.0.1", net_a.host_port(8080)) == b"sandbox-a\n"
            checked = (await a.network(check=True)).check
            assert checked is not None
            assert checked.ok, checked
    listener.close()
    await listener.wait_closed()
    assert await settled(real.sandboxer.state_dir) == dual_stack


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout
