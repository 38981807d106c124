"""A cold start under gVisor against containerd's own CLI with the same runsc, side by side.

Each round, in alternating order: ``async with client.sandbox(id, runtime_handler="gvisor")``
+ ``run("echo", "hi")`` (new, start, run, shutdown through the isolating sandboxer), and
``ctr run --rm --runc-binary WRAPPER --rootfs DIR id /bin/echo hi``, where WRAPPER runs
runsc with the flags the sandboxer's own wrapper adds (``--network=none --oci-seccomp``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sandboxclient import Client
from sandboxclient.testing import GVISOR_RUNSC, busybox_rootfs

from ._pool import ctr_run

__all__ = ("GvisorResult", "gvisor_figures")


@dataclass(frozen=True)
class GvisorResult:
    """Median seconds of each way."""

    rounds: int
    sandbox_s: float
    ctr_s: float

    @property
    def ratio(self) -> float:
        """The library's cold start over ``ctr run --rm`` under the same runsc."""
        return self.sandbox_s / self.ctr_s


async def gvisor_figures(
    address: str, *, namespace: str, sandboxer: str, ctr: str, rounds: int
) -> GvisorResult | None:
    """Time ``rounds`` rounds of each (see the module's docstring); None without runsc."""
    if not os.access(GVISOR_RUNSC, os.X_OK):
        return None
    times: dict[str, list[float]] = {"sandbox": [], "ctr": []}
    folder = Path(tempfile.mkdtemp(prefix="bench-gvisor-"))
    try:
        root = folder / "root"
        busybox_rootfs(root)
        wrapper = folder / "runsc"
        wrapper.write_text(f'#!/bin/sh\nexec {GVISOR_RUNSC} --network=none --oci-seccomp "$@"\n')
        wrapper.chmod(0o700)
        async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client:

            async def ours() -> None:
                began = time.perf_counter()
                name = f"gv-{uuid.uuid4().hex[:12]}"
                async with client.sandbox(name, runtime_handler="gvisor") as sb:
                    result = await sb.run("echo", "hi")
                times["sandbox"].append(time.perf_counter() - began)
                assert result.stdout == b"hi\n"

            async def by_ctr() -> None:
                extra = ("--runc-binary", str(wrapper))
                took = await asyncio.to_thread(ctr_run, ctr, address, namespace, root, extra)
                times["ctr"].append(took)

            await ours()  # a warm-up of each, not counted
            await by_ctr()
            for kind in times.values():
                kind.clear()
            for i in range(rounds):
                order = [ours, by_ctr]
                for measure in order if i % 2 == 0 else order[::-1]:
                    await measure()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return GvisorResult(
        rounds=rounds,
        sandbox_s=statistics.median(times["sandbox"]),
        ctr_s=statistics.median(times["ctr"]),
    )
