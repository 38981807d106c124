"""An image sandbox's writable root is bounded, on a real containerd with the isolating
sandboxer: its layer is a tmpfs of ``disk=`` bytes counted in its memory, so a fill stops at
``ENOSPC`` about there while containerd's disk does not move and a neighbour answers; files
written are root's inside; no mount of the layer is left after Start, Shutdown or a failed
Start; the layer keeps working across a sandboxer restart, and a restarted sandboxer
detaches a layer's tmpfs a killed one left. A member's image root, which the sandboxer
cannot bound, is read-only with a private /tmp unless asked for."""

from __future__ import annotations

import asyncio
import ctypes
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client, oci
from sandboxclient.errors import ContainerdError, FailedPreconditionError, InvalidArgumentError
from sandboxclient.sandboxer._harden import DEFAULT_DISK
from sandboxclient.sandboxer._rootdisk import LAYER_DIR, TMPFS_SOURCE
from sandboxclient.testing._userland import userland_archive
from tests.support.backends import PLUGIN_NAME, Backend, RealContainerd, new_namespace
from tests.support.cli import Cli
from tests.support.containers import started
from tests.support.ctr import answering

pytestmark = [pytest.mark.anyio, pytest.mark.real]

MiB = 2**20
IMAGE = "example.test/userland:disk"
CONFIG = {"Entrypoint": ["sleep", "2147483647"], "Env": ["PATH=/bin"]}
WRITABLE = {"root": {"readonly": False}, "process": {"user": {"uid": 0, "gid": 0}}}
FILL = "dd if=/dev/zero of=/fill bs=1M count={count}; sync; stat -c %s /fill"


@pytest.fixture
async def client(real: RealContainerd) -> AsyncIterator[Client]:
    async with Client(
        real.daemon.address, namespace=new_namespace(), sandboxer=PLUGIN_NAME, timeout=30
    ) as c:
        await c.import_image(io.BytesIO(userland_archive(IMAGE, CONFIG)))
        yield c


def disk_used(*tops: Path) -> int:
    """Bytes the files under ``tops`` hold on each top's own filesystem (mounts inside, such
    as a layer's tmpfs, are not counted): what the test's containerd and sandboxer wrote to
    disk, whatever else the host writes meanwhile."""
    used = 0
    for top in tops:
        device = top.stat().st_dev
        for folder, dirs, files in os.walk(top):
            inside = []
            for name in (*dirs, *files):
                try:
                    found = os.lstat(os.path.join(folder, name))
                except FileNotFoundError:
                    continue  # gone while walked
                if found.st_dev == device:
                    used += found.st_blocks * 512
                    inside.append(name)
            dirs[:] = [d for d in dirs if d in inside]
    return used


def mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def layers(real: RealContainerd) -> list[str]:
    """The host's mounts of a root layer's tmpfs under the sandboxer's state directory."""
    state = f" {real.sandboxer.state_dir}/"
    return [line for line in mountinfo().splitlines() if TMPFS_SOURCE in line and state in line]


def ours_mounted(real: RealContainerd, namespace: str, sandbox_id: str) -> list[str]:
    """The host's mounts of the sandbox's root or of a root layer's tmpfs."""
    root = f"/{namespace}/{sandbox_id}/"
    return layers(real) + [line for line in mountinfo().splitlines() if root in line]


def plant_layer(path: Path) -> str:
    """A root layer's tmpfs at ``path``, as a sandboxer killed during a Start leaves it."""
    path.mkdir(parents=True)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mount(TMPFS_SOURCE.encode(), bytes(path), b"tmpfs", 0, b"size=1m") == 0
    return str(path)


def left_behind(path: str) -> list[str]:
    """``path`` if it is still there."""
    return [path] if os.path.lexists(path) else []


async def test_a_writable_image_root_fills_to_its_bound_and_no_further(
    real: RealContainerd, client: Client
) -> None:
    ns, disk = client.namespace, 48 * MiB
    written = (real.daemon.root, real.daemon.state, Path(real.sandboxer.state_dir))
    before = disk_used(*written)
    async with (
        client.sandbox("disk1", image=IMAGE, spec=WRITABLE, disk="48Mi") as sb,
        client.sandbox("disk1-next") as neighbour,
    ):
        # no mount of the root is left on the host: the sandbox's namespace holds its copy
        assert layers(real) == []
        info = (await sb.status(verbose=True)).info
        assert info["disk_limit_bytes"] == str(disk), info
        info = (await neighbour.status(verbose=True)).info  # the default root's layer
        assert info["disk_limit_bytes"] == str(DEFAULT_DISK), info
        cli = Cli(Backend("real", real.daemon.address, PLUGIN_NAME, ns))
        shown = (await cli.ok("status", sb.id)).out.splitlines()
        assert f"INFO disk_limit_bytes: {disk}" in [" ".join(r.split()) for r in shown], shown
        done = await sb.run("sh", "-c", "touch /etc/new && stat -c %u:%g /etc/new /")
        assert done.stdout.decode().split() == ["0:0", "0:0"], done
        # a fill stops at ENOSPC about the bound, while the neighbour keeps answering
        fill = sb.run("sh", "-c", FILL.format(count=disk // MiB + 32), timeout=120)
        filled, *answers = await asyncio.gather(
            fill, *(neighbour.run("echo", "here") for _ in range(3))
        )
        assert b"No space left on device" in filled.stderr, filled
        assert disk - 4 * MiB <= int(filled.stdout) <= disk, filled
        assert all(a.stdout == b"here\n" for a in answers), answers
        # the layer's pages are the sandbox's memory, not containerd's disk
        assert disk_used(*written) <= before + 16 * MiB
        assert (await sb.run("rm", "/fill")).returncode == 0
        # the sandboxer restarted: the layer is the same, and still writable
        ghost = plant_layer(Path(real.sandboxer.state_dir, "sandboxes", ns, "ghost", LAYER_DIR))
        real.sandboxer.kill()
        real.sandboxer.start()
        assert (await answering(sb)).ready
        assert layers(real) == []  # what a killed sandboxer left is detached
        assert left_behind(os.path.dirname(ghost)) == []  # nor its empty directory
        done = await sb.run("sh", "-c", "ls /etc/new && echo again > /etc/new && cat /etc/new")
        assert done.stdout.decode().split() == ["/etc/new", "again"], done
        assert (await sb.status(verbose=True)).info["disk_limit_bytes"] == str(disk)
    assert ours_mounted(real, ns, "disk1") == []


async def test_a_failed_start_and_a_layer_beyond_memory_leave_no_mount(
    real: RealContainerd, client: Client
) -> None:
    ns = client.namespace
    spec = {**WRITABLE, "process": {"args": ["/no-such-program"]}}
    with pytest.raises(ContainerdError, match="no-such-program"):
        async with client.sandbox("disk2", image=IMAGE, spec=spec):
            pass
    assert ours_mounted(real, ns, "disk2") == []
    with pytest.raises(InvalidArgumentError, match="exceeds its memory limit"):
        async with client.sandbox("disk3", image=IMAGE, disk="64Mi", memory="32Mi"):
            pass
    assert ours_mounted(real, ns, "disk3") == []
    assert await client.list_sandboxes() == []


async def test_a_member_s_image_root_is_read_only_unless_asked_for(client: Client) -> None:
    async with client.sandbox("disk4") as sb:
        member = await sb.new_container("disk4-m", image=IMAGE)
        async with started(member) as task:
            done = await task.run("sh", "-c", "touch /x; echo hi > /tmp/y && cat /tmp/y")
            assert b"Read-only file system" in done.stderr, done
            assert done.stdout == b"hi\n", done
        spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
        with pytest.raises(FailedPreconditionError, match="writable_root=True"):
            await sb.new_container("disk4-w", image=IMAGE, spec=spec)
        writable = await sb.new_container("disk4-w", image=IMAGE, writable_root=True)
        async with started(writable) as task:
            done = await task.run("sh", "-c", "touch /x && echo written")
            assert done.stdout == b"written\n", done
