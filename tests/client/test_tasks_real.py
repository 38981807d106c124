"""What only a real containerd can show: pods, images and snapshots, a daemon restart, and
nothing left behind as ctr sees it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from sandboxclient import PIPE, Client, DeadlineExceededError, NotFoundError, Task, oci
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.constants import RUNTIME
from tests.support.cri import CRI_METADATA_URL, cri_metadata
from tests.support.fifos import read_fifo_line
from tests.support.helpers import wait_pid_gone

pytestmark = [pytest.mark.anyio, pytest.mark.real]

IMAGE = "example.test/busybox:1"


def _ctr_lines(real: RealContainerd, namespace: str, *args: str) -> list[str]:
    """The first column of what ``ctr ... ls`` lists, headers aside."""
    out = real.daemon.ctr(*args, namespace=namespace).stdout.splitlines()
    return [line.split()[0] for line in out[1:] if line.strip()]


def _exec_pids(real: RealContainerd, namespace: str, container_id: str) -> list[str]:
    """The pids ``ctr tasks ps`` lists for a container's task."""
    return _ctr_lines(real, namespace, "tasks", "ps", container_id)


async def _nothing_left(
    real: RealContainerd, namespace: str, shims_before: set[int], image_layers: Sequence[str] = ()
) -> None:
    """No task, container, snapshot (but an image's ``image_layers``) or lease of
    ``namespace`` is left as ctr sees it, and no shim beyond those running before."""
    for pid in set(real.daemon.shim_pids()) - shims_before:
        # A shim exits by itself once containerd has deleted its last task.
        await wait_pid_gone(pid)
    assert set(real.daemon.shim_pids()) <= shims_before
    for what in ("tasks", "containers", "leases"):
        assert _ctr_lines(real, namespace, what, "ls") == [], what
    assert _ctr_lines(real, namespace, "snapshots", "ls") == list(image_layers)


async def _cut_short(task: Task, how: str, rootfs: Path) -> None:
    """A run of the task that outlives its ``timeout``, or that is cancelled once up."""
    if how == "timeout":
        with pytest.raises(DeadlineExceededError):
            await task.run("sleep", "600", timeout=0.5)
        return
    name = f"up-{uuid.uuid4().hex[:8]}"
    os.mkfifo(rootfs / "tmp" / name)
    try:
        up = asyncio.ensure_future(read_fifo_line(str(rootfs / "tmp" / name)))
        running = asyncio.create_task(task.run("sh", "-c", f"echo up > /tmp/{name}; sleep 600"))
        assert await up == b"up\n"
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    finally:
        (rootfs / "tmp" / name).unlink()


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_run_cut_short_leaves_nothing_ctr_can_see(
    real: RealContainerd, rootfs: Path, how: str
) -> None:
    namespace = new_namespace()
    shims = set(real.daemon.shim_pids())
    async with Client(real.daemon.address, namespace=namespace, timeout=20) as client:
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
        container = await client.new_container("cut1", rootfs=rootfs, spec=spec)
        task = await container.new_task()
        await task.start()
        await _cut_short(task, how, rootfs)
        # The exec was killed and deleted: the task runs its own process only.
        assert _exec_pids(real, namespace, "cut1") == [str(task.pid)]
        await container.delete(force=True)
    await _nothing_left(real, namespace, shims)


def _with_image(real: RealContainerd, tmp_path: Path) -> str:
    """A new namespace with the pause image ``IMAGE`` imported (and unpacked) into it."""
    namespace = new_namespace()
    archive = tmp_path / "image.tar"
    archive.write_bytes(build_pause_archive(IMAGE))
    real.daemon.ctr("images", "import", str(archive), namespace=namespace)
    return namespace


async def test_a_timed_out_run_on_an_image_root_leaves_nothing(
    real: RealContainerd, tmp_path: Path
) -> None:
    namespace = _with_image(real, tmp_path)
    shims = set(real.daemon.shim_pids())
    layers = _ctr_lines(real, namespace, "snapshots", "ls")
    try:
        async with Client(real.daemon.address, namespace=namespace, timeout=20) as client:
            container = await client.new_container("cut2", image=IMAGE)
            task = await container.new_task()
            await task.start()
            with pytest.raises(DeadlineExceededError):
                await task.run("sleep", "600", timeout=0.5)
            assert _exec_pids(real, namespace, "cut2") == [str(task.pid)]
            await container.delete(force=True)
        await _nothing_left(real, namespace, shims, layers)
    finally:
        real.daemon.ctr("images", "rm", IMAGE, namespace=namespace)


async def test_a_wait_on_a_task_survives_a_daemon_kill_and_restart(
    real: RealContainerd, rootfs: Path
) -> None:
    namespace = new_namespace()
    async with Client(real.daemon.address, namespace=namespace, timeout=20) as client:
        container = await client.new_container(
            "rst1",
            rootfs=rootfs,
            spec=oci.generate_spec(oci.with_process_args("sh", "-c", "read x; exit 7")),
        )
        task = await container.new_task(stdin=PIPE)
        await task.start()
        channel = await task.wait()
        real.daemon.kill()
        real.daemon.restart()
        # The shim kept the task; the wait rides out the restart and gets the real code.
        assert task.stdin is not None
        task.stdin.write(b"go\n")
        await task.stdin.drain()
        status = await asyncio.wait_for(channel.get(), 30)
        assert status.error is None, status.error
        assert status.returncode == 7
        await container.delete(force=True)
        assert _ctr_lines(real, namespace, "tasks", "ls") == []


async def test_an_image_rootfs_is_a_snapshot_that_goes_with_its_container(
    real: RealContainerd, tmp_path: Path
) -> None:
    namespace = _with_image(real, tmp_path)
    async with Client(real.daemon.address, namespace=namespace, timeout=20) as client:
        with pytest.raises(NotFoundError, match="not found"):
            await client.new_container("img0", image="example.test/missing:1")
        container = await client.new_container("img1", image=IMAGE)
        info = container.metadata
        assert (info.image, info.snapshotter, info.snapshot_key) == (IMAGE, "overlayfs", "img1")
        assert "img1" in _ctr_lines(real, namespace, "snapshots", "ls")
        # No spec given: the image's own command runs (sleep infinity), on its own root.
        task = await container.new_task()
        await task.start()
        done = await task.run("sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; ls /bin/busybox")
        assert done.stdout.split() == [b"/bin/sleep", b"infinity", b"/bin/busybox"]
        await container.delete(force=True)
        assert "img1" not in _ctr_lines(real, namespace, "snapshots", "ls")
        assert _ctr_lines(real, namespace, "containers", "ls") == []
        assert _ctr_lines(real, namespace, "leases", "ls") == []
    real.daemon.ctr("images", "rm", IMAGE, namespace=namespace)


async def test_a_container_in_a_pod_shares_its_network_and_uts_namespaces(
    real: RealContainerd, rootfs: Path
) -> None:
    real.daemon.ensure_pause_image("k8s.io")
    sandbox_id = f"pod{uuid.uuid4().hex[:10]}"
    async with Client(real.daemon.address, namespace="k8s.io", sandboxer="podsandbox") as client:
        sb = await client.new_sandbox(
            sandbox_id,
            runtime=RUNTIME,
            extensions={"metadata": (CRI_METADATA_URL, cri_metadata(sandbox_id, "pod"))},
        )
        try:
            started = await sb.start()
            member = await sb.new_container(
                f"{sandbox_id}-c1",
                rootfs=rootfs,
                spec=oci.generate_spec(oci.with_process_args("sleep", "600")),
            )
            task = await member.new_task()
            await task.start()
            show = "for n in net uts pid; do readlink /proc/self/ns/$n; done"
            shown = await task.run("sh", "-c", show)
            ours = shown.stdout.split()
            assert len(ours) == 3, shown
            pause = [
                os.readlink(f"/proc/{started.pid}/ns/{kind}") for kind in ("net", "uts", "pid")
            ]
            assert ours[0].decode() == pause[0]  # the pod's network
            assert ours[1].decode() == pause[1]  # the pod's hostname
            assert ours[2].decode() != pause[2]  # a PID namespace of its own
            # Exec into the sandbox's own task (the pause container).
            assert (await sb.run("sh", "-c", "exit 5")).returncode == 5
        finally:
            await sb.shutdown()
        assert [c.id for c in await client.list_containers(f"id=={sandbox_id}-c1")] == []


async def test_the_python_sandboxers_sandbox_is_a_task_of_its_own(real: RealContainerd) -> None:
    namespace = new_namespace()
    async with (
        Client(real.daemon.address, namespace=namespace, sandboxer=PLUGIN_NAME) as client,
        client.sandbox("owntask1", runtime=RUNTIME) as sb,
    ):
        task = await sb.task()
        assert task.pid == (await sb.status()).pid == sb.pid
        assert (await sb.run("sh", "-c", "exit 4")).returncode == 4
        # The container with the sandbox's id is the sandboxer's; the sandbox lists none.
        assert _ctr_lines(real, namespace, "containers", "ls") == ["owntask1"]
        assert await sb.list_containers() == []
    assert _ctr_lines(real, namespace, "containers", "ls") == []
    assert _ctr_lines(real, namespace, "tasks", "ls") == []
