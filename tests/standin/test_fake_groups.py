"""The stand-in's hold on its processes' groups once their leaders are reaped.

Each process of a stand-in task leads a process group, and signals for the whole task go
to those groups. Once a leader is reaped its number is the group's only while a member
lives; then the kernel can give it to any new process. What the group left behind is still
the task's; a stranger that got the number is not.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client, oci
from sandboxclient._serve._procfs import stat_fields
from sandboxclient.testing import FakeContainerd
from sandboxclient.testing._hostproc import GroupRemnant, group_map
from tests.support.constants import NS

pytestmark = pytest.mark.anyio


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


# Run in a pid namespace of its own, where nothing else takes pids, so that the kernel can be
# made to give a reaped exec's pid to a stranger at once (and no other test's pids are
# handed out again early): the stranger leads a session, so a group, of that number.
_STRANGER = """
import asyncio, os, signal, subprocess, sys
from sandboxclient import Client, oci
from sandboxclient.testing import FakeContainerd

def state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]

async def main(root):
    async with FakeContainerd() as fake, Client(fake.address, namespace="ns") as client:
        spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
        task = await (await client.new_container("c1", rootfs=root, spec=spec)).new_task()
        await task.start()
        gone = await task.spawn("true")
        assert (await gone.wait_exit()).returncode == 0
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(gone.pid - 1))
        stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            assert stranger.pid == gone.pid, (stranger.pid, gone.pid)
            assert os.getpgid(stranger.pid) == gone.pid
            listed = {p.pid for p in await task.pids()}
            assert stranger.pid not in listed, listed
            await task.pause()
            assert state(stranger.pid) != "T", "paused with the task"
            await task.resume()
            channel = await task.wait()
            await task.send_signal(signal.SIGKILL, all_processes=True)
            assert (await channel.get()).returncode == 137
            assert stranger.poll() is None, "killed with the task"
        finally:
            stranger.kill()
            stranger.wait()
    print("ok")

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a pid namespace of its own")
async def test_a_stranger_given_a_reaped_leader_s_number_is_not_the_task_s(root: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare is missing"
    done = await asyncio.create_subprocess_exec(
        unshare,
        "--pid",
        "--fork",
        "--mount-proc",
        sys.executable,
        "-c",
        _STRANGER,
        str(root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert (done.returncode, out) == (0, b"ok\n"), err.decode(errors="replace")


def test_a_member_it_may_not_signal_is_kept_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the stand-in's user may not signal (a member that ran a set-user-ID program) is
    # still there: an error out of the exit's callback would lose the task's exit.
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    remnant = GroupRemnant(leader.pid)
    try:
        deadline = time.monotonic() + 10
        while not remnant.pids() and time.monotonic() < deadline:  # until sh has forked
            remnant.take(group_map([leader.pid])[leader.pid])
        [member] = remnant.pids()

        def refused(pidfd: int, signum: int) -> None:
            raise PermissionError(1, "Operation not permitted")

        with monkeypatch.context() as patched:
            patched.setattr(signal, "pidfd_send_signal", refused)
            remnant.signal(signal.SIGKILL)
            assert remnant.drop_gone()
            assert remnant.pids() == [member]
        remnant.signal(signal.SIGKILL)  # allowed again: it goes
        deadline = time.monotonic() + 10
        while _running(member) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _running(member)
    finally:
        remnant.close()
        leader.kill()
        leader.wait()
