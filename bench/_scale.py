"""Scale on one node: a Create+Start with 1 live sandbox against N, and what each live
sandbox costs the isolating sandboxer (``python -m bench --scale N``, opt-in: it holds N
runc containers, each with its shim, for a minute or two).

For each side (this tree's sandboxer and, with ``--against TREE``, that tree's, one after
the other on the same containerd):

1. one sandbox is started and left running; ``probes`` Create+Starts (``new_sandbox`` +
   ``start`` of a sandbox with no spec, timed; its shutdown untimed) are measured;
2. sandboxes are started, 4 at a time, until N are live; the sandboxer's resident memory
   (VmRSS) and the host's mount table (``/proc/self/mountinfo``, which every new
   container's mount namespace copies) before and after give their growth per sandbox;
3. with N live and no call made, the CPU the sandboxer (and containerd) use over
   ``idle_seconds`` is its idle CPU;
4. ``probes`` Create+Starts are measured with N live;
5. with N live, ``rounds`` times: 2 Create+Starts, then N binds of a user namespace's file
   added to the host's table (what N pins of the isolating sandboxer's were: see
   ``bench._hostmounts``), 2 more, the binds removed: the time with them over without,
   interleaved so that the machine's load weighs on both alike, is what N more host mounts
   cost a Create+Start;
6. every sandbox but the first is shut down and ``probes`` more are measured at 1, so the
   figure at 1 is taken on both sides of the one at N.

Then containerd alone, the same way with ``ctr run -d`` (``bench._scale_ctr``): the growth
that is containerd's and runc's, whoever asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sandboxclient import Client, Sandbox

from ._env import cpu_seconds
from ._hostmounts import host_mounts, pin_like_binds
from ._scale_ctr import ctr_scale

__all__ = ("ScaleResult", "report", "scale_figures")

_CONCURRENCY = 4
_RUNTIME = "io.containerd.runc.v2"


@dataclass(frozen=True)
class ScaleResult:
    """What was measured with 1 and with ``live`` sandboxes running."""

    live: int
    probes: int
    start_at_1_s: float
    """Median Create+Start with one sandbox live (before the fill and after the drain)."""
    start_at_n_s: float
    """Median Create+Start with ``live`` sandboxes live."""
    rss_per_sandbox_bytes: float
    """The sandboxer's VmRSS growth from 1 to ``live`` sandboxes, per sandbox."""
    mounts_per_sandbox: float
    """The host's mount table's growth from 1 to ``live`` sandboxes, per sandbox."""
    idle_cpu: float
    """The sandboxer's CPU, in cores, with ``live`` sandboxes and no calls."""
    daemon_idle_cpu: float
    """containerd's, the same."""
    fill_s: float
    """Seconds to start the ``live - 1`` sandboxes, 4 at a time."""
    plain_at_n_s: float = 0.0
    """Median Create+Start with ``live`` sandboxes live, interleaved with :attr:`binds_at_n_s`."""
    binds_at_n_s: float = 0.0
    """The same with ``live`` more nsfs binds in the host's table (the pins of old)."""

    @property
    def ratio(self) -> float:
        """Create+Start at N over at 1."""
        return self.start_at_n_s / self.start_at_1_s

    @property
    def binds_ratio(self) -> float:
        """Create+Start at N with N more host mounts over without, interleaved."""
        return self.binds_at_n_s / self.plain_at_n_s if self.plain_at_n_s else 0.0


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _bounded(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    async with asyncio.TaskGroup() as group:
        for job in jobs:
            group.create_task(one(job))


async def scale_figures(
    address: str,
    *,
    namespace: str,
    sandboxer: str,
    sandboxer_pid: int,
    daemon_pid: int,
    live: int,
    probes: int = 10,
    idle_seconds: float = 5.0,
    rounds: int = 5,
) -> ScaleResult:
    """Measure one side (see the module's docstring)."""
    at_1: list[float] = []
    at_n: list[float] = []
    plain: list[float] = []
    binds: list[float] = []
    running: list[Sandbox] = []
    async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=120) as client:

        async def probe(into: list[float], index: int, tag: str = "") -> None:
            began = time.perf_counter()
            name = f"{tag or ('pn' if into is at_n else 'p1')}-{index}"
            sb = await client.new_sandbox(name, runtime=_RUNTIME)
            await sb.start()
            into.append(time.perf_counter() - began)
            await sb.shutdown()

        async def fill(index: int) -> None:
            sb = await client.new_sandbox(f"live-{index}", runtime=_RUNTIME)
            running.append(sb)
            await sb.start()

        try:
            await fill(0)
            await probe([], 0)  # a warm-up, not counted
            for i in range(probes):
                await probe(at_1, i)
            rss_before, mounts_before = _rss(sandboxer_pid), host_mounts()
            began = time.perf_counter()
            await _bounded([lambda i=i: fill(i) for i in range(1, live)])  # type: ignore[misc]
            filled = time.perf_counter() - began
            await asyncio.sleep(1.0)  # let the last Starts' work behind them settle
            rss_after, mounts_after = _rss(sandboxer_pid), host_mounts()
            cpu0, dcpu0 = cpu_seconds(sandboxer_pid), cpu_seconds(daemon_pid)
            await asyncio.sleep(idle_seconds)
            idle = (cpu_seconds(sandboxer_pid) - cpu0) / idle_seconds
            daemon_idle = (cpu_seconds(daemon_pid) - dcpu0) / idle_seconds
            for i in range(probes):
                await probe(at_n, i)
            for r in range(rounds):
                for i in range(2):
                    await probe(plain, 2 * r + i, "pa")
                with pin_like_binds(live):
                    for i in range(2):
                        await probe(binds, 2 * r + i, "pb")
            others, running[1:] = running[1:], []
            await _bounded([sb.shutdown for sb in others])
            for i in range(probes):
                await probe(at_1, probes + i)
        finally:
            await _bounded([sb.shutdown for sb in running])
    return ScaleResult(
        live=live,
        probes=probes,
        start_at_1_s=statistics.median(at_1),
        start_at_n_s=statistics.median(at_n),
        rss_per_sandbox_bytes=(rss_after - rss_before) / max(1, live - 1),
        mounts_per_sandbox=(mounts_after - mounts_before) / max(1, live - 1),
        idle_cpu=idle,
        daemon_idle_cpu=daemon_idle,
        fill_s=filled,
        plain_at_n_s=statistics.median(plain) if plain else 0.0,
        binds_at_n_s=statistics.median(binds) if binds else 0.0,
    )


def report(results: dict[str, ScaleResult]) -> str:
    """The figures of each side, side by side."""
    names = list(results)
    rows: list[tuple[str, Callable[[ScaleResult], str]]] = [
        ("Create+Start, 1 live, median ms", lambda r: f"{r.start_at_1_s * 1e3:.1f}"),
        ("Create+Start, N live, median ms", lambda r: f"{r.start_at_n_s * 1e3:.1f}"),
        ("N over 1 (target <= 1.2x)", lambda r: f"{r.ratio:.2f}x"),
        ("sandboxer RSS growth per sandbox, KiB", lambda r:
            f"{r.rss_per_sandbox_bytes / 1024:.0f}"),
        ("host mounts per live sandbox", lambda r: f"{r.mounts_per_sandbox:.2f}"),
        ("sandboxer idle CPU, % of a core", lambda r: f"{r.idle_cpu * 100:.2f}"),
        ("containerd idle CPU, % of a core", lambda r: f"{r.daemon_idle_cpu * 100:.2f}"),
        ("seconds to start N-1, 4 at a time", lambda r: f"{r.fill_s:.1f}"),
        ("at N, interleaved: without N more binds, ms", lambda r: f"{r.plain_at_n_s * 1e3:.1f}"),
        ("at N, interleaved: with N more binds, ms", lambda r: f"{r.binds_at_n_s * 1e3:.1f}"),
        ("N more host mounts at N: with over without", lambda r: f"{r.binds_ratio:.2f}x"),
    ]  # fmt: skip
    live = results[names[0]].live
    head = f"{f'N = {live}':<44}" + "".join(f"{n:>12}" for n in names)
    lines = [head, "-" * len(head)]
    for label, value in rows:
        lines.append(f"{label:<44}" + "".join(f"{value(results[n]):>12}" for n in names))
    return "\n".join(lines)


def scale_only(live: int, tree: str | None, out: Path | None) -> int:
    """``python -m bench --scale N [--against TREE]``: this figure alone, on asyncio."""
    from ._coldstart import sandboxers

    results: dict[str, ScaleResult] = {}
    with sandboxers(tree) as (daemon, sides, procs):
        assert daemon.pid is not None
        for side in sides:
            proc = procs[side.name].proc
            assert proc is not None
            print(f"{side.name}: {live} live sandboxes ...", flush=True)
            results[side.name] = got = asyncio.run(
                scale_figures(
                    daemon.address,
                    namespace=f"bench-scale-{side.name}",
                    sandboxer=side.sandboxer,
                    sandboxer_pid=proc.pid,
                    daemon_pid=daemon.pid,
                    live=live,
                )
            )
            print(_stages_at(side.stages_file, got.live))
        print(f"containerd alone: {live} live ctr containers ...", flush=True)
        alone = ctr_scale(str(daemon.bin_dir / "ctr"), daemon.address, live=live)
    print(f"containerd {daemon.version}")
    print(report(results))
    print(alone.line())
    if out is not None:
        found: dict[str, object] = {n: asdict(r) for n, r in results.items()}
        found["ctr"] = asdict(alone)
        out.write_text(json.dumps(found, indent=2) + "\n")
    return 0


def _stages_at(path: str, live: int) -> str:
    """The sandboxer's Start stages of the probes at 1 and at N, medians side by side."""
    found: dict[str, dict[str, list[float]]] = {"p1": {}, "pn": {}}
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            got = json.loads(line)
            where = found.get(got["sandbox"].split("-")[0])
            if where is not None:
                for stage, seconds in [*got["stages"].items(), ("total", got["total"])]:
                    where.setdefault(stage, []).append(seconds)
    lines = [f"{'Start stage, median ms':<56}{'at 1':>9}{f'at {live}':>9}"]
    for stage in found["p1"]:
        one, many = (statistics.median(found[k].get(stage, [0.0])) * 1e3 for k in ("p1", "pn"))
        lines.append(f"{stage:<56}{one:>9.1f}{many:>9.1f}")
    return "\n".join(lines)
