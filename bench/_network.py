"""What a network costs a sandbox's whole life, measured side by side in alternating rounds.

``new_sandbox`` + ``start`` + ``run("true")`` + ``shutdown`` of a sandbox with
``network="bridge"`` and one published port (a free host port picked) against the same with
no network (``lo`` only). Each round runs one of each, the order alternating; each life is
timed alone. The difference is CNI's: the plugins' ADD and DEL (bridge, host-local, portmap,
bandwidth, loopback), pinning the namespace, the egress rules, holding the port.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from sandboxclient import Client, PortMapping

__all__ = ("NetworkResult", "network_cost")


@dataclass(frozen=True)
class NetworkResult:
    """Median seconds of a sandbox's life, with a bridge network and a port, and without."""

    rounds: int
    bridge: float
    none: float

    @property
    def added(self) -> float:
        """Seconds the network adds, at the median."""
        return self.bridge - self.none


async def network_cost(
    address: str, *, namespace: str, sandboxer: str, rounds: int
) -> NetworkResult:
    """Time ``rounds`` lives of each kind (see the module's docstring)."""
    times: dict[str, list[float]] = {"bridge": [], "none": []}
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
            times[kind].append(time.perf_counter() - began)

        for kind in ("bridge", "none"):  # warm: the first of each pays for caches
            await life(kind, -1)
        for samples in times.values():
            samples.clear()
        for index in range(rounds):
            pair = ("bridge", "none") if index % 2 == 0 else ("none", "bridge")
            for kind in pair:
                await life(kind, index)
    return NetworkResult(
        rounds, statistics.median(times["bridge"]), statistics.median(times["none"])
    )
