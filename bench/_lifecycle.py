"""The full life of sandboxes through a real containerd: what the client spends on it against
what the daemon (and the sandbox controller behind it) spends on the same work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sandboxclient import Client

__all__ = ("LifecycleResult", "lifecycle")

_SLEEP_SPEC = {"process": {"args": ["sleep", "3600"]}}


@dataclass(frozen=True)
class LifecycleResult:
    """CPU seconds spent on ``count`` lifecycles by each side."""

    count: int
    wall: float
    client_cpu: float
    daemon_cpu: float
    """containerd's own CPU."""
    controller_cpu: float
    """The sandbox controller's CPU (the Python sandboxer, which containerd forwards to)."""

    @property
    def client_per_daemon(self) -> float:
        """Client CPU over containerd's CPU for the same work."""
        return self.client_cpu / self.daemon_cpu if self.daemon_cpu else float("inf")

    @property
    def client_per_server_side(self) -> float:
        """Client CPU over containerd's and the controller's together."""
        total = self.daemon_cpu + self.controller_cpu
        return self.client_cpu / total if total else float("inf")


async def lifecycle(
    address: str,
    *,
    namespace: str,
    sandboxer: str,
    count: int,
    concurrency: int,
    daemon_cpu: Callable[[], float],
    controller_cpu: Callable[[], float] = lambda: 0.0,
    prefix: str = "life",
) -> LifecycleResult:
    """Run new -> start -> wait -> stop -> (exit status) -> shutdown ``count`` times,
    ``concurrency`` at once, and account every side's CPU over the whole run."""
    async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client:
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                sb = await client.new_sandbox(
                    f"{prefix}-{i:05d}", runtime="io.containerd.runc.v2", spec=_SLEEP_SPEC
                )
                await sb.start()
                channel = await sb.wait()
                await sb.stop()
                status = await channel
                if status.error is not None:
                    raise RuntimeError(f"wait failed: {status.error!r}")
                await sb.shutdown()

        await client.list_sandboxes()  # connected before the clocks start
        d0, k0 = daemon_cpu(), controller_cpu()
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, client_cpu = time.perf_counter() - w0, time.process_time() - c0
        return LifecycleResult(
            count=count,
            wall=wall,
            client_cpu=client_cpu,
            daemon_cpu=daemon_cpu() - d0,
            controller_cpu=controller_cpu() - k0,
        )
