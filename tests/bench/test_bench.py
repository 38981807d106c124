"""The benchmark harness imports and runs, in miniature, against the stand-in. No timing."""

from __future__ import annotations

import asyncio
import importlib
import math
import os
from pathlib import Path

import pytest

from bench._calls import (
    STORE_GET_CONTENDERS,
    compare,
    median_ratio,
    overhead_pairs,
    populate,
    raw_connection,
    store_get_impls,
)
from bench._defaults import defaults_cost
from bench._exec import exec_figures
from bench._fanout import fanout, run_in_child
from bench._files import files_figures
from bench._imports import import_seconds
from bench._lifecycle import lifecycle
from bench._report import Figure, plot_throughput, table
from sandboxclient import Client
from sandboxclient.testing import ContainerdUnavailable, FakeContainerd
from sandboxclient.testing._locate import find_containerd_bin_dir
from tests.support.constants import RUNTIME

pytestmark = pytest.mark.anyio


BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize(
    "module",
    sorted(f"bench.{p.stem}".removesuffix(".__init__") for p in BENCH.glob("*.py")),
)
def test_modules_import(module: str) -> None:
    importlib.import_module(module)


async def test_call_comparison_runs(fake: FakeContainerd) -> None:
    async with Client(fake.address, namespace="bench") as client, raw_connection(client) as raw:
        ids = await populate(client, 3, "shim")
        assert len(await client.list_sandboxes()) == 3
        pairs = overhead_pairs(client, raw, ids[0])
        for lib, raw_call in pairs.values():
            got = await compare(
                {"library": lib, "raw stub": raw_call},
                concurrency=2,
                duration=0.02,
                rounds=2,
                warmup=1,
            )
            assert all(s.calls > 0 for s in got["library"] + got["raw stub"])
            assert median_ratio(got, "library", "raw stub", "cpu_per_call") > 0
    async with store_get_impls(fake.address, "bench", ids[0]) as impls:
        assert set(impls) == set(STORE_GET_CONTENDERS)
        got = await compare(impls, concurrency=3, duration=0.02, rounds=2, warmup=1)
    for name in STORE_GET_CONTENDERS:
        assert len(got[name]) == 2
        assert all(s.calls > 0 and s.rate > 0 for s in got[name])


async def test_fanout_runs(fake: FakeContainerd) -> None:
    got = await fanout(
        fake.address, namespace="fan", sandboxer="shim", channels=30, sandboxes=3, idle=0.05
    )
    assert got.channels == 30
    assert got.wait_calls == 3  # one shared Wait call per sandbox
    assert got.delivery >= 0
    assert not math.isnan(got.rss_per_channel)


async def test_lifecycle_runs(fake: FakeContainerd) -> None:
    got = await lifecycle(
        fake.address,
        namespace="life",
        sandboxer="shim",
        count=3,
        concurrency=2,
        daemon_cpu=lambda: os.times().user,
    )
    assert got.count == 3
    assert got.client_cpu >= 0
    async with Client(fake.address, namespace="life") as client:
        assert await client.list_sandboxes() == []


async def test_defaults_cost_runs(fake: FakeContainerd) -> None:
    got = await defaults_cost(fake.address, namespace="cold", sandboxer="shim", rounds=2)
    assert got.rounds == 2
    assert min(got.sandbox_with, got.sandbox_without, got.member_with, got.member_without) > 0
    assert got.sandbox_userns_only > 0
    async with Client(fake.address, namespace="cold") as client:
        assert await client.list_sandboxes() == []
        assert await client.list_containers() == []


async def test_files_figures_run(fake: FakeContainerd) -> None:
    got = await files_figures(fake.address, "files", "shim", size=1 << 20, rounds=2)
    assert got.ratio > 0
    assert got.library_mb_s > 0
    assert got.by_hand_mb_s > 0
    assert 0 < got.peak_bytes < 8 << 20
    async with Client(fake.address, namespace="files") as client:
        assert await client.list_sandboxes() == []


async def test_exec_figures_run(fake: FakeContainerd) -> None:
    # The stand-in runs execs as host processes, and ctr talks to it as to containerd.
    try:
        ctr = find_containerd_bin_dir() / "ctr"
    except ContainerdUnavailable as exc:
        pytest.skip(str(exc))
    got = await exec_figures(
        fake.address, "exec", str(ctr), size=1 << 20, rounds=2, runs=2, concurrent=5
    )
    assert got.failures == 0
    assert got.throughput_ratio > 0
    assert got.exec_ratio > 0
    assert 0 < got.reader_peak_bytes < 16 << 20
    assert got.p50_s <= got.p99_s
    async with Client(fake.address, namespace="exec") as client:
        assert await client.list_containers() == []


def test_import_probe() -> None:
    assert import_seconds("sandboxclient") > 0


def test_report(tmp_path: Path) -> None:
    text = table([Figure("x", "asyncio", 1.0, "1.00x", "<= 1.10x", True, "n")])
    assert "| x | asyncio | 1.00x (n) | <= 1.10x | yes |" in text
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    plot_throughput({"asyncio": {"library": {1: 10.0, 64: 20.0}}}, out)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_the_client_works_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> int:
        async with FakeContainerd() as server, Client(server.address) as client:
            sb = await client.new_sandbox("uv1", runtime=RUNTIME)
            await sb.start()
            channel = await sb.wait()
            await sb.stop()
            status = await channel
            await sb.shutdown()
            assert await client.list_sandboxes() == []
            return status.returncode

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(run()) == 143


async def test_fanout_runs_in_a_child_process(fake: FakeContainerd) -> None:
    got = await asyncio.to_thread(
        run_in_child,
        fake.address,
        namespace="child",
        sandboxer="shim",
        loop="asyncio",
        channels=20,
        sandboxes=2,
        idle=0.05,
    )
    assert got.channels == 20
    assert got.wait_calls == 2
