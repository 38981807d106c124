"""What a network costs a sandbox's whole life, measured side by side in alternating rounds.

``new_sandbox`` + ``start`` + ``run("true")`` + ``shutdown`` of a sandbox with
``network="bridge"`` and one published port (a free host port picked) against the same with
no network (``lo`` only). Each round runs one of each, the order alternating; each life is
timed alone. The difference is CNI's: the plugins' ADD (bridge, host-local, portmap,
bandwidth, loopback), pinning the namespace, the egress rules, holding the port.

Shutdown returns before the network's DEL is done (the sandboxer finishes it in the
background): after each bridge life the bench waits, untimed, until the sandboxer's pending
directory is empty, so that no DEL runs during the next timed life, and reports that wait
as ``background``.

:func:`plugin_breakdown` times each plugin's ADD and DEL (and the egress rules) of the
default network list alone, run by the sandboxer's own CNI module in a network namespace
the bench makes: where the time goes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sandboxclient import Client, PortMapping
from sandboxclient.sandboxer._cni import DEFAULT_BIN_DIRS, network_add, network_del
from sandboxclient.sandboxer._cni import parse_network_list as parse
from sandboxclient.sandboxer._egress import apply_egress
from sandboxclient.sandboxer._podnet import default_network_list

__all__ = ("NetworkResult", "network_cost", "plugin_breakdown")


@dataclass(frozen=True)
class NetworkResult:
    """Median seconds of a sandbox's life, with a bridge network and a port, and without;
    the median DEL still running after Shutdown returned; each plugin's median time."""

    rounds: int
    bridge: float
    none: float
    background: float
    plugins: dict[str, float] = field(default_factory=dict)

    @property
    def added(self) -> float:
        """Seconds the network adds, at the median."""
        return self.bridge - self.none


def _wait_settled(pending: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while pending.is_dir() and any(p.suffix == ".json" for p in pending.iterdir()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"network teardowns still pending in {pending}")
        time.sleep(0.002)


async def network_cost(
    address: str, *, namespace: str, sandboxer: str, rounds: int, state_dir: str
) -> NetworkResult:
    """Time ``rounds`` lives of each kind (see the module's docstring); ``state_dir`` is the
    sandboxer's."""
    times: dict[str, list[float]] = {"bridge": [], "none": [], "background": []}
    pending = Path(state_dir, "cni", "pending")
    async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client:

        async def life(kind: str, index: int) -> None:
            ports = [PortMapping(8080)] if kind == "bridge" else None
            began = time.perf_counter()
            sb = await client.new_sandbox(f"net-{kind}-{index + 1}", ports=ports)
            try:
                await sb.start()
                done = await sb.run("true")
                assert done.returncode == 0, done
            finally:
                await sb.shutdown()
            ended = time.perf_counter()
            times[kind].append(ended - began)
            await asyncio.to_thread(_wait_settled, pending)
            if kind == "bridge":
                times["background"].append(time.perf_counter() - ended)

        for kind in ("bridge", "none"):  # warm: the first of each pays for caches
            await life(kind, -1)
        for samples in times.values():
            samples.clear()
        for index in range(rounds):
            pair = ("bridge", "none") if index % 2 == 0 else ("none", "bridge")
            for kind in pair:
                await life(kind, index)
    return NetworkResult(
        rounds,
        statistics.median(times["bridge"]),
        statistics.median(times["none"]),
        statistics.median(times["background"]),
        await plugin_breakdown(max(3, rounds // 2)),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def plugin_breakdown(rounds: int) -> dict[str, float]:
    """Median seconds of each ``"<COMMAND> <plugin>"`` (and ``"egress rules"``) over
    ``rounds`` ADD and DEL of the default network list with one port, in a network
    namespace made for it and removed after."""
    spent: dict[str, list[float]] = defaultdict(list)
    network = parse(default_network_list(), "default")
    loopback = parse({"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}, "lo")

    def observe(command: str, plugin: str, seconds: float) -> None:
        spent[f"{command} {plugin}"].append(seconds)

    for _ in range(rounds):
        name = f"sbxbench-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", name], check=True)
        netns = os.path.join("/run/netns", name)
        common = {"container_id": name, "netns": netns, "bin_dirs": DEFAULT_BIN_DIRS}
        ports = {"hostPort": _free_port(), "containerPort": 8080, "protocol": "tcp"}
        config = {"portMappings": [{**ports, "hostIP": "127.0.0.1"}]}
        try:
            await network_add(loopback, ifname="lo", observe=observe, **common)  # type: ignore[arg-type]
            result = await network_add(
                network,
                ifname="eth0",
                runtime_config=config,
                observe=observe,
                **common,  # type: ignore[arg-type]
            )
            began = time.perf_counter()
            await apply_egress(netns, None, timeout=30)
            spent["egress rules"].append(time.perf_counter() - began)
            await network_del(
                network,
                ifname="eth0",
                runtime_config=config,
                previous=result.raw,
                observe=observe,
                **common,  # type: ignore[arg-type]
            )
        finally:
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", name], check=True)
    return {what: statistics.median(samples) for what, samples in spent.items()}
