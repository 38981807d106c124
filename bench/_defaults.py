"""What the secure defaults cost a cold start, measured side by side in alternating rounds.

- **Sandbox**: ``new_sandbox`` + ``start`` of a sandbox with no spec (the default seccomp
  profile, a user namespace of its own, owned by its block, limits, bounded log, tmpfs inode
  bounds) against one whose spec opts out of the seccomp filter
  (``oci.with_seccomp_unconfined()``) and asks for the host's users (``host_users``), and
  one that opts out of the filter only (what the user namespace costs alone). The limits,
  the log keeper and the inode bounds have no per-sandbox opt-out, so they are on every
  side; the log keeper's own cost is measured in docs/security.md.
- **Member**: ``Sandbox.new_container`` + ``new_task`` + ``start`` of a member whose spec
  says nothing (the client reads the sandbox's container record, adds the default profile
  and nests its cgroup) against one whose spec names an unconfined filter and containerd's
  own cgroup path (what a member got before the defaults), and one with the nested cgroup
  but no filter (what nesting costs alone). All three read the sandbox's container record
  (one Get), which ``Sandbox.new_container`` now always does.

Each round starts one of each, the order alternating, and every start is timed alone.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sandboxclient import Client, Sandbox, oci
from sandboxclient._serve._busybox import build_busybox_root

__all__ = ("DefaultsResult", "defaults_cost")

_SIDE = {"+": "with", "-": "without", "c": "nested", "u": "userns"}


@dataclass(frozen=True)
class DefaultsResult:
    """Median seconds of each kind of cold start, with and without the defaults."""

    rounds: int
    sandbox_with: float
    sandbox_without: float
    sandbox_userns_only: float
    """A sandbox with the user namespace but no filter."""
    member_with: float
    member_without: float
    member_nested_only: float
    """A member with the nested cgroup but no filter."""

    @property
    def sandbox_added(self) -> float:
        """Seconds the defaults add to a sandbox's cold start, at the median."""
        return self.sandbox_with - self.sandbox_without

    @property
    def member_added(self) -> float:
        """Seconds the defaults add to a member's cold start, at the median."""
        return self.member_with - self.member_without


async def _timed(start: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await start()
    return time.perf_counter() - began


async def defaults_cost(
    address: str, *, namespace: str, sandboxer: str, rounds: int
) -> DefaultsResult:
    """Time ``rounds`` cold starts of each kind (see the module's docstring)."""
    times: dict[str, list[float]] = {k: [] for k in ("sb+", "sb-", "sbu", "m+", "m-", "mc")}
    async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client:
        free = oci.generate_spec(oci.with_seccomp_unconfined())
        specs = {
            "sb+": None,
            "sb-": oci.generate_spec(oci.with_seccomp_unconfined(), oci.with_host_users()),
            "sbu": {"annotations": dict(free["annotations"])},  # no rlimits: see _userns_owner
        }

        async def sandbox(kind: str, index: int) -> None:
            sb: Sandbox | None = None

            async def start() -> None:
                nonlocal sb
                spec = specs[kind]
                sb = await client.new_sandbox(f"cold-{_SIDE[kind[-1]]}-{index + 1}", spec=spec)
                await sb.start()

            try:
                times[kind].append(await _timed(start))
            finally:
                if sb is not None:
                    await sb.shutdown()

        with tempfile.TemporaryDirectory(prefix="bench-member-") as root:
            build_busybox_root(root)
            async with client.sandbox("cold-host") as host:

                async def member(kind: str, index: int) -> None:
                    member_id = f"cold-m{_SIDE[kind[-1]]}-{index + 1}"
                    opts = [oci.with_process_args("sleep", "600")]
                    if kind != "m+":
                        opts.append(oci.with_seccomp_unconfined())
                    if kind == "m-":
                        opts.append(oci.with_cgroup(f"/{namespace}/{member_id}"))
                    spec = oci.generate_spec(*opts)
                    made = []

                    async def start() -> None:
                        container = await host.new_container(member_id, rootfs=root, spec=spec)
                        made.append(container)
                        task = await container.new_task()
                        await task.start()

                    try:
                        times[kind].append(await _timed(start))
                    finally:
                        for container in made:
                            await container.delete(force=True)

                for sign in "+-":  # warm: the first of each pays for caches
                    await sandbox(f"sb{sign}", -1)
                    await member(f"m{sign}", -1)
                await sandbox("sbu", -1)
                await member("mc", -1)
                for samples in times.values():
                    samples.clear()
                for index in range(rounds):
                    pair = ("+", "-") if index % 2 == 0 else ("-", "+")
                    for sign in pair:
                        await sandbox(f"sb{sign}", index)
                        await member(f"m{sign}", index)
                    await sandbox("sbu", index)
                    await member("mc", index)
    return DefaultsResult(
        rounds=rounds,
        sandbox_with=statistics.median(times["sb+"]),
        sandbox_without=statistics.median(times["sb-"]),
        sandbox_userns_only=statistics.median(times["sbu"]),
        member_with=statistics.median(times["m+"]),
        member_without=statistics.median(times["m-"]),
        member_nested_only=statistics.median(times["mc"]),
    )
