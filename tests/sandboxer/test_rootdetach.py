"""A created task's root taken out of the host's mount table (``sandboxer/_rootdetach``),
against tmpfs mounts at a bundle's ``rootfs`` path and processes chrooted into them (as
root with CAP_SYS_ADMIN): only the mounts that are the task's root go, the root lives on for
its process, and a process or table that cannot be read costs nothing but a log line. The
Start's hook runs the detach off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxclient.sandboxer import _rootdetach
from sandboxclient.sandboxer._rootdetach import detach_task_root, detaching_first

_MNT_DETACH = 2
_CAP_SYS_ADMIN = 21


def cannot_mount() -> str | None:
    """Why this process cannot mount a tmpfs, or None when it can."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    with open("/proc/self/status") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    if not effective >> _CAP_SYS_ADMIN & 1:
        return "mounting a tmpfs needs CAP_SYS_ADMIN, which this process lacks (CapEff)"
    return None


def mounted(point: Path) -> int:
    """How many mounts this process's table has at ``point``."""
    target = os.fsencode(point)
    with open("/proc/self/mountinfo", "rb") as f:
        return sum(line.split()[4] == target for line in f)


def mount_tmpfs(point: Path) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", os.fsdecode(point)], check=True
    )


@pytest.fixture
def bundle_root(tmp_path: Path) -> Iterator[Path]:
    """``<tmp>/io.containerd.runtime.v2.task/ns/sb/rootfs``: what is mounted there is
    detached after the test. The test is skipped, saying why, when this process cannot mount."""
    why = cannot_mount()
    if why is not None:
        pytest.skip(why)
    point = tmp_path / "io.containerd.runtime.v2.task" / "ns" / "sb" / "rootfs"
    point.mkdir(parents=True)
    yield point
    libc = ctypes.CDLL(None, use_errno=True)
    while mounted(point):
        assert libc.umount2(os.fsencode(point), _MNT_DETACH) == 0


_CHROOTED = "import os, sys; os.chroot(sys.argv[1]); print('!', flush=True); sys.stdin.read()"


@contextlib.contextmanager
def rooted_at(path: Path) -> Iterator[int]:
    """A process whose root is ``path`` (chrooted), waiting until the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHROOTED, os.fsdecode(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"!\n"  # chrooted
        yield child.pid
    finally:
        child.stdin.close()
        child.stdout.close()
        child.wait()


def test_the_task_s_root_leaves_the_host_s_table_and_lives_on_for_its_process(
    bundle_root: Path,
) -> None:
    mount_tmpfs(bundle_root)
    (bundle_root / "kept").write_text("still here")
    with rooted_at(bundle_root) as pid:
        assert detach_task_root("ns", "sb", pid) == 1
        assert mounted(bundle_root) == 0
        assert not (bundle_root / "kept").exists()
        assert Path(f"/proc/{pid}/root/kept").read_text() == "still here"


def test_a_mount_there_that_is_not_the_task_s_root_is_left(bundle_root: Path) -> None:
    mount_tmpfs(bundle_root)
    assert detach_task_root("ns", "sb", os.getpid()) == 0  # its root is the host's
    assert mounted(bundle_root) == 1
    with rooted_at(bundle_root) as pid:
        assert detach_task_root("ns", "other", pid) == 0  # another sandbox's path
        assert mounted(bundle_root) == 1


def test_of_a_stack_only_the_mounts_on_top_that_are_the_root_go(bundle_root: Path) -> None:
    mount_tmpfs(bundle_root)  # below: not the root
    mount_tmpfs(bundle_root)
    with rooted_at(bundle_root) as pid:
        assert detach_task_root("ns", "sb", pid) == 1
        assert mounted(bundle_root) == 1
    mount_tmpfs(bundle_root)  # on top, over the one a process is rooted in: nothing goes
    with rooted_at(bundle_root) as pid:
        mount_tmpfs(bundle_root)
        assert detach_task_root("ns", "sb", pid) == 0
        assert mounted(bundle_root) == 3


def test_binds_of_the_root_stacked_on_it_go_with_it(bundle_root: Path) -> None:
    mount_tmpfs(bundle_root)
    bind = os.fsdecode(bundle_root)
    subprocess.run(["mount", "--bind", bind, bind], check=True)  # as an idmapped clone is
    with rooted_at(bundle_root) as pid:
        assert detach_task_root("ns", "sb", pid) == 2
        assert mounted(bundle_root) == 0


def test_an_exited_or_gone_process_and_odd_mount_names_are_no_error(
    bundle_root: Path, tmp_path: Path
) -> None:
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/not-utf8-\xff name"))
    odd.mkdir()
    mount_tmpfs(odd)  # in the host's table, read by every detach
    try:
        mount_tmpfs(bundle_root)
        with rooted_at(bundle_root) as pid:
            assert detach_task_root("ns", "sb", pid) == 1
        mount_tmpfs(bundle_root)
        child = subprocess.Popen(["true"])
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        try:
            assert detach_task_root("ns", "sb", child.pid) == 0
        finally:
            child.wait()
        assert detach_task_root("ns", "sb", child.pid) == 0  # gone
        assert mounted(bundle_root) == 1
    finally:
        subprocess.run(["umount", "-l", os.fsdecode(odd)], check=True)


@pytest.mark.anyio
async def test_the_start_s_hook_detaches_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released = threading.Event()
    waited: list[bool] = []

    def hung(namespace: str, sandbox_id: str, pid: int) -> int:
        # as a stat of a root on a hung filesystem: until the loop, running meanwhile, ends it
        waited.append(released.wait(10))
        return 0

    async def release() -> None:
        released.set()

    monkeypatch.setattr(_rootdetach, "detach_task_root", hung)
    await asyncio.gather(detaching_first(None, "ns", "sb")(1), release())
    assert waited == [True]


@pytest.mark.anyio
async def test_the_start_s_hook_goes_on_past_a_process_it_cannot_read() -> None:
    child = await asyncio.create_subprocess_exec("true")
    await child.wait()  # gone: its root cannot be read
    attached: list[int] = []

    async def attach(pid: int) -> None:
        attached.append(pid)

    await detaching_first(attach, "ns", "sb")(child.pid)
    assert attached == [child.pid]


def test_with_no_mount_at_the_bundle_the_process_s_root_is_not_looked_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A root the caller gave as a path: the shim mounts nothing, and the caller's filesystem
    # (a network one may hang) is not stat'ed at all.
    looked: list[str] = []
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        looked.append(os.fsdecode(path))  # type: ignore[arg-type]
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    assert detach_task_root("ns-none", "sb-none", os.getpid()) == 0
    assert looked == []
