"""A warm pool against a cold start and containerd's own CLI, side by side in one run.

Each round, in alternating order, times four ways of running ``echo hi`` in a fresh
sandbox on a busybox root, and the exec they all end in:

- **pooled**: ``async with pool.acquire() as sb: await sb.run("echo", "hi")`` from a ready
  pool whose sandboxes ran ``true`` once before being offered (``warm_up=("true",)``; its
  refill and the shutdown of the one released are awaited after each round, untimed, so no
  way is timed while the pool works behind it: the figure is what a caller waits for when
  the pool has kept up);
- **pooled, no warm-up**: the same from a pool with no ``warm_up``: its ``run`` is the
  sandbox's first exec;
- **cold**: ``async with client.sandbox(...) as sb: await sb.run("echo", "hi")``, i.e.
  ``new_sandbox`` + ``start`` + ``run`` + ``shutdown`` through the isolating sandboxer;
- **ctr**: ``ctr run --rm --rootfs DIR id /bin/echo hi``, containerd's own CLI;
- **exec**: ``task.run("echo", "hi")`` on the task handle of one sandbox of the same template,
  started before the rounds and kept: containerd's exec path (Tasks.Exec, Tasks.Start, which
  is ``runc exec`` through the shim, Tasks.DeleteProcess) and one Containers.Get for the
  spec, with no pool around it and no finding of the sandbox's task (``Sandbox.run`` finds
  it, Containers.Get and Tasks.Get at once): what a pool could not cut.

``acquire()`` alone is timed in every pooled round (entering the block) for its p99.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sandboxclient import Client, SandboxPool
from sandboxclient.testing import busybox_rootfs

__all__ = ("PoolResult", "ctr_run", "pool_figures")

_RUNTIME = "io.containerd.runc.v2"


@dataclass(frozen=True)
class PoolResult:
    """Median seconds of each way, and the acquire's own percentiles."""

    rounds: int
    pooled_s: float
    unwarmed_s: float
    """The same from a pool with no ``warm_up``."""
    cold_s: float
    ctr_s: float
    exec_s: float
    """A run on a kept task handle of a started sandbox, outside the pool: the exec path."""
    acquire_p50_s: float
    acquire_p99_s: float

    @property
    def pooled_per_ctr(self) -> float:
        """The pooled run over ``ctr run --rm`` of the same command."""
        return self.pooled_s / self.ctr_s

    @property
    def pooled_per_cold(self) -> float:
        """The pooled run over a cold start of the same command."""
        return self.pooled_s / self.cold_s

    @property
    def exec_per_ctr(self) -> float:
        """The exec path over ``ctr run --rm``: what no pool's run can go under."""
        return self.exec_s / self.ctr_s

    @property
    def cold_per_ctr(self) -> float:
        """A cold start over ``ctr run --rm``."""
        return self.cold_s / self.ctr_s


def ctr_run(
    ctr: str, address: str, namespace: str, root: Path, extra: tuple[str, ...] = ()
) -> float:
    """Seconds of one ``ctr run --rm [EXTRA] --rootfs ROOT id /bin/echo hi``."""
    began = time.perf_counter()
    done = subprocess.run(
        [ctr, "--address", address, "--namespace", namespace, "run", "--rm", *extra,
         "--rootfs", str(root), f"ctr-{uuid.uuid4().hex[:8]}", "/bin/echo", "hi"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    took = time.perf_counter() - began
    if done.returncode != 0 or done.stdout != b"hi\n":
        raise RuntimeError(f"ctr run failed ({done.returncode}): {done.stderr!r}")
    return took


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def pool_figures(
    address: str, *, namespace: str, sandboxer: str, ctr: str, rounds: int
) -> PoolResult:
    """Time ``rounds`` rounds of each way (see the module's docstring)."""
    times: dict[str, list[float]] = {
        "pooled": [], "unwarmed": [], "cold": [], "ctr": [], "exec": []
    }  # fmt: skip
    acquires: list[float] = []
    root = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    try:
        busybox_rootfs(root)
        async with (
            Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client,
            SandboxPool(
                client, size=1, max_size=2, template={"runtime": _RUNTIME}, warm_up=("true",)
            ) as warm_pool,
            SandboxPool(
                client, size=1, max_size=2, template={"runtime": _RUNTIME}, prefix="unwarmed"
            ) as plain_pool,
            client.sandbox(f"exec-{uuid.uuid4().hex[:12]}", runtime=_RUNTIME) as kept,
        ):

            async def from_pool(pool: SandboxPool, way: str) -> None:
                await pool.ready()
                began = time.perf_counter()
                async with pool.acquire() as sb:
                    if way == "pooled":
                        acquires.append(time.perf_counter() - began)
                    result = await sb.run("echo", "hi")
                times[way].append(time.perf_counter() - began)
                assert result.stdout == b"hi\n"
                await pool.ready()

            async def pooled() -> None:
                await from_pool(warm_pool, "pooled")

            async def unwarmed() -> None:
                await from_pool(plain_pool, "unwarmed")

            async def cold() -> None:
                began = time.perf_counter()
                name = f"cold-{uuid.uuid4().hex[:12]}"
                async with client.sandbox(name, runtime=_RUNTIME) as sb:
                    result = await sb.run("echo", "hi")
                times["cold"].append(time.perf_counter() - began)
                assert result.stdout == b"hi\n"

            async def by_ctr() -> None:
                took = await asyncio.to_thread(ctr_run, ctr, address, namespace, root)
                times["ctr"].append(took)

            kept_task = await kept.task()

            async def exec_only() -> None:
                began = time.perf_counter()
                result = await kept_task.run("echo", "hi")
                times["exec"].append(time.perf_counter() - began)
                assert result.stdout == b"hi\n"

            await pooled()  # a warm-up of each, not counted
            await unwarmed()
            await cold()
            await by_ctr()
            await exec_only()
            for kind in times.values():
                kind.clear()
            acquires.clear()
            for i in range(rounds):
                order = [pooled, cold, unwarmed, by_ctr, exec_only]
                for measure in order if i % 2 == 0 else order[::-1]:
                    await measure()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return PoolResult(
        rounds=rounds,
        pooled_s=statistics.median(times["pooled"]),
        unwarmed_s=statistics.median(times["unwarmed"]),
        cold_s=statistics.median(times["cold"]),
        ctr_s=statistics.median(times["ctr"]),
        exec_s=statistics.median(times["exec"]),
        acquire_p50_s=statistics.median(acquires),
        acquire_p99_s=_percentile(acquires, 0.99),
    )
