"""An isolated sandbox's Shutdown under a real containerd: every process of it ends, by the
sandboxer's own signal to its first process where that ends its pid namespace, by
containerd's kill of the whole task where it cannot (a paused task), and nothing is left."""

from __future__ import annotations

import os

import pytest

from sandboxclient import Client
from sandboxclient.sandboxer._podsignal import first_process
from tests.support.backends import RealContainerd
from tests.support.ctr import nothing_left
from tests.support.helpers import pid_namespace_members, wait_pid_gone

pytestmark = [pytest.mark.anyio, pytest.mark.real]


async def test_shutdown_ends_every_process_and_leaves_nothing(
    real: RealContainerd, tenant: Client
) -> None:
    sb = await tenant.new_sandbox("end1")
    await sb.start()
    assert sb.pid is not None
    pid_ns = os.readlink(f"/proc/{sb.pid}/ns/pid")
    # Its first process is one the sandboxer notes, to signal it itself at Shutdown.
    assert first_process(sb.pid, {"linux": {"namespaces": [{"type": "pid"}]}}, False) is not None
    quiet = "</dev/null >/dev/null 2>&1"
    detach = f"setsid sleep 7781 {quiet} & ( (sleep 7782 {quiet} &) & ) {quiet}"
    assert (await sb.run("sh", "-c", detach, timeout=30)).returncode == 0
    inside = pid_namespace_members(pid_ns)
    assert sb.pid in inside
    assert len(inside) >= 2  # the default process, and what was left behind
    await sb.shutdown()
    for pid in inside:
        await wait_pid_gone(pid)
    assert pid_namespace_members(pid_ns) == set()
    nothing_left(real, tenant.namespace)
    assert await tenant.list_sandboxes() == []


async def test_a_paused_sandbox_is_shut_down_too(real: RealContainerd, tenant: Client) -> None:
    # A frozen process dies of SIGKILL only once thawed on cgroup v1: past a short grace the
    # sandboxer has containerd kill the whole task (runc thaws it).
    sb = await tenant.new_sandbox("end2")
    await sb.start()
    assert sb.pid is not None
    task = await sb.task()
    await task.pause()
    await sb.shutdown()
    await wait_pid_gone(sb.pid)
    nothing_left(real, tenant.namespace)
    assert await tenant.list_sandboxes() == []
