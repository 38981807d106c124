"""Attacks from inside default sandboxes stay inside their bounds while a neighbour keeps
starting in about its idle time, on a real containerd: a disk fill of every writable place,
and CPU, fork and memory hogs beside a disk fill (the log flood, a million empty files, a
keyring fill and inotify exhaustion are in test_hardening, test_userns and test_budgets).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import pytest

from sandboxclient import Client, Sandbox
from sandboxclient.sandboxer._harden import DEFAULT_MEMORY, DEFAULT_PIDS
from tests.support.backends import RealContainerd

pytestmark = [pytest.mark.anyio, pytest.mark.real]

MiB = 2**20
# What a default sandbox may have mounted read-write that is no store of its own: the
# kernel's views and its message queues, none of them written to disk.
NOT_A_STORE = {"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"}


def option_bytes(options: list[str], key: str) -> int | None:
    for option in options:
        name, _, value = option.partition("=")
        if name == key:
            units = {"k": 2**10, "m": MiB, "g": 2**30}
            suffix = value[-1:].lower()
            return int(value[:-1]) * units[suffix] if suffix in units else int(value)
    return None


def host_free(path: str) -> int:
    found = os.statvfs(path)
    return found.f_bavail * found.f_frsize


async def writable_mounts(sb: Sandbox) -> dict[str, tuple[str, list[str]]]:
    """The sandbox's read-write mounts as it sees them: point -> (type, options)."""
    text = (await sb.run("cat", "/proc/mounts")).stdout.decode()
    found = {}
    for line in text.splitlines():
        _, point, kind, options, *_ = line.split()
        if "rw" in options.split(","):
            found[point] = (kind, options.split(","))
    return found


async def test_a_disk_fill_of_every_writable_place_stops_at_its_bound(
    real: RealContainerd, tenant: Client
) -> None:
    state = str(real.sandboxer.state_dir)
    async with tenant.sandbox("fill1") as sb, tenant.sandbox("fill1-next") as neighbour:
        mounts = await writable_mounts(sb)
        assert "/" not in mounts  # the default root is read-only
        refused = await sb.run("sh", "-c", "echo x > /fill")
        assert b"Read-only file system" in refused.stderr, refused
        devices = [p for p, (kind, _) in mounts.items() if kind == "devtmpfs"]
        for point in devices:  # the host's /dev/null, /dev/zero... bound one by one
            kind = await sb.run("stat", "-c", "%F", point)
            assert kind.stdout == b"character special file\n", point
        stores = {p: m for p, m in mounts.items() if m[0] not in NOT_A_STORE | {"devtmpfs"}}
        assert {"/tmp", "/dev", "/dev/shm", "/run"} <= set(stores)
        assert {kind for kind, _ in stores.values()} == {"tmpfs"}, stores
        before = {path: host_free(path) for path in (state, "/")}
        for point, (_, options) in sorted(stores.items()):
            bound = option_bytes(options, "size")
            assert bound is not None, (point, options)
            count = (bound + 64 * MiB) // MiB
            fill = f"dd if=/dev/zero of={point}/fill bs=1M count={count}; stat -c %s {point}/fill"
            done = await sb.run("sh", "-c", fill, timeout=120)
            assert b"No space left on device" in done.stderr, (point, done)
            assert int(done.stdout) <= bound, point
            assert int(done.stdout) >= bound - 4 * MiB, point  # it did fill
            assert (await sb.run("rm", f"{point}/fill")).returncode == 0
        for path, free in before.items():  # tmpfs pages are the sandbox's memory, not disk
            assert host_free(path) >= free - 64 * MiB, path
        assert (await neighbour.run("echo", "here")).stdout == b"here\n"


async def cold_start(client: Client, name: str) -> float:
    """Seconds of one Create + Start of a default sandbox (shut down after, untimed)."""
    began = time.perf_counter()
    sb = await client.new_sandbox(name)
    try:
        await sb.start()
        return time.perf_counter() - began
    finally:
        await sb.shutdown()


async def median_start(client: Client, prefix: str, rounds: int) -> float:
    return statistics.median([await cold_start(client, f"{prefix}-{i}") for i in range(rounds)])


async def reaches(sb: Sandbox, pids: int, oom_kills: int, timeout: float = 60) -> None:
    """Poll the sandbox's metrics until it holds ``pids`` tasks and saw ``oom_kills``: its
    attacks are at their bounds (nothing else announces it)."""
    async with asyncio.timeout(timeout):
        while True:
            usage = await sb.metrics()
            if (usage.pids or 0) >= pids and (usage.oom_kills or 0) >= oom_kills:
                return
            await asyncio.sleep(0.1)


async def test_a_neighbour_starts_within_twice_its_idle_time_during_the_attacks(
    tenant: Client,
) -> None:
    rounds = 5
    await cold_start(tenant, "warm")  # the first start pays for caches
    idle = await median_start(tenant, "idle", rounds)
    # A fork bomb up to the pids limit (the forks past it fail), then idle; beside it, one
    # sandbox's CPU hogs, a memory hog OOM-killed again and again and a /tmp fill loop, all
    # held to the sandbox's one CPU: the machine's other core stays the host's.
    forks = f"for i in $(seq {DEFAULT_PIDS + 100}); do sleep 600 & done 2>/dev/null; wait"
    hogs = (
        "for i in 1 2 3 4; do (while :; do :; done) & done; "
        "(while :; do dd if=/dev/zero of=/dev/null bs=900M count=1; done) 2>/dev/null & "
        "while :; do head -c 200000000 /dev/zero > /tmp/fill; rm -f /tmp/fill; done"
    )
    async with (
        tenant.sandbox("bomb3") as bombed,
        tenant.sandbox("hogs3") as hogged,
        await bombed.spawn("sh", "-c", forks),
        await hogged.spawn("sh", "-c", hogs),
    ):
        await reaches(bombed, pids=DEFAULT_PIDS - 16, oom_kills=0)
        await reaches(hogged, pids=1, oom_kills=1)
        loaded = await median_start(tenant, "busy", rounds)
        # Still at their bounds: the fork bomb at the pids limit, the hog killed again.
        assert DEFAULT_PIDS - 16 <= ((await bombed.metrics()).pids or 0) <= DEFAULT_PIDS
        usage = await hogged.metrics()
        assert usage.memory_max_usage_bytes is not None
        assert usage.memory_max_usage_bytes <= DEFAULT_MEMORY
    # Idle again after: what the rest of the machine does may have changed meanwhile.
    idle = max(idle, await median_start(tenant, "after", rounds))
    print(f"neighbour's Create+Start: idle {idle * 1000:.0f} ms, attacked {loaded * 1000:.0f} ms")
    assert loaded <= 2 * idle, f"idle {idle * 1000:.0f} ms, under attack {loaded * 1000:.0f} ms"
