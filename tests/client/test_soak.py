"""Many sandboxes through the whole lifecycle against the real daemon.

``SANDBOXCLIENT_SOAK`` sets how many (default 96, for CI); ``make soak`` runs 1,000.
"""

from __future__ import annotations

import asyncio
import os
import resource

import pytest

from sandboxclient import ExitStatus
from tests.support.backends import (
    PLUGIN_NAME,
    SUMMARY_LINES,
    Backend,
    RealContainerd,
    new_namespace,
)
from tests.support.constants import RUNTIME
from tests.support.helpers import client_tasks

pytestmark = [pytest.mark.anyio, pytest.mark.real]

COUNT = int(os.environ.get("SANDBOXCLIENT_SOAK", "96"))
CONCURRENCY = 32
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.fixture
def real_backend(real_containerd: RealContainerd) -> Backend:
    real_containerd.ensure_running()
    daemon = real_containerd.daemon
    return Backend("real", daemon.address, PLUGIN_NAME, new_namespace(), daemon)


async def test_soak_full_lifecycles(real_backend: Backend) -> None:
    before_tasks = asyncio.all_tasks()
    failures: list[str] = []
    codes: list[int] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    async with real_backend.client(timeout=60) as client:

        async def one(i: int) -> None:
            async with gate:
                try:
                    sb = await client.new_sandbox(
                        f"soak{i}",
                        labels={"soak": "1", "n": str(i)},
                        runtime=RUNTIME,
                    )
                    await sb.start()
                    channel = await sb.wait()
                    await sb.stop(grace=5)
                    status: ExitStatus = await asyncio.wait_for(channel.get(), 60)
                    if status.error is not None:
                        failures.append(f"soak{i}: {status.error!r}")
                    codes.append(status.returncode)
                    await sb.shutdown()
                except Exception as exc:
                    failures.append(f"soak{i}: {exc!r}")

        warm = min(COUNT, CONCURRENCY)
        await asyncio.gather(*(one(i) for i in range(warm)))
        rss_start = _rss()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(one(i) for i in range(warm, COUNT)))
        elapsed = loop.time() - started
        rss_end = _rss()
        left = await client.list_sandboxes("labels.soak==1")

    leaked = client_tasks(before_tasks)
    SUMMARY_LINES.append(
        f"soak: {COUNT} lifecycles, {CONCURRENCY} at a time: {len(failures)} failures, "
        f"{len(leaked)} leaked tasks, {len(left)} records left, "
        f"RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB, "
        f"{(COUNT - warm) / max(elapsed, 1e-9):.1f} lifecycles/s after warm-up"
    )
    assert failures == []
    assert codes == [143] * COUNT
    assert leaked == []
    assert left == []
    assert rss_end - rss_start < RSS_GROWTH_LIMIT
