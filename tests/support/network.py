"""What the network tests share: the CNI plugins' presence, the host's counts of what a
network leaves (veths, leases, iptables rules and chains, netns mounts), test hosts in
network namespaces the tests make, and HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandboxclient.sandboxer._cni import DEFAULT_BIN_DIRS, find_plugin
from sandboxclient.sandboxer._podnet import DEFAULT_NETWORK_NAME
from sandboxclient.testing._plugged import SandboxerProcess

LEASES = Path("/var/lib/cni/networks", DEFAULT_NETWORK_NAME)
PLUGINS = ("bridge", "host-local", "portmap", "loopback", "bandwidth")


def require_cni() -> None:
    """Skip (fail under SANDBOXCLIENT_REQUIRE_CONTAINERD=1, as in CI) without the plugins."""
    missing = [p for p in PLUGINS if find_plugin(p, DEFAULT_BIN_DIRS) is None]
    tools = ("iptables-save", "ip6tables-save", "ip", "nsenter", "tc")
    missing += [t for t in tools if not shutil.which(t)]
    if missing:
        reason = f"missing {', '.join(missing)}: run scripts/install-cni.sh (make containerd)"
        if os.environ.get("SANDBOXCLIENT_REQUIRE_CONTAINERD") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _out(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


_MODULE_IFB = re.compile(r"ifb[0-9]+")
"""The ifb module's own devices, made as it loads (``numifbs``, 2 by default): a host
where the first shaped network's setup loads it has them after that test, not before."""


@dataclass(frozen=True)
class Counts:
    """What the sandboxes' networks hold on the host."""

    veths: int
    leases: int  # IPv4 and IPv6
    rules: int  # iptables and ip6tables
    chains: int
    netns_mounts: int
    ifbs: int
    shapers: int


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def counts() -> Counts:
    """The host's counts now."""
    veths = len(_out("ip", "-o", "link", "show", "type", "veth").splitlines())
    leases = 0
    if LEASES.is_dir():
        leases = sum(1 for p in LEASES.iterdir() if _is_address(p.name))
    saved = _out("iptables-save").splitlines() + _out("ip6tables-save").splitlines()
    rules = sum(1 for line in saved if line.startswith("-A "))
    chains = sum(1 for line in saved if line.startswith(":"))
    with open("/proc/self/mountinfo") as f:
        netns = sum(1 for line in f if " nsfs " in line and "net:[" in line)
    ifbs = sum(
        not _MODULE_IFB.fullmatch(line.split(": ")[1])
        for line in _out("ip", "-o", "link", "show", "type", "ifb").splitlines()
    )
    shapers = sum(1 for line in _out("tc", "qdisc", "show").splitlines() if " tbf " in line)
    return Counts(veths, leases, rules, chains, netns, ifbs, shapers)


async def settled(state_dir: str, timeout: float = 30.0) -> Counts:
    """The host's counts once the sandboxer keeping its state in ``state_dir`` has no
    network DEL pending: Stop and Shutdown return before the DEL they start is done. (The
    sandboxer is another process: its pending directory is all there is to watch.)"""
    return await asyncio.to_thread(_settled, Path(state_dir, "cni", "pending"), timeout)


def _settled(pending: Path, timeout: float) -> Counts:
    deadline = time.monotonic() + timeout
    while pending.is_dir() and any(p.suffix == ".json" for p in pending.iterdir()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"network teardowns still pending: {sorted(pending.iterdir())}")
        time.sleep(0.01)
    return counts()


@dataclass
class NetnsHost:
    """A network namespace with one veth to the host and an HTTP server on it."""

    name: str
    address: str
    port: int
    address6: str = ""
    """Its IPv6 address, when made with one."""


@contextlib.contextmanager
def network_list_in_use(
    process: SandboxerProcess, conf: Path, listed: Mapping[str, Any]
) -> Iterator[SandboxerProcess]:
    """The sandboxer ``process`` started again with ``listed`` as its network list (the one
    file of a ``--cni-conf-dir`` made at ``conf``), and again as it was after."""
    conf.mkdir()
    (conf / "test.conflist").write_text(json.dumps(listed))
    original = process.command
    process.kill()
    process.command = (*original, "--cni-conf-dir", str(conf))
    process.start()
    try:
        yield process
    finally:
        process.kill()
        process.command = original
        process.start()


@contextlib.contextmanager
def netns_host(index: int, root: Path, *, ipv6: bool = False) -> Iterator[NetnsHost]:
    """A test host at ``10.231.<index>.2`` behind the host's ``10.231.<index>.1`` (with
    ``ipv6``, also at ``fd5b:c1e0:231:<index>::2`` behind ``...::1``), serving ``root`` over
    HTTP on port 8000; removed after."""
    name = f"sbxt{index}-{uuid.uuid4().hex[:6]}"
    outer, inner = f"vt{index}{name[-6:]}h", f"vt{index}{name[-6:]}n"
    host_ip, address = f"10.231.{index}.1", f"10.231.{index}.2"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for args in (
            ["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
            ["ip", "link", "set", inner, "netns", name],
            ["ip", "addr", "add", f"{host_ip}/24", "dev", outer],
            ["ip", "link", "set", outer, "up"],
            ["ip", "-n", name, "addr", "add", f"{address}/24", "dev", inner],
            ["ip", "-n", name, "link", "set", inner, "up"],
            ["ip", "-n", name, "link", "set", "lo", "up"],
        ):
            subprocess.run(args, check=True)
        address6 = f"fd5b:c1e0:231:{index}::2" if ipv6 else ""
        if ipv6:  # nodad: usable at once, not tentative for a second
            subprocess.run(
                ["ip", "addr", "add", f"fd5b:c1e0:231:{index}::1/64", "dev", outer, "nodad"],
                check=True,
            )
            subprocess.run(
                ["ip", "-n", name, "addr", "add", f"{address6}/64", "dev", inner, "nodad"],
                check=True,
            )
        # Without -f it listens before it forks into the background: ready on return.
        serve = ["/bin/busybox", "httpd", "-p", "8000", "-h", str(root)]
        subprocess.run(["ip", "netns", "exec", name, *serve], check=True)
        yield NetnsHost(name, address, 8000, address6)
    finally:
        for pid in _out("ip", "netns", "pids", name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "link", "del", outer], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False)


async def http_get(host: str, port: int, timeout: float = 10.0, path: str = "/") -> bytes:
    """The body of ``GET path`` from ``host:port`` (HTTP/1.0), from the host."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
    return answer.split(b"\r\n\r\n", 1)[-1]
