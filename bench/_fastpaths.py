"""What each of the wire's fast paths buys, on figures a user sees, side by side in one run.

``python -m bench --fast-paths``. The fast paths are the decoding plans (``_codec.FAST``)
and the batched writes (``_transport.BATCHING``).
Each contender is a Client of its own with one of them turned off (or all: "plain"); the
codec switches are set before each of its rounds, the batching one before its connection is
made. Every round runs every contender, rotating who goes first, and a fast path's gain on
a figure is the median over rounds of (time per call without it) / (time per call with all).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sandboxclient import Client
from sandboxclient._wire import _codec, _transport

from ._calls import Sample, measure, populate
from ._exec import running_task

__all__ = ("CONTENDERS", "FastPathResult", "fast_path_figures", "report")


@dataclass(frozen=True)
class _Switches:
    decode: bool
    batching: bool


CONTENDERS: Mapping[str, _Switches] = {
    "all fast": _Switches(True, True),
    "no decode plans": _Switches(False, True),
    "no batching": _Switches(True, False),
    "plain": _Switches(False, False),
}


@dataclass(frozen=True)
class FastPathResult:
    """Per figure and contender: the median time per call (s), client CPU per call (s), and
    the gain of the fast paths (time without / time with all, median of per-round ratios)."""

    time_per_call: dict[str, dict[str, float]]
    cpu_per_call: dict[str, dict[str, float]]
    gain: dict[str, dict[str, float]]
    cpu_gain: dict[str, dict[str, float]]


@contextlib.contextmanager
def _switched(switches: _Switches) -> Iterator[None]:
    saved = (_codec.FAST, _transport.BATCHING)
    _codec.FAST, _transport.BATCHING = switches.decode, switches.batching
    try:
        yield
    finally:
        _codec.FAST, _transport.BATCHING = saved


@contextlib.asynccontextmanager
async def _clients(address: str, namespace: str) -> AsyncIterator[dict[str, Client]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, switches in CONTENDERS.items():
            client = await stack.enter_async_context(
                Client(address, namespace=namespace, timeout=60)
            )
            with _switched(switches):
                await client.list_sandboxes()  # the connection is made now, batching or not
            clients[name] = client
        yield clients


async def _compare(
    calls: Mapping[str, Callable[[], Awaitable[object]]],
    *,
    concurrency: int,
    duration: float,
    rounds: int,
) -> dict[str, list[Sample]]:
    names = list(calls)
    for name in names:
        with _switched(CONTENDERS[name]):
            for _ in range(10):
                await calls[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with _switched(CONTENDERS[name]):
                samples[name].append(await measure(calls[name], concurrency, duration))
    return samples


async def _exec_samples(
    clients: Mapping[str, Client], container_id: str, rounds: int, runs: int
) -> dict[str, list[Sample]]:
    tasks = {}
    for name, client in clients.items():
        tasks[name] = await (await client.load_container(container_id)).task()
    names = list(clients)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with _switched(CONTENDERS[name]):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(runs):
                    done = await tasks[name].run("true")
                    assert done.returncode == 0
                samples[name].append(
                    Sample(runs, time.perf_counter() - wall0, time.process_time() - cpu0)
                )
    return samples


def _ratio(samples: Mapping[str, list[Sample]], name: str, what: str) -> float:
    per_call: Callable[[Sample], float] = (
        (lambda s: 1 / s.rate) if what == "time" else (lambda s: s.cpu_per_call)
    )
    return statistics.median(
        per_call(a) / per_call(b) for a, b in zip(samples[name], samples["all fast"], strict=True)
    )


async def fast_path_figures(
    address: str,
    namespace: str,
    sandboxer: str,
    *,
    duration: float = 1.0,
    rounds: int = 5,
    exec_runs: int = 10,
) -> FastPathResult:
    """Measure every figure of the module's docstring against ``address``."""
    async with _clients(address, namespace) as clients:
        ids = await populate(clients["all fast"], 100, sandboxer)
        loaded: dict[str, Any] = {}

        def load(client: Client) -> Callable[[], Awaitable[object]]:
            return lambda: client.load_sandbox(ids[0])

        def labels(name: str, client: Client) -> Callable[[], Awaitable[object]]:
            async def call() -> object:
                if name not in loaded:
                    loaded[name] = await client.load_sandbox(ids[0])
                return await loaded[name].labels()

            return call

        def get(client: Client) -> Callable[[], Awaitable[object]]:
            return lambda: client.get_sandbox(ids[0])

        figures: dict[str, dict[str, list[Sample]]] = {}
        one: dict[str, Any] = {"concurrency": 1, "duration": duration, "rounds": rounds}
        figures["load_sandbox"] = await _compare({n: load(c) for n, c in clients.items()}, **one)
        figures["sb.labels()"] = await _compare(
            {n: labels(n, c) for n, c in clients.items()}, **one
        )
        figures["list_sandboxes (100)"] = await _compare(
            {n: c.list_sandboxes for n, c in clients.items()}, **one
        )
        figures["get_sandbox, 64 callers"] = await _compare(
            {n: get(c) for n, c in clients.items()},
            concurrency=64,
            duration=duration,
            rounds=rounds,
        )
        async with running_task(clients["all fast"], "bench-fastpaths") as task:
            figures['Task.run("true")'] = await _exec_samples(
                clients, task.container_id, rounds, exec_runs
            )
    return FastPathResult(
        time_per_call={
            f: {n: statistics.median(1 / s.rate for s in got[n]) for n in got}
            for f, got in figures.items()
        },
        cpu_per_call={
            f: {n: statistics.median(s.cpu_per_call for s in got[n]) for n in got}
            for f, got in figures.items()
        },
        gain={f: {n: _ratio(got, n, "time") for n in got} for f, got in figures.items()},
        cpu_gain={f: {n: _ratio(got, n, "cpu") for n in got} for f, got in figures.items()},
    )


def report(result: FastPathResult) -> str:
    """A table: per figure, each contender's time per call and what it loses without its path."""
    names = list(CONTENDERS)
    lines = [
        "| figure | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for figure, times in result.time_per_call.items():
        cells = []
        for n in names:
            cell = f"{times[n] * 1e6:,.0f} µs"
            if n != "all fast":
                cell += (
                    f" ({result.gain[figure][n]:.2f}x time, {result.cpu_gain[figure][n]:.2f}x CPU)"
                )
            cells.append(cell)
        lines.append(f"| {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
