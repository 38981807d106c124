"""``python -m bench``: start a private containerd and print every figure as a side-by-side ratio.

Run through ``make bench``. Options: ``--quick`` (shorter rounds, for a look), ``--json PATH``
(every number measured), ``--plot PATH`` (throughput against concurrency), ``--no-uvloop``,
``--profile PATH`` (a pyinstrument profile of the library's Store.Get at 64 callers),
``--fast-paths`` (only what each of the wire's fast paths buys, see ``bench._fastpaths``),
``--gvisor`` (figure 11 alone), ``--cold-start [--against TREE] [--records N]`` (figure 17
alone, beside another tree's, N other container records in each namespace;
``bench._coldstart``),
``--scale N [--against TREE]`` (1 against N live sandboxes, opt-in; ``bench._scale``).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sandboxclient import Client
from sandboxclient.sandboxer._stages import STAGES_ENV

from ._calls import (
    STORE_GET_CONTENDERS,
    Sample,
    compare,
    median_ratio,
    overhead_pairs,
    populate,
    raw_connection,
    store_get_impls,
)
from ._coldstart import cold_only, cold_section
from ._env import PLUGIN_NAME, RealDaemon, cpu_seconds, real_daemon
from ._exec import ExecResult, exec_figures
from ._fanout import FanoutResult, run_in_child
from ._fastpaths import fast_path_figures
from ._fastpaths import report as fast_paths_report
from ._files import FilesResult, files_figures
from ._images import images_section
from ._imports import import_times
from ._lifecycle import LifecycleResult, lifecycle
from ._report import Figure, plot_throughput, table
from ._rootdisk import disk_only
from ._sandbox_figures import (
    defaults_section,
    gvisor_section,
    image_section,
    network_section,
    pool_section,
)
from ._scale import scale_only
from ._settings import NAMESPACE, Settings

IMPORT_TARGET = 0.150


def _loops(uvloop: bool) -> dict[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
    if uvloop:
        import uvloop as uv

        loops["uvloop"] = uv.new_event_loop
    return loops


def _median(samples: list[Sample], what: str = "rate") -> float:
    return statistics.median(float(getattr(s, what)) for s in samples)


async def _calls_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    async with (
        Client(env.address, namespace=NAMESPACE, sandboxer=PLUGIN_NAME) as client,
        raw_connection(client) as raw,
    ):
        ids = await populate(client, 100, PLUGIN_NAME)
        pairs = overhead_pairs(client, raw, ids[0])
        overhead: dict[str, Any] = {}
        for name, (lib, raw_call) in pairs.items():
            got = await compare(
                {"library": lib, "raw stub": raw_call},
                concurrency=1,
                duration=s.overhead_duration,
                rounds=s.overhead_rounds,
            )
            cpu = median_ratio(got, "library", "raw stub", "cpu_per_call")
            wall = median_ratio(got, "raw stub", "library")  # time per call, library over raw
            overhead[name] = {
                "cpu_ratio": cpu,
                "time_ratio": wall,
                "library_us": _median(got["library"], "cpu_per_call") * 1e6,
                "raw_us": _median(got["raw stub"], "cpu_per_call") * 1e6,
            }
            figures.append(
                Figure(
                    f"1. overhead: {name}",
                    loop,
                    cpu,
                    f"{cpu:.2f}x CPU/call",
                    "<= 1.10x",
                    cpu <= 1.10,
                    f"time/call {wall:.2f}x",
                )
            )
        results["overhead"] = overhead
    curves: dict[str, dict[int, float]] = {name: {} for name in STORE_GET_CONTENDERS}
    cpu_curves: dict[str, dict[int, float]] = {name: {} for name in STORE_GET_CONTENDERS}
    ratios: dict[int, dict[str, float]] = {}
    async with store_get_impls(env.address, NAMESPACE, ids[0]) as impls:
        for level in s.levels:
            got = await compare(impls, concurrency=level, duration=s.duration, rounds=s.rounds)
            for name in impls:
                curves[name][level] = _median(got[name])
                cpu_curves[name][level] = _median(got[name], "cpu_per_call") * 1e6
            ratios[level] = {
                name: median_ratio(got, name, "grpc.aio") for name in impls if name != "grpc.aio"
            }
    results["throughput"] = {"calls_per_s": curves, "cpu_us_per_call": cpu_curves}
    results["throughput_ratio_to_grpc_aio"] = ratios
    for level in (1, 64):
        ratio = ratios[level]["library"]
        figures.append(
            Figure(
                f"2. throughput vs grpc.aio, {level} caller{'s' if level > 1 else ''}",
                loop,
                ratio,
                f"{ratio:.2f}x",
                ">= 0.35x" if level == 64 else "(reported)",
                ratio >= 0.35 if level == 64 else None,
                f"{curves['library'][level]:.0f} vs {curves['grpc.aio'][level]:.0f} calls/s; "
                f"raw stub {ratios[level]['raw stub']:.2f}x, "
                f"grpclib bytes {ratios[level]['grpclib bytes']:.2f}x",
            )
        )


async def _fanout_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    # In a fresh interpreter: memory freed by the other figures would hide what waits cost.
    got: FanoutResult = await asyncio.to_thread(
        run_in_child,
        env.address,
        namespace=f"{NAMESPACE}-fan-{loop}",
        sandboxer=PLUGIN_NAME,
        loop=loop,
        channels=s.fan_channels,
        sandboxes=s.fan_sandboxes,
    )
    results["fanout"] = asdict(got)
    kib = got.rss_per_channel / 1024
    note = f"{got.channels} channels on {got.sandboxes} sandboxes, {got.wait_calls} Wait calls"
    figures += [
        Figure("3. fan-out: RSS per waiting channel", loop, kib, f"{kib:.1f} KiB",
               "<= 16 KiB", kib <= 16, note),
        Figure("3. fan-out: CPU while idle", loop, got.idle_cpu,
               f"{got.idle_cpu * 100:.2f}% of a core", "~ 0 (< 1%)", got.idle_cpu < 0.01),
        Figure("3. fan-out: last exit -> last status", loop, got.delivery,
               f"{got.delivery * 1000:.0f} ms", "<= 1 s", got.delivery <= 1.0),
    ]  # fmt: skip


async def _lifecycle_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    got: LifecycleResult = await lifecycle(
        env.address,
        namespace=f"{NAMESPACE}-life-{loop}",
        sandboxer=PLUGIN_NAME,
        count=s.life_count,
        concurrency=s.life_concurrency,
        daemon_cpu=lambda: cpu_seconds(env.daemon_pid),
        controller_cpu=lambda: cpu_seconds(env.sandboxer_pid),
    )
    results["lifecycle"] = {
        **asdict(got),
        "client_per_daemon": got.client_per_daemon,
        "client_per_server_side": got.client_per_server_side,
    }
    ratio = got.client_per_daemon
    figures.append(
        Figure(
            "4. lifecycle: client CPU / containerd CPU",
            loop,
            ratio,
            f"{ratio * 100:.0f}%",
            "<= 10%",
            ratio <= 0.10,
            f"{got.client_cpu / got.count * 1e3:.1f} ms vs {got.daemon_cpu / got.count * 1e3:.1f}"
            f" ms per lifecycle; {got.client_per_server_side * 100:.0f}% of containerd plus"
            " the Python sandboxer",
        )
    )


async def _exec_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    got: ExecResult = await exec_figures(
        env.address,
        f"{NAMESPACE}-exec-{loop}",
        str(env.daemon.bin_dir / "ctr"),
        size=s.exec_bytes,
        rounds=s.exec_rounds,
        runs=s.exec_runs,
    )
    results["exec"] = asdict(got)
    peak_kib = got.reader_peak_bytes / 1024
    figures += [
        Figure("6. stdout throughput vs an os.read loop", loop, got.throughput_ratio,
               f"{got.throughput_ratio:.2f}x", ">= 0.8x", got.throughput_ratio >= 0.8,
               f"{got.library_mb_s:.0f} vs {got.raw_mb_s:.0f} MB/s; the reader peaked at "
               f"{peak_kib:.0f} KiB"),
        Figure("7. Task.run(\"true\") vs ctr task exec", loop, got.exec_ratio,
               f"{got.exec_ratio:.2f}x", "<= 0.7x", got.exec_ratio <= 0.7,
               f"{got.run_true_s * 1000:.0f} vs {got.ctr_exec_s * 1000:.0f} ms"),
        Figure(f"8. {got.concurrent} concurrent run()s", loop, float(got.failures),
               f"{got.failures} failures", "0 failures", got.failures == 0,
               f"p50 {got.p50_s * 1000:.0f} ms, p99 {got.p99_s * 1000:.0f} ms"),
    ]  # fmt: skip


async def _files_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    size = 64 * 1024 * 1024
    got: FilesResult = await files_figures(
        env.address, f"{NAMESPACE}-files-{loop}", PLUGIN_NAME, size=size, rounds=s.exec_rounds
    )
    results["files"] = asdict(got)
    figures += [
        Figure("13. files.write+stream 64 MiB vs exec cat by hand", loop, got.ratio,
               f"{got.ratio:.2f}x", ">= 0.8x, < 8 MiB", got.ratio >= 0.8 and
               got.peak_bytes < 8 * 1024 * 1024,
               f"{got.library_mb_s:.0f} vs {got.by_hand_mb_s:.0f} MB/s; the client peaked at "
               f"{got.peak_bytes / 1024:.0f} KiB"),
    ]  # fmt: skip


def _imports_section(s: Settings, results: dict[str, Any], figures: list[Figure]) -> None:
    modules = ["sandboxclient", "grpc", "grpclib.client"]
    times = import_times(modules, rounds=s.import_rounds)
    cold = import_times(["sandboxclient"], rounds=s.import_rounds, bytecode=False)
    ours = statistics.median(times["sandboxclient"])
    ratios = [a / b for a, b in zip(times["sandboxclient"], times["grpc"], strict=True)]
    vs_grpc = statistics.median(ratios)
    results["imports"] = {
        m: {"median_s": statistics.median(v), "all_s": v} for m, v in times.items()
    }
    no_cache = statistics.median(cold["sandboxclient"])
    results["imports"]["sandboxclient, no bytecode cache"] = {
        "median_s": no_cache,
        "all_s": cold["sandboxclient"],
    }
    figures.append(
        Figure(
            "5. import sandboxclient",
            "-",
            ours,
            f"{ours * 1000:.0f} ms = {ours / IMPORT_TARGET:.2f}x the target",
            "<= 150 ms",
            ours <= IMPORT_TARGET,
            f"{vs_grpc:.2f}x `import grpc` side by side, "
            f"grpclib.client {statistics.median(times['grpclib.client']) * 1000:.0f} ms; "
            f"{no_cache * 1000:.0f} ms compiling from source with no bytecode cache",
        )
    )


async def _profile(env: RealDaemon, out: Path) -> None:
    from pyinstrument import Profiler

    from ._calls import measure

    async with Client(env.address, namespace=NAMESPACE, sandboxer=PLUGIN_NAME) as client:
        ids = await populate(client, 1, PLUGIN_NAME)
        profiler = Profiler(async_mode="disabled")
        with profiler:
            await measure(lambda: client.get_sandbox(ids[0]), 64, 3.0)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    await asyncio.to_thread(out.write_text, text)


def _fast_paths(s: Settings, uvloop: bool) -> int:
    with real_daemon() as env:
        for loop, factory in _loops(uvloop).items():
            with asyncio.Runner(loop_factory=factory) as runner:
                got = runner.run(
                    fast_path_figures(
                        env.address,
                        f"{NAMESPACE}-fast-{loop}",
                        PLUGIN_NAME,
                        duration=s.overhead_duration,
                        rounds=s.overhead_rounds,
                    )
                )
            print(f"\n{loop} (containerd {env.daemon.version}):\n{fast_paths_report(got)}")
    return 0


def _only(section: Callable[..., Any], s: Settings) -> int:
    figures: list[Figure] = []
    results: dict[str, Any] = {}
    with real_daemon() as env:
        asyncio.run(section(env, "asyncio", s, results, figures))
    print(json.dumps(results, indent=2, default=str))
    print(table(figures))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short rounds, for a look")
    parser.add_argument("--json", type=Path, help="write every number measured here")
    parser.add_argument("--plot", type=Path, help="write the throughput plot (PNG) here")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own loop only")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile here")
    parser.add_argument(
        "--fast-paths", action="store_true", help="only what each wire fast path buys"
    )
    parser.add_argument("--defaults", action="store_true", help="only figure 9, on asyncio")
    parser.add_argument("--network", action="store_true", help="only figure 12, on asyncio")
    parser.add_argument("--pool", action="store_true", help="only figure 10, on asyncio")
    parser.add_argument("--gvisor", action="store_true", help="only figure 11, on asyncio")
    parser.add_argument("--image", action="store_true", help="only figure 14, on asyncio")
    parser.add_argument("--images", action="store_true", help="only figures 15-16, on asyncio")
    parser.add_argument("--cold-start", action="store_true", help="only figure 17, on asyncio")
    parser.add_argument(
        "--disk", action="store_true", help="only figure 19 (with --against TREE), on asyncio"
    )
    parser.add_argument("--scale", type=int, metavar="N", help="only N live sandboxes vs 1")
    parser.add_argument(
        "--against", help="with --cold-start, --disk or --scale: another tree, beside"
    )
    parser.add_argument(
        "--records", type=int, default=0, metavar="N", help="with --cold-start: N other records"
    )
    args = parser.parse_args(argv)
    s = Settings(args.quick)
    if args.fast_paths:
        return _fast_paths(s, not args.no_uvloop)
    only = {
        "defaults": defaults_section,
        "network": network_section,
        "pool": pool_section,
        "gvisor": gvisor_section,
        "image": image_section,
        "images": images_section,
    }
    for flag, section in only.items():
        if getattr(args, flag):
            return _only(section, s)
    if args.cold_start:
        return cold_only(s.defaults_rounds, args.against, args.json, args.records)
    if args.disk:
        return disk_only(s.defaults_rounds, args.against, args.json)
    if args.scale:
        return scale_only(args.scale, args.against, args.json)
    stages = tempfile.mkdtemp(prefix="bench-stages-")  # the sandboxer's, for figure 17
    atexit.register(shutil.rmtree, stages, True)
    os.environ[STAGES_ENV] = str(Path(stages, "stages"))
    started = time.monotonic()
    figures: list[Figure] = []
    results: dict[str, Any] = {"settings": vars(s), "python": sys.version.split()[0]}
    print("import times ...", flush=True)
    _imports_section(s, results, figures)
    with real_daemon() as env:
        results["containerd"] = env.daemon.version
        if args.profile is not None:
            asyncio.run(_profile(env, args.profile))
        for loop, factory in _loops(not args.no_uvloop).items():
            per_loop: dict[str, Any] = {}
            results[loop] = per_loop
            with asyncio.Runner(loop_factory=factory) as runner:
                sections = (
                    _calls_section,
                    _fanout_section,
                    _lifecycle_section,
                    _exec_section,
                    _files_section,
                    defaults_section,
                    pool_section,
                    gvisor_section,
                    network_section,
                    image_section,
                    images_section,
                    cold_section,
                )
                for section in sections:
                    print(f"{loop}: {section.__name__.strip('_')} ...", flush=True)
                    runner.run(section(env, loop, s, per_loop, figures))
    results["seconds"] = time.monotonic() - started
    order = {f.name: i for i, f in enumerate(figures)}
    figures.sort(key=lambda f: (f.name[:2], order[f.name], f.loop))
    print()
    print(f"containerd {results['containerd']}, Python {results['python']}, "
          f"{results['seconds']:.0f} s")  # fmt: skip
    print(table(figures))
    results["figures"] = [asdict(f) for f in figures]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.plot is not None:
        curves = {
            loop: results[loop]["throughput"]["calls_per_s"] for loop in _loops(not args.no_uvloop)
        }
        ratios = {
            loop: results[loop]["throughput_ratio_to_grpc_aio"]
            for loop in _loops(not args.no_uvloop)
        }
        plot_throughput(curves, args.plot, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
