"""The figures of sandboxes through the isolating sandboxer: the secure defaults' cost (9),
warm pools (10), gVisor (11), a bridge network (12) and an image root (14), each a section of
a full run that can also run alone."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ._defaults import DefaultsResult, defaults_cost
from ._env import PLUGIN_NAME, RealDaemon
from ._gvisor import gvisor_figures
from ._image import ImageResult, image_cost
from ._network import NetworkResult, network_cost
from ._pool import PoolResult, pool_figures
from ._report import Figure
from ._settings import NAMESPACE, Settings

__all__ = ("defaults_section", "gvisor_section", "image_section", "network_section", "pool_section")


async def defaults_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    got: DefaultsResult = await defaults_cost(
        env.address,
        namespace=f"{NAMESPACE}-defaults-{loop}",
        sandboxer=PLUGIN_NAME,
        rounds=s.defaults_rounds,
    )
    results["defaults"] = {
        **asdict(got),
        "sandbox_added": got.sandbox_added,
        "member_added": got.member_added,
    }
    added, member = got.sandbox_added * 1000, got.member_added * 1000
    figures += [
        Figure("9. cold start: defaults vs unconfined, host users", loop, added,
               f"{added:+.1f} ms", "<= 5 ms", added <= 5,
               f"median {got.sandbox_with * 1000:.0f} vs {got.sandbox_without * 1000:.0f} ms "
               f"(user namespace alone {got.sandbox_userns_only * 1000:.0f} ms), "
               f"{got.rounds} alternating rounds; limits and log cap on both sides"),
        Figure("9. member cold start: defaults vs none", loop, member,
               f"{member:+.1f} ms", "<= 5 ms", member <= 5,
               f"median {got.member_with * 1000:.0f} vs {got.member_without * 1000:.0f} ms; "
               f"nested cgroup alone {got.member_nested_only * 1000:.0f} ms"),
    ]  # fmt: skip


async def pool_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    got: PoolResult = await pool_figures(
        env.address,
        namespace=f"{NAMESPACE}-pool-{loop}",
        sandboxer=PLUGIN_NAME,
        ctr=str(env.daemon.bin_dir / "ctr"),
        rounds=s.pool_rounds,
    )
    results["pool"] = {
        **asdict(got),
        "pooled_per_ctr": got.pooled_per_ctr,
        "exec_per_ctr": got.exec_per_ctr,
    }
    p99_ms = got.acquire_p99_s * 1000
    figures += [
        Figure("10. pool (warm_up): acquire + run(echo) + release vs ctr run --rm", loop,
               got.pooled_per_ctr, f"{got.pooled_per_ctr:.2f}x", "<= 0.3x",
               got.pooled_per_ctr <= 0.3,
               f"{got.pooled_s * 1000:.0f} vs {got.ctr_s * 1000:.0f} ms, warm_up=('true',); "
               f"no warm-up {got.unwarmed_s * 1000:.0f} ms = {got.unwarmed_s / got.ctr_s:.2f}x; "
               f"the exec path alone "
               f"(Task.run on a kept handle, outside the pool) {got.exec_s * 1000:.0f} ms = "
               f"{got.exec_per_ctr:.2f}x ctr; a cold start "
               f"(new+start+run+shutdown) {got.cold_s * 1000:.0f} ms = "
               f"{got.cold_per_ctr:.2f}x ctr; pooled {got.pooled_per_cold:.2f}x cold"),
        Figure("10. pool: acquire() alone, p99", loop, p99_ms, f"{p99_ms:.3f} ms",
               "<= 5 ms", p99_ms <= 5,
               f"p50 {got.acquire_p50_s * 1e6:.0f} µs over {got.rounds} rounds"),
    ]  # fmt: skip


async def gvisor_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    if loop != "asyncio":
        return  # seconds of gVisor's start, which no event loop changes: measured once
    got = await gvisor_figures(
        env.address,
        namespace=f"{NAMESPACE}-gvisor",
        sandboxer=PLUGIN_NAME,
        ctr=str(env.daemon.bin_dir / "ctr"),
        rounds=s.gvisor_rounds,
    )
    if got is None:
        figures.append(Figure("11. gVisor cold start vs ctr run --rm --runc-binary runsc",
                              loop, 0.0, "no runsc", "(reported)", None, ""))  # fmt: skip
        return
    results["gvisor"] = {**asdict(got), "ratio": got.ratio}
    figures.append(
        Figure(
            "11. gVisor cold start vs ctr run --rm --runc-binary runsc",
            loop,
            got.ratio,
            f"{got.ratio:.2f}x",
            "(reported)",
            None,
            f"{got.sandbox_s * 1000:.0f} vs {got.ctr_s * 1000:.0f} ms; new+start+run"
            f"(echo)+shutdown, {got.rounds} alternating rounds",
        )
    )


async def network_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    got: NetworkResult = await network_cost(
        env.address,
        namespace=f"{NAMESPACE}-network-{loop}",
        sandboxer=PLUGIN_NAME,
        rounds=s.network_rounds,
        state_dir=env.sandboxer.state_dir,
    )
    results["network"] = {**asdict(got), "added": got.added}
    added = got.added * 1000
    parts = ", ".join(f"{k} {v * 1000:.0f}" for k, v in got.plugins.items())
    figures.append(
        Figure("12. sandbox life: bridge + port vs no network", loop, added,
               f"{added:+.1f} ms", "<= 40 ms", added <= 40,
               f"median {got.bridge * 1000:.0f} vs {got.none * 1000:.0f} ms, "
               f"{got.rounds} alternating rounds of new, start, run true, shutdown; "
               f"DEL after Shutdown returned {got.background * 1000:.0f} ms, untimed; "
               f"alone, ms: {parts}")
    )  # fmt: skip


async def image_section(
    env: RealDaemon, loop: str, s: Settings, results: dict[str, Any], figures: list[Figure]
) -> None:
    got: ImageResult = await image_cost(
        env.address,
        namespace=f"{NAMESPACE}-image-{loop}",
        sandboxer=PLUGIN_NAME,
        rounds=s.image_rounds,
    )
    results["image"] = {**asdict(got), "ratio": got.ratio}
    figures.append(
        Figure("14. sandbox life: image root vs busybox root", loop, got.ratio,
               f"{got.ratio:.2f}x", "<= 1.10x", got.ratio <= 1.10,
               f"median {got.image * 1000:.0f} vs {got.busybox * 1000:.0f} ms, "
               f"{got.rounds} alternating rounds of new, start, run true, shutdown")
    )  # fmt: skip
