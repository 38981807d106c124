"""The stand-in's hold on its processes' groups once their leaders are reaped.

Each process of a stand-in task leads a process group, and signals for the whole task go
to those groups. Once a leader is reaped its number is the group's only while a member
lives; then the kernel can give it to any new process. What the group left behind is still
the task's; a stranger that got the number is not.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client, oci
from sandboxclient._serve._procfs import stat_fields
from sandboxclient.testing import FakeContainerd
from tests.support.constants import NS

pytestmark = pytest.mark.anyio

_NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with FakeContainerd() as fake, Client(fake.address, namespace=NS) as client:
        yield client


def _running(pid: int) -> bool:
    try:
        return stat_fields(pid)[0] not in ("Z", "X")
    except OSError:
        return False


async def test_what_an_exited_exec_left_in_its_group_is_still_the_task_s(
    client: Client, root: Path
) -> None:
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    task = await (await client.new_container("c1", rootfs=root, spec=spec)).new_task()
    await task.start()
    done = await task.run("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!")
    left = int(done.stdout)
    assert done.returncode == 0, done
    assert _running(left)
    assert left in {p.pid for p in await task.pids()}
    await task.pause()
    assert stat_fields(left)[0] == "T"
    await task.resume()
    channel = await task.wait()
    await task.send_signal(signal.SIGKILL, all_processes=True)
    assert (await channel.get()).returncode == 137
    assert not _running(left)


def _stranger_at(pid: int) -> subprocess.Popen[bytes] | None:
    """A process of this test's own, in a session of its own, as ``pid`` if the kernel
    gives it that number (another process may take it first)."""
    with open(_NS_LAST_PID, "w") as f:
        f.write(str(pid - 1))
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    if stranger.pid == pid:
        return stranger
    stranger.kill()
    stranger.wait()
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to choose the next pid")
async def test_a_stranger_given_a_reaped_leader_s_number_is_not_the_task_s(
    client: Client, root: Path
) -> None:
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    task = await (await client.new_container("c1", rootfs=root, spec=spec)).new_task()
    await task.start()
    stranger = None
    for _ in range(20):  # each try frees a new number: an exec that ran and was reaped
        gone = await task.spawn("true")
        assert (await gone.wait_exit()).returncode == 0
        stranger = _stranger_at(gone.pid)
        if stranger is not None:
            break
    assert stranger is not None, "the kernel never gave a reaped exec's pid out again"
    try:
        assert os.getpgid(stranger.pid) == gone.pid  # a group of the exec's number
        assert stranger.pid not in {p.pid for p in await task.pids()}
        await task.pause()
        assert stat_fields(stranger.pid)[0] != "T"
        await task.resume()
        channel = await task.wait()
        await task.send_signal(signal.SIGKILL, all_processes=True)
        assert (await channel.get()).returncode == 137
        assert stranger.poll() is None, "the stand-in killed a process not its own"
    finally:
        stranger.kill()
        stranger.wait()
