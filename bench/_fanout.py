"""Wait fan-out: many ``wait()`` channels on one Client, what they cost while idle, and how
fast the statuses arrive once the sandboxes exit."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandboxclient import Client, ExitChannel, Sandbox

__all__ = ("FanoutResult", "fanout", "rss_bytes", "run_in_child")

_PAGE = os.sysconf("SC_PAGE_SIZE")
_SLEEP_SPEC = {"process": {"args": ["sleep", "3600"]}}


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass(frozen=True)
class FanoutResult:
    """What ``channels`` waits on ``sandboxes`` sandboxes cost and how fast they ended."""

    channels: int
    sandboxes: int
    wait_calls: int
    """Wait calls the Client had in flight for them."""
    rss_per_channel: float
    """Bytes of resident memory per waiting channel."""
    idle_cpu: float
    """CPU seconds per second (a fraction of one core) spent while they all waited."""
    delivery: float
    """Seconds from the last sandbox exit to the last status delivered."""


async def fanout(
    address: str,
    *,
    namespace: str,
    sandboxer: str,
    channels: int = 10_000,
    sandboxes: int = 100,
    idle: float = 2.0,
    prefix: str = "fan",
    deliver: bool = True,
) -> FanoutResult:
    """Open ``channels`` waits spread over ``sandboxes`` started sandboxes, then stop them.

    Against containerd with the Python sandboxer keep ``sandboxes`` well under 100: the
    sandboxer serves at most 100 streams at once, and every Wait call in flight holds one,
    so stop calls beyond that would queue behind the waits. Without ``deliver`` the sandboxes
    are shut down without waiting for the statuses (``delivery`` is then NaN).
    """
    async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client:
        handles: list[Sandbox] = []
        waiting: list[ExitChannel] = []
        try:
            for i in range(sandboxes):
                sb = await client.new_sandbox(
                    f"{prefix}-{i:04d}", runtime="io.containerd.runc.v2", spec=_SLEEP_SPEC
                )
                handles.append(sb)
                await sb.start()
            await asyncio.sleep(0.2)
            gc.collect()
            rss0 = rss_bytes()
            for i in range(channels):
                waiting.append(await handles[i % sandboxes].wait())
            # Let every channel's task and every Wait call get going before measuring.
            for _ in range(3):
                await asyncio.sleep(0.3)
            gc.collect()
            rss1 = rss_bytes()
            # Each Wait call in flight is a task the Client names after what it waits for.
            wait_calls = sum(
                1
                for task in asyncio.all_tasks()
                if task.get_name().startswith("sandboxclient-wait-") and not task.done()
            )
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(idle)
            idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            assert not any(ch.done() for ch in waiting), "a wait ended before its sandbox"
            if not deliver:
                return FanoutResult(
                    channels, sandboxes, wait_calls, (rss1 - rss0) / channels, idle_cpu, math.nan
                )
            await asyncio.gather(*(sb.stop() for sb in handles))
            last_exit = None
            for ch in waiting:
                status = await ch.get()
                if status.error is not None:
                    raise RuntimeError(f"a wait failed: {status.error!r}")
                exited = status.exited_at
                if exited is not None and (last_exit is None or exited > last_exit):
                    last_exit = exited
            delivered = datetime.now(UTC)
            assert last_exit is not None
            return FanoutResult(
                channels=channels,
                sandboxes=sandboxes,
                wait_calls=wait_calls,
                rss_per_channel=(rss1 - rss0) / channels,
                idle_cpu=idle_cpu,
                delivery=max(0.0, (delivered - last_exit).total_seconds()),
            )
        finally:
            # Waits still open would hold the controller's streams that shutdown needs.
            for ch in waiting:
                ch.close()
            await asyncio.sleep(0.1)
            await asyncio.gather(*(sb.shutdown() for sb in handles), return_exceptions=True)


def run_in_child(
    address: str,
    *,
    namespace: str,
    sandboxer: str,
    loop: str,
    channels: int,
    sandboxes: int,
    idle: float = 2.0,
) -> FanoutResult:
    """:func:`fanout` in a fresh interpreter, so that its memory is its own to measure."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench._fanout",
            address,
            namespace,
            sandboxer,
            loop,
            str(channels),
            str(sandboxes),
            str(idle),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"fan-out child failed ({out.returncode}):\n{out.stderr}")
    return FanoutResult(**json.loads(out.stdout.strip().splitlines()[-1]))


def _child(argv: list[str]) -> None:
    address, namespace, sandboxer, loop, channels, sandboxes, idle = argv
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        got = runner.run(
            fanout(
                address,
                namespace=namespace,
                sandboxer=sandboxer,
                channels=int(channels),
                sandboxes=int(sandboxes),
                idle=float(idle),
            )
        )
    print(json.dumps(asdict(got)))


if __name__ == "__main__":
    _child(sys.argv[1:])
