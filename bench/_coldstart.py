"""The cold start, stage by stage, against ``ctr run --rm`` and the ``runc run`` floor.

Each round, in alternating order, times:

- **ours** (and, with ``--against TREE``, **before**: the same from another tree's client and
  sandboxer, beside it on the same containerd): ``new_sandbox`` + ``start`` +
  ``run("echo", "hi")`` + ``shutdown`` of a sandbox with no spec through the isolating
  sandboxer (busybox root, runc, the secure defaults), each call timed apart, in a worker
  process of its own (``bench/_coldworker.py``, so each side runs its own client code);
- **one-shot** (and, with ``--against``, **one-shot before**): ``Client.run("echo", "hi")``
  from the same worker as **ours** (**before**): the command as the sandbox's own process
  (``new_sandbox(command=...)``), its output through the client's FIFO, its exit, its
  shutdown, in one call; its stages are the sandboxer's Start and Shutdown of those
  sandboxes, and the client's call less them;
- **ctr**: ``ctr run --rm --rootfs DIR id /bin/echo hi`` on a busybox root (the target);
- **ctr userns**: the same with a user namespace (:data:`CTR_USERNS`: root mapped to 65536
  unprivileged host ids, as a sandbox's block) and containerd's default seccomp profile, the
  nearest ``ctr run`` comes to a sandbox's secure defaults (its root is not idmapped: with
  ``--rootfs`` ctr has no snapshot to remap, so the root's files show as the overflow id);
- **runc**: ``runc run`` of a bundle of the same root and command, the floor (no containerd,
  no shim, no sandboxer).

The sandboxer times its own share of each Start and Shutdown
(``sandboxclient/sandboxer/_stages.py``): for a Start its id block, user namespace, spec and
state, log keeper, root mounts, each containerd call (Containers.Create; Tasks.Create, where
the shim starts and runc creates; Tasks.Start, runc start) and the wait for the default
process's SIGTERM trap; for a Shutdown the kill, the exit heard, Tasks.Delete and
Containers.Delete, the record and the id block. The client's call less the sandboxer's is
containerd's hop (the proxy plugin's two gRPC legs), with, for a shutdown, the client's own
Containers.List (its members) and Store.Delete. A tree from before Shutdown was timed shows
its Start alone.

With ``records=N`` (``--records N``) each side's namespace holds N other container records
first, each with the spec of a sandbox's own container (its seccomp profile and all) and no
task: what a namespace of N live sandboxes gives every Containers.List to read, without
their shims.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sandboxclient import Client
from sandboxclient.sandboxer._stages import STAGES_ENV
from sandboxclient.testing import PLUGIN_NAME, busybox_rootfs
from sandboxclient.testing._daemon import ContainerdDaemon
from sandboxclient.testing._plugged import PluggedContainerd, SandboxerProcess

from ._pool import ctr_run
from ._report import Figure, table

__all__ = ("ColdSide", "ColdStartResult", "cold_start_figures", "report", "sandboxers")

_WORKER = Path(__file__).with_name("_coldworker.py")
CALLS = ("new_sandbox", "start", "run", "shutdown", "total")
ONESHOT = "one-shot"
"""The column of ``Client.run("echo", "hi")``: its ``total`` alone (``one-shot before`` for
the other tree's)."""
CTR_USERNS = (
    "--uidmap", "0:300000000:65536", "--gidmap", "0:300000000:65536", "--seccomp",
)  # fmt: skip
"""``ctr run``'s options for the reference row with a sandbox's isolation, as near as ctr
goes: a user namespace on host ids no sandboxer's pool uses, the default seccomp profile."""


def oneshot_of(side: str) -> str:
    """The one-shot column of ``side`` (``ours``, ``before``)."""
    return ONESHOT if side == "ours" else f"{ONESHOT} {side}"


@dataclass(frozen=True)
class ColdSide:
    """One side measured: its namespace, the proxy plugin of its sandboxer, the file its
    sandboxer writes its stages to, and the tree its client is imported from."""

    name: str
    namespace: str
    sandboxer: str
    stages_file: str
    tree: str | None = None


@dataclass(frozen=True)
class ColdStartResult:
    """Medians, in seconds: each side's calls and sandboxer stages, ``ctr`` and ``runc``."""

    rounds: int
    calls: dict[str, dict[str, float]]
    """side -> call (:data:`CALLS`) -> median seconds."""
    stages: dict[str, dict[str, float]]
    """side -> ``Start: stage`` or ``Shutdown: stage`` of the sandboxer's (and each call's
    ``containerd hop``) -> median seconds."""
    ctr_s: float
    runc_s: float
    ctr_userns_s: float = 0.0
    """``ctr run --rm`` with :data:`CTR_USERNS`; 0 when not measured."""

    def per_ctr(self, side: str = "ours", *, userns: bool = False) -> float:
        """The side's cold start over ``ctr run --rm`` (``userns``: with :data:`CTR_USERNS`)."""
        return self.calls[side]["total"] / (self.ctr_userns_s if userns else self.ctr_s)


def _runc_bundle(root: Path, bundle: Path) -> None:
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(root), "readonly": True}
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/echo", "hi"]
    (bundle / "config.json").write_text(json.dumps(config))


def _runc_run(bundle: Path, state: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        ["runc", "--root", str(state), "run", "--bundle", str(bundle),
         f"floor-{uuid.uuid4().hex[:8]}"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    took = time.perf_counter() - began
    if done.returncode != 0 or done.stdout != b"hi\n":
        raise RuntimeError(f"runc run failed ({done.returncode}): {done.stderr!r}")
    return took


class _Worker:
    def __init__(self, side: ColdSide, address: str) -> None:
        self.side = side
        self.address = address
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        if self.side.tree is not None:
            env["PYTHONPATH"] = self.side.tree
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(_WORKER), self.address, self.side.namespace, self.side.sandboxer,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd="/",
        )  # fmt: skip
        await self._answer()

    async def _answer(self) -> dict[str, float]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"the {self.side.name} worker ended")
        answer: dict[str, float] = json.loads(line)
        return answer

    async def lifecycle(self, sandbox_id: str, *, oneshot: bool = False) -> dict[str, float]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{'run ' if oneshot else ''}{sandbox_id}\n".encode())
        await self.proc.stdin.drain()
        got = await self._answer()
        if "error" in got:
            raise RuntimeError(f"the {self.side.name} sandbox said something else than hi")
        return got

    async def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            await self.proc.wait()


_TIMED = {"start": "Start", "shutdown": "Shutdown"}
_HOPS = {
    "start": "containerd hop",
    "shutdown": "containerd hop, the client's Containers.List and Store.Delete",
}


def _stage_medians(path: str, timed: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Median of each stage over the Starts and Shutdowns of ``timed`` (sandbox id -> client
    call -> seconds), named ``Start: stage`` and ``Shutdown: stage``."""
    per_stage: dict[str, list[float]] = {}
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            got = json.loads(line)
            call = got.get("call", "start")  # a tree from before timed its Starts alone
            if got["sandbox"] not in timed or call not in _TIMED:
                continue
            name = _TIMED[call]
            for stage, seconds in {**got["stages"], "in all": got["total"]}.items():
                per_stage.setdefault(f"{name}: {stage}", []).append(seconds)
            client = timed[got["sandbox"]]
            if call in client:  # a one-shot's calls are one: see _oneshot_rest
                hop = f"{name}: {_HOPS[call]} (the client's {call} less the sandboxer's)"
                per_stage.setdefault(hop, []).append(client[call] - got["total"])
    return {stage: statistics.median(v) for stage, v in per_stage.items()}


_REST = (
    "client.run less the sandboxer's Start and Shutdown (Store.Create, Controller.Create, "
    "Wait, Containers.List, Store.Delete, containerd's hops, the FIFO)"
)


def _oneshot_rest(path: str, totals: Mapping[str, float]) -> dict[str, float]:
    """The median of each one-shot's ``Client.run`` (``totals``: sandbox id -> seconds) less
    its sandboxer's Start and Shutdown: what the client and containerd add."""
    spent: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            got = json.loads(line)
            if got["sandbox"] in totals and got.get("call", "start") in _TIMED:
                spent[got["sandbox"]] = spent.get(got["sandbox"], 0.0) + got["total"]
    rest = [totals[i] - spent[i] for i in totals if i in spent]
    return {_REST: statistics.median(rest)} if rest else {}


async def _idle_records(address: str, sides: list[ColdSide], count: int) -> None:
    """``count`` container records in each side's namespace, with a sandbox's spec."""
    first = sides[0]
    async with Client(address, namespace=first.namespace, sandboxer=first.sandboxer) as client:
        sb = await client.new_sandbox("cold-records-model", runtime="io.containerd.runc.v2")
        try:
            await sb.start()
            spec = (await client.get_container(sb.id)).spec
        finally:
            await sb.shutdown()
    for side in sides:
        async with Client(address, namespace=side.namespace) as client:
            for i in range(count):
                await client.new_container(
                    f"cold-idle-{i}", spec=spec, runtime="io.containerd.runc.v2"
                )


async def _drop_idle_records(address: str, sides: list[ColdSide]) -> None:
    for side in sides:
        async with Client(address, namespace=side.namespace) as client:
            for info in await client.list_containers('id~="^cold-idle-"'):
                await client.delete_container(info.id)


async def cold_start_figures(
    address: str, *, sides: list[ColdSide], ctr: str, rounds: int, records: int = 0
) -> ColdStartResult:
    """Time ``rounds`` rounds of each way (see the module's docstring)."""
    workers = [_Worker(side, address) for side in sides]
    calls: dict[str, dict[str, list[float]]] = {s.name: {c: [] for c in CALLS} for s in sides}
    oneshots = {oneshot_of(s.name): s for s in sides}
    timed: dict[str, dict[str, dict[str, float]]] = {s.name: {} for s in sides}
    for name in oneshots:
        calls[name] = {"total": []}
        timed[name] = {}
    floor: dict[str, list[float]] = {"ctr": [], "ctr userns": [], "runc": []}
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        root, bundle, state = work / "root", work / "bundle", work / "runc"
        for d in (root, bundle, state):
            d.mkdir()
        busybox_rootfs(root)
        _runc_bundle(root, bundle)
        if records:
            await _idle_records(address, sides, records)
        for worker in workers:
            await worker.start()

        async def measure(way: str, index: int) -> None:
            if way in ("ctr", "ctr userns"):
                extra = CTR_USERNS if way == "ctr userns" else ()
                took = await asyncio.to_thread(
                    ctr_run, ctr, address, sides[0].namespace, root, extra
                )
                floor[way].append(took)
                return
            if way == "runc":
                floor["runc"].append(await asyncio.to_thread(_runc_run, bundle, state))
                return
            oneshot = way in oneshots
            side = oneshots[way].name if oneshot else way
            worker = next(w for w in workers if w.side.name == side)
            sandbox_id = f"cold-{way.replace(' ', '-')}-{index + 1}-{uuid.uuid4().hex[:6]}"
            got = await worker.lifecycle(sandbox_id, oneshot=oneshot)
            if index >= 0:
                for call in calls[way]:
                    calls[way][call].append(got[call])
                timed[way][sandbox_id] = {} if oneshot else {c: got[c] for c in _TIMED}

        ways = [*(s.name for s in sides), *oneshots, "ctr", "ctr userns", "runc"]
        for way in ways:  # a warm-up of each, not counted
            await measure(way, -1)
        for index in range(rounds):
            for way in ways if index % 2 == 0 else ways[::-1]:
                await measure(way, index)
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.stop()
        if records:
            await _drop_idle_records(address, sides)
        shutil.rmtree(work, ignore_errors=True)
    stages = {s.name: _stage_medians(s.stages_file, timed[s.name]) for s in sides}
    for name, side in oneshots.items():
        totals = dict(zip(timed[name], calls[name]["total"], strict=True))
        stages[name] = {
            **_stage_medians(side.stages_file, timed[name]),
            **_oneshot_rest(side.stages_file, totals),
        }
    return ColdStartResult(
        rounds=rounds,
        calls={n: {c: statistics.median(v) for c, v in got.items()} for n, got in calls.items()},
        stages=stages,
        ctr_s=statistics.median(floor["ctr"]),
        runc_s=statistics.median(floor["runc"]),
        ctr_userns_s=statistics.median(floor["ctr userns"]),
    )


def report(got: ColdStartResult) -> str:
    """The breakdown as a text table: calls, then the sandboxer's stages, side by side."""
    names = list(got.calls)
    head = f"{'cold start, median ms':<92}" + "".join(f"{n:>10}" for n in names)
    lines = [head, "-" * len(head)]

    def ms(value: float | None) -> str:
        return f"{'-':>10}" if value is None else f"{value * 1e3:>10.1f}"

    for call in CALLS:
        lines.append(f"{'client: ' + call:<92}" + "".join(
            ms(got.calls[n].get(call)) for n in names))  # fmt: skip
    stages = list(dict.fromkeys(s for n in names for s in got.stages[n]))
    for stage in stages:
        lines.append(f"{'  ' + stage[:88]:<92}" + "".join(
            ms(got.stages[n].get(stage)) for n in names))  # fmt: skip
    lines.append(f"{'ctr run --rm':<92}{got.ctr_s * 1e3:>10.1f}")
    userns = "ctr run --rm with a user namespace and seccomp (" + " ".join(CTR_USERNS) + ")"
    lines.append(f"{userns:<92}{got.ctr_userns_s * 1e3:>10.1f}")
    lines.append(f"{'runc run (the floor)':<92}{got.runc_s * 1e3:>10.1f}")
    for n in names:
        floor = got.calls[n]["total"] / got.runc_s
        lines.append(
            f"{n}: {got.per_ctr(n):.2f}x ctr run --rm, {got.per_ctr(n, userns=True):.2f}x "
            f"ctr run --rm with a user namespace and seccomp, {floor:.2f}x runc run"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def sandboxers(
    tree: str | None,
) -> Iterator[tuple[ContainerdDaemon, list[ColdSide], dict[str, SandboxerProcess]]]:
    """A private containerd with this tree's sandboxer as ``pysandbox`` and, given ``tree``,
    that tree's as ``pysandbox-before`` (its own id pool), each writing its stages; the
    sandboxer processes by side."""
    tmp = tempfile.mkdtemp(prefix="sbx-cold-")
    sides = [ColdSide("ours", "bench-cold", PLUGIN_NAME, os.path.join(tmp, "stages-ours"))]
    if tree is not None:
        before = os.path.join(tmp, "stages-before")
        sides.append(ColdSide("before", "bench-cold-before", "pysandbox-before", before, tree))
    plugins = {s.sandboxer: os.path.join(tmp, f"{s.name}.sock") for s in sides}
    daemon = ContainerdDaemon(proxy_plugins=plugins)
    procs = []
    for i, side in enumerate(sides):
        command = ["/usr/bin/env", f"{STAGES_ENV}={side.stages_file}"]
        if side.tree is not None:
            command.append(f"PYTHONPATH={side.tree}")
        command += [sys.executable, "-P", "-m", "sandboxclient.sandboxer"]  # not the cwd's tree
        command += ["--userns-pool", f"{100_000_000 + i * 100_000_000}:65536x1000"]
        state = os.path.join(tmp, f"{side.name}-state")
        where = plugins[side.sandboxer]
        procs.append(SandboxerProcess(where, state, containerd=daemon.address, command=command))
    try:
        for proc in procs:
            proc.start()
        daemon.start()
        yield daemon, sides, {side.name: proc for side, proc in zip(sides, procs, strict=True)}
    finally:
        try:
            if daemon.alive():
                for proc in procs:
                    proc.stop()
        finally:
            daemon.cleanup()
            for proc in procs:
                proc.stop()
            shutil.rmtree(tmp, ignore_errors=True)


async def cold_section(
    env: PluggedContainerd, loop: str, s: Any, results: dict[str, Any], figures: list[Figure]
) -> None:
    """Figure 17 of a full run: the cold start against ``ctr run --rm``, with its stages
    (once, on asyncio: the worker's loop is asyncio's whatever the bench's is)."""
    if loop != "asyncio":
        return
    side = ColdSide("ours", f"bench-cold-{loop}", env.plugin_name, os.environ[STAGES_ENV])
    got = await cold_start_figures(
        env.address, sides=[side], ctr=str(env.daemon.bin_dir / "ctr"), rounds=s.defaults_rounds
    )
    results["cold_start"] = asdict(got)
    print(report(got))
    figures.extend(_figures(got, loop))


def _figures(got: ColdStartResult, loop: str) -> list[Figure]:
    ratio, oneshot = got.per_ctr(), got.per_ctr(ONESHOT)
    return [Figure(
        "17. cold start: new+start+run(echo)+shutdown vs ctr run --rm", loop, ratio,
        f"{ratio:.2f}x", "<= 1.0x", ratio <= 1.0,
        f"{got.calls['ours']['total'] * 1e3:.0f} vs {got.ctr_s * 1e3:.0f} ms; runc run "
        f"{got.runc_s * 1e3:.0f} ms; {got.rounds} alternating rounds",
    ), Figure(
        "17b. cold start, one-shot: client.run(echo) vs ctr run --rm", loop, oneshot,
        f"{oneshot:.2f}x", "<= 1.0x", oneshot <= 1.0,
        f"{got.calls[ONESHOT]['total'] * 1e3:.0f} vs {got.ctr_s * 1e3:.0f} ms, same rounds; "
        f"{got.per_ctr(ONESHOT, userns=True):.2f}x ctr run --rm with a user namespace and "
        f"seccomp ({got.ctr_userns_s * 1e3:.0f} ms)",
    )]  # fmt: skip


def cold_only(rounds: int, tree: str | None, out: Path | None, records: int = 0) -> int:
    """``python -m bench --cold-start [--against TREE] [--records N]``: figure 17 alone, on
    asyncio, with the other tree's client and sandboxer beside this one's when asked, and N
    other container records in each side's namespace."""
    with sandboxers(tree) as (daemon, sides, _):
        got = asyncio.run(
            cold_start_figures(
                daemon.address,
                sides=sides,
                ctr=str(daemon.bin_dir / "ctr"),
                rounds=rounds,
                records=records,
            )
        )
    print(f"containerd {daemon.version}, {rounds} alternating rounds, {records} other records")
    print(report(got))
    print(table(_figures(got, "asyncio")))
    if out is not None:
        out.write_text(json.dumps(asdict(got), indent=2) + "\n")
    return 0
