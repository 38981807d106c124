"""A bridge network under gVisor: runsc serves the network namespace the sandboxer set up
through CNI before creating the sandbox. The same checks as ``test_network.py``: from inside
(the address, the egress policy, a published port, a member on the same network) and from
the host (veths, leases, iptables rules, netns pins: the same counts before and after).
Traffic stays on this machine: loopback, the sandboxes and test hosts in namespaces the
tests make."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sandboxclient import (
    Bandwidth,
    Client,
    EgressPolicy,
    InvalidArgumentError,
    PortMapping,
    Sandbox,
    oci,
)
from tests.support.backends import RealContainerd
from tests.support.cgroups import cgroup_v1, sandbox_process_dir
from tests.support.constants import RUNTIME
from tests.support.containers import started
from tests.support.ctr import answering
from tests.support.network import Counts, http_get, netns_host, settled

from .test_gvisor import _cgroup_procs, _need_runsc, _runsc_processes, _status_field
from .test_network import SUBNET, answer_self, baseline, fetch

pytestmark = [pytest.mark.anyio, pytest.mark.real]

__all__ = ("baseline",)  # the fixture, shared with test_network.py


def _owner(path: str) -> int:
    return os.stat(path).st_uid


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _argv0(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


# The request's lines up to the blank one, read by the shell's ``read``, which waits for
# them; then the answer (its file is the argument).
_HANDLER = """cr=$(printf '\\r')
while IFS= read -r line && [ -n "${line%"$cr"}" ]; do :; done
cat "$1"
"""


async def serve(sb: Sandbox, body: str, port: int = 8080) -> None:
    """Serve ``body`` over HTTP on ``port`` from inside a gVisor sandbox: busybox ``nc``
    runs a shell per connection, which reads the request and answers; ready on return.

    Not busybox ``httpd``, as under runc: runsc's host-socket layer lets a ``read`` on a
    connection whose data has not come yet return at once, and ``httpd`` takes that for the
    client's end ("eof on read, closing"), answering nothing: a request that comes a moment
    after the connection does was lost. The shell's ``read`` waits for it."""
    where = f"/tmp/w{port}"
    script = (
        f"mkdir -p {where} && "
        f"printf 'HTTP/1.0 200 OK\\r\\n\\r\\n%s\\n' {body} > {where}/answer && "
        f"cat > {where}/handler.sh <<'EOF'\n{_HANDLER}EOF\n"
        f"setsid nc -ll -p {port} -e sh {where}/handler.sh {where}/answer "
        "</dev/null >/dev/null 2>&1 &\n"
        # listening once netstat shows it (nc has no other sign); at most 5 s
        f"i=0; until netstat -tln | grep -q ':{port} '; do "
        "i=$((i + 1)); [ $i -lt 500 ] || exit 1; usleep 10000; done"
    )
    done = await sb.run("sh", "-c", script)
    assert done.returncode == 0, done


def _late_get(port: int) -> bytes:
    """The whole answer to ``GET /`` on the host's ``127.0.0.1:port``, the request sent a
    moment after the connection is made (a sync helper, run in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        time.sleep(0.3)  # the condition under test: the request comes late
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _qdiscs() -> str:
    """The host's queueing disciplines (a sync helper: the event loop need not care)."""
    return subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout


@pytest.mark.cgroup2
async def test_a_gvisor_sandbox_on_the_bridge(
    real: RealContainerd, tenant: Client, baseline: Counts, tmp_path: Path, rootfs: Path
) -> None:
    _need_runsc()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text("host-a\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.html").write_text("host-b\n")
    listener = await asyncio.start_server(answer_self, "0.0.0.0", 0)  # every host address
    port = listener.sockets[0].getsockname()[1]
    try:
        with netns_host(1, tmp_path / "a") as host_a, netns_host(2, tmp_path / "b") as host_b:
            allowed = EgressPolicy(allow=[f"{host_a.address}/32", SUBNET])
            async with (
                tenant.sandbox(
                    "gnet-a",
                    egress=allowed,
                    ports=[PortMapping(8080)],
                    runtime=RUNTIME,
                    runtime_handler="gvisor",
                    host_users=True,  # runsc as the host's root (the default: below)
                ) as a,
                tenant.sandbox(
                    "gnet-b",
                    network="bridge",
                    bandwidth=Bandwidth(ingress_rate=16_000_000, egress_rate=8_000_000),
                    runtime=RUNTIME,
                    runtime_handler="gvisor",
                    host_users=True,
                ) as b,
            ):
                net_a, net_b = await a.network(), await b.network()
                assert net_a.mode == net_b.mode == "bridge"
                assert net_a.ip in ipaddress.ip_network(SUBNET)
                # gVisor's kernel serves the address CNI gave
                kernel = (await a.run("sh", "-c", "dmesg | head -n 1; ip -4 addr")).stdout
                assert b"Starting gVisor" in kernel
                assert f"{net_a.ip}/".encode() in kernel
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
                # the denials are rules, not broken routes: those places answer others
                assert await fetch(a, net_b.gateway, port) == b"host-self"
                assert await http_get(host_b.address, host_b.port) == b"host-b\n"
                # b's bandwidth is shaped on the host side of its veth, as under runc
                shaping = _qdiscs()
                assert "rate 16Mbit" in shaping
                assert "rate 8Mbit" in shaping
                # a published port reaches the server inside from the host's loopback
                assert await http_get("127.0.0.1", net_a.host_port(8080)) == b"sandbox-a\n"
                # and answers a request that comes a while after the connection
                late = await asyncio.to_thread(_late_get, net_a.host_port(8080))
                assert late.endswith(b"\r\n\r\nsandbox-a\n")
                # a member is on the same network: it reaches b as a does
                spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
                member = await a.new_container("gnet-a-m", rootfs=rootfs, spec=spec)
                async with started(member) as task:
                    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
                    got = await task.run("sh", "-c", f"{request} | nc -w 5 {net_b.ip} 8080")
                    assert got.stdout.endswith(b"sandbox-b\n")
    finally:  # closed when an assert fails too: the next test's setup sees no open socket
        listener.close()
        await listener.wait_closed()
    assert await settled(real.sandboxer.state_dir) == baseline


@pytest.mark.cgroup2
async def test_a_networked_gvisor_sandbox_in_its_user_namespace(
    real: RealContainerd, tenant: Client, baseline: Counts, rootfs: Path
) -> None:
    _need_runsc()
    listener = await asyncio.start_server(answer_self, "0.0.0.0", 0)  # every host address
    port = listener.sockets[0].getsockname()[1]
    try:
        async with tenant.sandbox(
            "gnet-u", ports=[PortMapping(80)], runtime=RUNTIME, runtime_handler="gvisor"
        ) as sb:
            net = await sb.network()
            assert net.ip in ipaddress.ip_network(SUBNET)
            # From the host: gVisor's kernel runs in the sandbox's user namespace as its
            # root, the block's first id; no gVisor process is the host's root.
            runsc = _runsc_processes("gnet-u")
            kernel = [p for p in runsc if _argv0(p) == "runsc-sandbox"]
            assert len(kernel) == 1
            first, block, size = _read(f"/proc/{kernel[0]}/uid_map").split()
            assert (first, size) == ("0", "65536")
            assert block != "0"
            assert {_status_field(p, "Uid").split()[1] for p in runsc} == {block}
            assert kernel[0] in _cgroup_procs(tenant.namespace, "gnet-u")
            # runsc, run as that id, made the cgroup of the sandbox's process (v2: the leaf
            # below the parent the sandboxer made): it is given back to root, every file of
            # it (v2: its cgroup.procs would let that id move processes in), and its parent.
            made = sandbox_process_dir(tenant.namespace, "gnet-u")
            files = [f for f in made.iterdir() if f.is_file()]
            assert {"cgroup.procs", "memory.max" if not cgroup_v1() else "tasks"} <= {
                f.name for f in files
            }
            assert {_owner(str(p)) for p in (made, made.parent, *files)} == {0}
            # Inside: the address CNI gave, a published low port, the default egress denials.
            assert f"{net.ip}/".encode() in (await sb.run("ip", "-4", "addr")).stdout
            await serve(sb, "in-userns", port=80)
            assert await http_get("127.0.0.1", net.host_port(80)) == b"in-userns\n"
            assert await fetch(sb, net.gateway, port) is None  # the host itself
            # a member runs there too, on the same network
            spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
            member = await sb.new_container("gnet-u-m", rootfs=rootfs, spec=spec)
            async with started(member) as task:
                request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
                got = await task.run("sh", "-c", f"{request} | nc -w 5 {net.ip} 80")
                assert got.stdout.endswith(b"in-userns\n")
    finally:
        listener.close()
        await listener.wait_closed()
    assert _runsc_processes("gnet-u") == []
    assert await settled(real.sandboxer.state_dir) == baseline


async def test_a_networked_gvisor_sandbox_with_a_user_namespace_of_its_own_is_refused(
    tenant: Client,
) -> None:
    _need_runsc()
    ids = [oci.IDMapping(0, 300_000, 65536)]
    spec = oci.generate_spec(oci.with_user_namespace(ids, ids))
    with pytest.raises(InvalidArgumentError, match=r"user namespace of its own"):
        await tenant.new_sandbox(
            "gnet-o", spec=spec, network="bridge", runtime=RUNTIME, runtime_handler="gvisor"
        )
    assert await tenant.list_sandboxes() == []


async def test_a_gvisor_network_outlives_a_sandboxer_kill_and_a_failed_start_leaves_nothing(
    real: RealContainerd, tenant: Client, baseline: Counts
) -> None:
    _need_runsc()
    sb = await tenant.new_sandbox(  # in its user namespace: runsc as the block's root
        "gnet-k", ports=[PortMapping(8080)], runtime=RUNTIME, runtime_handler="gvisor"
    )
    await sb.start()
    await serve(sb, "still-here")
    host_port = (await sb.network()).host_port(8080)
    real.sandboxer.kill()
    assert await http_get("127.0.0.1", host_port) == b"still-here\n"  # no sandboxer needed
    real.sandboxer.start()
    await answering(sb)
    assert (await sb.network()).host_port(8080) == host_port
    await sb.shutdown()
    assert await settled(real.sandboxer.state_dir) == baseline
    # A Start whose port was taken after Create fails before runsc creates anything, and
    # leaves nothing.
    taker = socket.create_server(("127.0.0.1", 0))
    port = taker.getsockname()[1]
    taker.close()
    sb = await tenant.new_sandbox(
        "gnet-f",
        ports=[PortMapping(80, host_port=port)],
        runtime=RUNTIME,
        runtime_handler="gvisor",
        host_users=True,
    )
    taker = socket.create_server(("127.0.0.1", port))
    try:
        with pytest.raises(InvalidArgumentError, match=r"ports\[0\]\.host_port"):
            await sb.start()
        assert await settled(real.sandboxer.state_dir) == baseline
    finally:
        taker.close()
    await sb.shutdown()
    assert await settled(real.sandboxer.state_dir) == baseline
