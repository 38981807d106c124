"""Sandboxes on a CNI network, under a real containerd with the Python sandboxer, checked
from inside and from the host. Traffic stays on this machine: loopback, the sandboxes, and
test hosts in network namespaces the tests make (10.231.<n>.2, behind the host)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from sandboxclient import (
    Bandwidth,
    Client,
    EgressPolicy,
    FailedPreconditionError,
    InvalidArgumentError,
    PortMapping,
    Sandbox,
    oci,
)
from sandboxclient._cli import build_parser
from sandboxclient._cli._netopts import network_options
from sandboxclient._cli._sandboxes import cmd_run, cmd_status
from sandboxclient._facts._network import NETWORK_ANNOTATION
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer
from sandboxclient.sandboxer._egress import DENIED_BY_DEFAULT
from sandboxclient.sandboxer._netconf import default_network_list
from tests.sandboxer.test_sandboxer_security import controller_stub, create_request
from tests.support.backends import RealContainerd
from tests.support.constants import NS
from tests.support.containers import started
from tests.support.ctr import answering, nothing_left
from tests.support.network import (
    Counts,
    counts,
    http_get,
    netns_host,
    network_list_in_use,
    require_cni,
    settled,
)

pytestmark = [pytest.mark.anyio, pytest.mark.real]

SUBNET = "10.213.0.0/16"
_warm: list[bool] = []


@pytest.fixture
async def baseline(real: RealContainerd, tenant: Client) -> Counts:
    """The host's counts before the test, which must be the same after it. The bridge and
    portmap's shared chains are made by the first bridge sandbox with a port and stay (as
    under CRI): one such sandbox goes first, once."""
    require_cni()
    if not _warm:
        async with tenant.sandbox("warm", ports=[PortMapping(80)]):
            pass
        _warm.append(True)
    return await settled(real.sandboxer.state_dir)


async def serve(sb: Sandbox, body: str, port: int = 8080) -> None:
    """Serve ``body`` over HTTP on ``port`` from inside the sandbox (busybox httpd)."""
    script = f"mkdir -p /tmp/w && echo {body} > /tmp/w/index.html && httpd -p {port} -h /tmp/w"
    done = await sb.run("sh", "-c", script)
    assert done.returncode == 0, done


async def fetch(sb: Sandbox, address: object, port: int) -> bytes | None:
    """The body ``GET /`` from inside the sandbox answers, or None when it cannot connect
    (busybox nc: its static wget looks the service up through NSS, which crashes)."""
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
    done = await sb.run("sh", "-c", f"{request} | nc -w 5 {address} {port}")
    if done.returncode != 0 or not done.stdout:
        return None
    return done.stdout.split(b"\r\n\r\n", 1)[-1].strip()


async def answer_self(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP answer ``host-self`` (the host's own server)."""
    await reader.readline()
    writer.write(b"HTTP/1.0 200 OK\r\n\r\nhost-self\n")
    await writer.drain()
    writer.close()


def host_public_address() -> str | None:
    """An address of this host outside every range denied by default, if it has one."""
    denied = [ipaddress.ip_network(n) for n in DENIED_BY_DEFAULT]
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True).stdout)
    for link in links:
        for info in link.get("addr_info", []):
            address = ipaddress.ip_address(info["local"])
            if not any(address in n for n in denied):
                return str(address)
    return None


async def test_a_sandbox_without_a_network_has_only_lo(tenant: Client) -> None:
    require_cni()
    async with tenant.sandbox("net-none") as sb:
        assert (await sb.run("ls", "/sys/class/net")).stdout.split() == [b"lo"]
        network = await sb.network()
        assert (network.mode, network.addresses, network.ports) == ("none", (), ())


async def test_egress_between_sandboxes_test_hosts_and_the_host(
    real: RealContainerd, tenant: Client, baseline: Counts, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text("host-a\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.html").write_text("host-b\n")
    listener = await asyncio.start_server(answer_self, "0.0.0.0", 0)  # every host address
    port = listener.sockets[0].getsockname()[1]
    with netns_host(1, tmp_path / "a") as host_a, netns_host(2, tmp_path / "b") as host_b:
        allowed = EgressPolicy(allow=[f"{host_a.address}/32", SUBNET])
        async with (
            tenant.sandbox("net-a", egress=allowed) as a,
            tenant.sandbox("net-b", network="bridge") as b,
        ):
            net_a, net_b = await a.network(), await b.network()
            assert net_a.mode == net_b.mode == "bridge"
            assert net_a.ip in ipaddress.ip_network(SUBNET)
            assert net_a.ip != net_b.ip
            assert (await a.run("ls", "/sys/class/net")).stdout.split() == [b"eth0", b"lo"]
            await serve(b, "sandbox-b")
            await serve(a, "sandbox-a")
            # a's allow-list: test host A and the bridge's peers, not test host B
            assert await fetch(a, host_a.address, host_a.port) == b"host-a"
            assert await fetch(a, host_b.address, host_b.port) is None
            assert await fetch(a, net_b.ip, 8080) == b"sandbox-b"
            # b's default policy: nothing private (peers, test hosts), nor the host itself
            assert await fetch(b, host_a.address, host_a.port) is None
            assert await fetch(b, net_a.ip, 8080) is None
            assert await fetch(b, net_b.gateway, port) is None
            public = host_public_address()
            if public is not None:
                assert await fetch(b, public, port) is None
                assert await fetch(a, public, port) is None  # not in a's allow-list either
            # the denials are rules, not broken routes: those places answer others
            assert await fetch(a, net_b.gateway, port) == b"host-self"  # a allows the subnet
            assert await http_get(host_b.address, host_b.port) == b"host-b\n"
    listener.close()
    await listener.wait_closed()
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_a_published_port_reaches_a_server_inside_from_loopback(
    real: RealContainerd, tenant: Client, baseline: Counts, rootfs: Path
) -> None:
    async with tenant.sandbox("net-p", ports=[PortMapping(8080)]) as sb:
        network = await sb.network()
        (published,) = network.ports
        assert (published.container_port, published.host_ip) == (8080, "127.0.0.1")
        host_port = network.host_port(8080)
        await serve(sb, "from-inside")
        assert await http_get("127.0.0.1", host_port) == b"from-inside\n"
        checked = (await sb.network(check=True)).check
        assert checked is not None
        assert checked.ok, checked
        got = [(p.plugin, p.outcome) for p in checked.plugins]
        # Debian's 1.1.1 portmap fails CHECK without IPv6; no bandwidth: it shapes nothing
        assert got == [("bridge", "ok"), ("portmap", "skipped")]
        assert (await sb.network()).check is None  # only when asked: it runs the plugins
        shown = (await cmd_status(tenant, "net-p")).text
        assert re.search(rf"\nPORT: +127\.0\.0\.1:{host_port}->8080/tcp\n", shown), shown
        line = rf"\nNETWORK: +bridge {network.addresses[0]} via {network.gateway}\n"
        assert re.search(line, shown), shown
        assert re.search(r"\nCHECK: +ok \(bridge ok, portmap skipped\)\n", shown), shown
        with pytest.raises(OSError, match="Address already in use") as caught:
            socket.create_server(("127.0.0.1", host_port))  # held while the sandbox lives
        assert caught.value.errno == errno.EADDRINUSE
        # a member shares the sandbox's network, as a pod's containers do
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
        member = await sb.new_container("net-p-m", rootfs=rootfs, spec=spec)
        mac = (await sb.run("cat", "/sys/class/net/eth0/address")).stdout
        async with started(member) as task:
            assert (await task.run("cat", "/sys/class/net/eth0/address")).stdout == mac
        await sb.stop(grace=5)
        stopped = await sb.network()
        assert (stopped.mode, stopped.addresses, stopped.ports) == ("bridge", (), ())
        assert await settled(real.sandboxer.state_dir) == baseline
        socket.create_server(("127.0.0.1", host_port)).close()  # free again
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_bandwidth_limits_shape_the_sandboxes_traffic_on_the_host(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    limits = Bandwidth(ingress_rate=16_000_000, egress_rate=8_000_000)
    async with tenant.sandbox("net-bw", ports=[PortMapping(8080)], bandwidth=limits) as sb:
        shaping = _out("tc", "qdisc", "show")
        assert "rate 16Mbit" in shaping, shaping  # into the sandbox: its host-side veth
        assert "rate 8Mbit" in shaping, shaping  # out of it: the ifb its veth redirects to
        script = (
            "mkdir -p /tmp/w && head -c 1500000 /dev/zero > /tmp/w/big && httpd -p 8080 -h /tmp/w"
        )
        assert (await sb.run("sh", "-c", script)).returncode == 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        body = await http_get("127.0.0.1", (await sb.network()).host_port(8080), path="/big")
        took = loop.time() - began
        assert len(body) == 1_500_000
        assert took >= 1.0, took  # 12 Mbit out at 8 Mbit/s, less the burst: about 1.4 s
        checked = (await sb.network(check=True)).check
        assert checked is not None
        assert [p.outcome for p in checked.plugins] == ["ok", "skipped", "ok"]  # it shapes
        # CHECK sees what is wrong: the sandbox's default route taken away, from the host
        pid = (await sb.status()).pid
        enter = ["nsenter", f"--net=/proc/{pid}/ns/net"]
        _out(*enter, "ip", "route", "del", "default")
        broken = (await sb.network(check=True)).check
        assert broken is not None
        assert not broken.ok
        assert [p.outcome for p in broken.plugins] == ["failed", "not run", "not run"]
        assert "CNI plugin bridge CHECK failed" in broken.plugins[0].detail
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_a_start_whose_port_was_taken_fails_and_leaves_nothing(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    taker = socket.create_server(("127.0.0.1", 0))
    port = taker.getsockname()[1]
    taker.close()
    sb = await tenant.new_sandbox("net-f", ports=[PortMapping(80, host_port=port)])
    taker = socket.create_server(("127.0.0.1", port))
    try:
        with pytest.raises(InvalidArgumentError, match=r"ports\[0\]\.host_port"):
            await sb.start()
        assert await settled(real.sandboxer.state_dir) == baseline
    finally:
        taker.close()
    await sb.shutdown()
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_a_start_whose_plugin_fails_is_refused_by_name_and_leaves_nothing(
    real: RealContainerd, tenant: Client, baseline: Counts, tmp_path: Path
) -> None:
    # In its user namespace a sandbox's network is ADDed while its task is created (the
    # task joins it by path); with the host's users, once the task is. Either way a plugin
    # failing fails the Start by name, and nothing is left.
    listed = default_network_list()
    listed["plugins"].append({"type": "tuning", "sysctl": {"net.nope.x": "1"}})
    with network_list_in_use(real.sandboxer, tmp_path / "cni", listed) as process:
        for host_users in (False, True):
            sb = await tenant.new_sandbox(
                f"net-p{int(host_users)}", network="bridge", host_users=host_users
            )
            try:
                with pytest.raises(FailedPreconditionError, match="CNI plugin tuning ADD failed"):
                    await sb.start()
                assert await settled(process.state_dir) == baseline
            finally:
                await sb.shutdown()
    assert await settled(real.sandboxer.state_dir) == baseline


def _out(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _asking(value: object) -> dict[str, object]:
    text = value if isinstance(value, str) else json.dumps(value)
    return {"annotations": {NETWORK_ANNOTATION: text}}


async def test_what_cannot_be_given_is_refused_by_name_at_create(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    with pytest.raises(ValueError, match="network='wifi'"):
        await tenant.new_sandbox("net-r", network="wifi")
    with pytest.raises(ValueError, match=r"EgressPolicy.allow\[0\]"):
        EgressPolicy(allow=["10.0.0.300/8"])
    with pytest.raises(ValueError, match="ports need network='bridge'"):
        await tenant.new_sandbox("net-r", network="none", ports=[PortMapping(80)])
    # the sandboxer's own refusals, whatever the client checked
    refused = {
        "network 'wifi'": _asking({"mode": "wifi"}),
        r"egress: EgressPolicy.allow\[0\]": _asking({"mode": "bridge", "egress": {"allow": ["x"]}}),
        r"ports\[0\].host_ip 10.99.99.99 is not an address of this host": _asking(
            {"mode": "bridge", "ports": [{"container_port": 80, "host_ip": "10.99.99.99"}]}
        ),
        "unknown fields: colour": _asking({"mode": "bridge", "colour": "red"}),
        "CAP_NET_ADMIN": {
            **_asking("bridge"),
            "process": {"capabilities": {"bounding": ["CAP_NET_ADMIN"]}},
        },
    }
    for message, spec in refused.items():
        with pytest.raises(InvalidArgumentError, match=message):
            await tenant.new_sandbox("net-r", spec=spec)
    taken = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(InvalidArgumentError, match=r"ports\[0\]\.host_port: tcp port"):
        await tenant.new_sandbox("net-r", ports=[PortMapping(80, host_port=taken.getsockname()[1])])
    taken.close()
    assert await tenant.list_sandboxes() == []
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_a_networked_sandbox_outlives_a_sandboxer_kill_and_is_torn_down_after(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    sb = await tenant.new_sandbox("net-k", ports=[PortMapping(8080)])
    await sb.start()
    await serve(sb, "still-here")
    host_port = (await sb.network()).host_port(8080)
    real.sandboxer.kill()
    # the kernel keeps forwarding while no sandboxer runs
    assert await http_get("127.0.0.1", host_port) == b"still-here\n"
    real.sandboxer.start()
    await answering(sb)
    assert (await sb.network()).host_port(8080) == host_port
    with pytest.raises(OSError, match="Address already in use"):
        socket.create_server(("127.0.0.1", host_port))  # held again by the new sandboxer
    assert await http_get("127.0.0.1", host_port) == b"still-here\n"
    await sb.shutdown()
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_a_sandboxer_without_a_state_directory_tears_its_networks_down_on_close(
    real: RealContainerd, baseline: Counts, workdir: str
) -> None:
    controller = ContainerSandboxer(containerd=real.daemon.address)
    request = {"mode": "bridge", "ports": [{"container_port": 80}]}
    async with controller_stub(controller, workdir) as stub:
        await stub.create(create_request("net-mem", _asking(request)))
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="net-mem"))
        now = counts()
        assert (now.veths, now.leases, now.netns_mounts) == (
            baseline.veths + 1,
            baseline.leases + 1,
            baseline.netns_mounts + 1,
        )
    # controller_stub closed it: its sandboxes, containers and networks went with it
    assert await settled(real.sandboxer.state_dir) == baseline
    nothing_left(real, NS)


async def test_a_sandbox_started_again_at_once_gets_its_port_after_the_old_del(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    # Shutdown returns before its DEL is done; a Start wanting the same id and host port
    # waits for it (test_netteardown.py shows the wait), and serves from its new address.
    taker = socket.create_server(("127.0.0.1", 0))
    port = taker.getsockname()[1]
    taker.close()
    for body in ("first-life", "second-life"):
        async with tenant.sandbox("net-again", ports=[PortMapping(8080, host_port=port)]) as sb:
            await serve(sb, body)
            assert await http_get("127.0.0.1", port) == f"{body}\n".encode()
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_a_del_cut_short_by_a_sandboxer_kill_is_finished_by_the_next(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    sb = await tenant.new_sandbox("net-cut", ports=[PortMapping(8080)])
    await sb.start()
    await sb.shutdown()
    pending = os.path.join(real.sandboxer.state_dir, "cni", "pending")
    assert [os.path.splitext(n)[1] for n in os.listdir(pending)] == [".json"]  # DEL under way
    real.sandboxer.kill()
    real.sandboxer.start()
    # the next sandboxer's first call in its event loop starts what was left
    other = await tenant.new_sandbox("net-cut-2")
    assert await settled(real.sandboxer.state_dir) == baseline
    await other.shutdown()


async def test_sandboxctl_runs_a_sandbox_on_the_network_its_options_ask_for(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    listener = await asyncio.start_server(answer_self, "0.0.0.0", 0)  # every host address
    port = listener.sockets[0].getsockname()[1]
    argv = ["run", "net-cli", "-p", "127.0.0.1::8080", "--allow", SUBNET,
            "--ingress-rate", "16M", "--", "sleep", "600"]  # fmt: skip
    args = build_parser().parse_args(argv)
    await cmd_run(tenant, args.id, args.cmd, network=network_options(args))
    sb = await tenant.load_sandbox("net-cli")
    try:
        network = await sb.network()
        assert network.mode == "bridge"
        await serve(sb, "from-cli")
        assert await http_get("127.0.0.1", network.host_port(8080)) == b"from-cli\n"
        # --allow the subnet: the host's address on the bridge answers, as allowed
        assert await fetch(sb, network.gateway, port) == b"host-self"
        assert "rate 16Mbit" in _out("tc", "qdisc", "show")
        shown = (await cmd_status(tenant, "net-cli")).text
        assert f"127.0.0.1:{network.host_port(8080)}->8080/tcp" in shown
    finally:
        await sb.shutdown()
        listener.close()
        await listener.wait_closed()
    assert await settled(real.sandboxer.state_dir) == baseline
