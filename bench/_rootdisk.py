"""What bounding an image root's writable layer costs its cold start, side by side with a tree
from before, on one containerd: ``python -m bench --disk --against TREE``.

Each round, in alternating order, times on each side ``new_sandbox(image=...)`` with
``root.readonly: false`` + ``start`` + ``run`` of a write into the image's ``/etc`` (a copy
up into the writable layer) + ``shutdown``: **bounded** through this tree's sandboxer (the
overlay's upper on a tmpfs of the default disk size, mounted for the Start and detached
after), **unbounded** through the other tree's (the upper on containerd's disk, where the
snapshotter made it). One client (this tree's) drives both: the client's part of an image
sandbox is the same. Then a 64 MiB ``dd`` into each root, timed inside, as a look at the
write path (a tmpfs against containerd's disk). This tree's sandboxer times its own share
(``_stages``), of which the layer's tmpfs is one stage.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sandboxclient import Client
from sandboxclient.testing._userland import userland_archive

from ._coldstart import sandboxers
from ._report import Figure, table

__all__ = ("DiskResult", "disk_only")

IMAGE = "bench.test/userland:disk"
_CONFIG = {"Entrypoint": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]}
_WRITABLE = {"root": {"readonly": False}, "process": {"user": {"uid": 0, "gid": 0}}}
_WRITE = "echo x > /etc/x && cat /etc/x"
_DD = "dd if=/dev/zero of=/fill bs=1M count=64 conv=fsync 2>&1 | tail -1"
_LAYER_STAGE = "root layer tmpfs"


@dataclass(frozen=True)
class DiskResult:
    """Median seconds of a writable image sandbox's life on each side, this tree's tmpfs
    stage, and the seconds of a 64 MiB write into each root."""

    rounds: int
    bounded_s: float
    unbounded_s: float
    layer_stage_s: float
    bounded_dd_s: float
    unbounded_dd_s: float

    @property
    def ratio(self) -> float:
        """The bounded life over the unbounded one, at the median."""
        return self.bounded_s / self.unbounded_s


async def _life(client: Client, sandbox_id: str) -> float:
    began = time.perf_counter()
    sb = await client.new_sandbox(sandbox_id, image=IMAGE, spec=_WRITABLE)
    try:
        await sb.start()
        done = await sb.run("sh", "-c", _WRITE)
        assert done.returncode == 0, done
    finally:
        await sb.shutdown()
    return time.perf_counter() - began


async def _dd(client: Client, sandbox_id: str) -> float:
    sb = await client.new_sandbox(sandbox_id, image=IMAGE, spec=_WRITABLE)
    try:
        await sb.start()
        began = time.perf_counter()
        done = await sb.run("sh", "-c", _DD)
        took = time.perf_counter() - began
        assert done.returncode == 0, done
    finally:
        await sb.shutdown()
    return took


def _stage(path: str) -> float:
    found = []
    if os.path.exists(path):
        for line in Path(path).read_text().splitlines():
            stages = json.loads(line)["stages"]
            if _LAYER_STAGE in stages:
                found.append(stages[_LAYER_STAGE])
    return statistics.median(found) if found else 0.0


async def _measure(address: str, sides: list[Any], rounds: int) -> DiskResult:
    times: dict[str, list[float]] = {"ours": [], "before": []}
    ours_side, before_side = sides
    async with (
        Client(address, namespace=ours_side.namespace, sandboxer=ours_side.sandboxer) as ours,
        Client(address, namespace=before_side.namespace, sandboxer=before_side.sandboxer) as old,
    ):
        clients = {"ours": ours, "before": old}
        for client in clients.values():
            await client.import_image(io.BytesIO(userland_archive(IMAGE, _CONFIG)))

        async def life(side: str, index: int) -> None:
            took = await _life(clients[side], f"disk-{side}-{index + 1}")
            if index >= 0:
                times[side].append(took)

        for side in clients:  # a warm-up of each, not counted
            await life(side, -1)
        for index in range(rounds):
            for side in ("ours", "before") if index % 2 == 0 else ("before", "ours"):
                await life(side, index)
        dd = {side: await _dd(client, f"disk-dd-{side}") for side, client in clients.items()}
    return DiskResult(
        rounds=rounds,
        bounded_s=statistics.median(times["ours"]),
        unbounded_s=statistics.median(times["before"]),
        layer_stage_s=_stage(sides[0].stages_file),
        bounded_dd_s=dd["ours"],
        unbounded_dd_s=dd["before"],
    )


def _figure(got: DiskResult) -> Figure:
    ratio = got.ratio
    return Figure(
        "19. writable image root, bounded (tmpfs) vs unbounded: new+start+write+shutdown",
        "asyncio", ratio, f"{ratio:.2f}x", "<= 1.1x", ratio <= 1.1,
        f"{got.bounded_s * 1e3:.0f} vs {got.unbounded_s * 1e3:.0f} ms (tmpfs stage "
        f"{got.layer_stage_s * 1e3:.1f} ms); 64 MiB dd {got.bounded_dd_s * 1e3:.0f} vs "
        f"{got.unbounded_dd_s * 1e3:.0f} ms; {got.rounds} alternating rounds",
    )  # fmt: skip


def disk_only(rounds: int, tree: str | None, out: Path | None) -> int:
    """``python -m bench --disk --against TREE``: figure 19 alone (TREE: a tree whose
    sandboxer leaves an image root's upper on containerd's disk)."""
    if tree is None:
        raise SystemExit("bench: --disk needs --against TREE (a sandboxer from before)")
    with sandboxers(tree) as (daemon, sides, _):
        got = asyncio.run(_measure(daemon.address, sides, rounds))
    print(f"containerd {daemon.version}, {rounds} alternating rounds")
    print(table([_figure(got)]))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(got) | {"ratio": got.ratio}, indent=2) + "\n")
    return 0
