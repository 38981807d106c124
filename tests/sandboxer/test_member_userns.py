"""Members (``Sandbox.new_container``) join their sandbox's user namespace as they join its
network, under a real containerd: checked from inside (the member's task and an exec in it)
and from the host, for a member on a host directory and one on an image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandboxclient import PIPE, Client, Sandbox, Task, oci
from sandboxclient._members._userns import ROOTFS_BIND_ANNOTATION
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.containers import started

pytestmark = [pytest.mark.anyio, pytest.mark.real]

IMAGE = "example.test/busybox-member:1"
IDENTITY = b"0 0 4294967295"
# busybox's applets by name: the image links only sh and sleep
INSIDE = "busybox cat /proc/self/uid_map; busybox id -u; busybox stat -c %u:%g / /bin /bin/busybox"


def host_uid(pid: int) -> int:
    """The real uid of ``pid`` as the host sees it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def words(text: bytes) -> list[bytes]:
    return text.split()


async def sandbox_map(sb: Sandbox) -> bytes:
    return b" ".join(words((await sb.run("cat", "/proc/self/uid_map")).stdout))


async def check_joined(sb: Sandbox, task: Task) -> None:
    """The member's task and an exec in it are in the sandbox's user namespace: its map,
    root inside with a root-owned root, the block's first id on the host."""
    expected = await sandbox_map(sb)
    assert words(expected)[:2] != [b"0", b"0"], expected  # a block, not the identity
    start = int(words(expected)[1])
    done = await task.run("sh", "-c", INSIDE)
    assert done.returncode == 0, done
    out = words(done.stdout)
    assert b" ".join(out[:3]) == expected
    assert out[3:] == [b"0", b"0:0", b"0:0", b"0:0"], done
    assert host_uid(task.pid) == start
    ns_inode = ("busybox", "stat", "-L", "-c", "%i", "/proc/self/ns/user")
    ns = (await sb.run(*ns_inode)).stdout
    assert ns.strip().isdigit()
    assert (await task.run(*ns_inode)).stdout == ns
    async with await task.spawn("sleep", "600", stdout=PIPE) as proc:
        assert host_uid(proc.pid) == start


def member_spec(*opts: oci.SpecOpt) -> dict[str, Any]:
    return oci.generate_spec(oci.with_process_args("sleep", "600"), *opts)


async def test_a_member_on_a_host_directory_joins_the_sandbox_s_users(
    tenant: Client, rootfs: Path
) -> None:
    async with tenant.sandbox("mus1") as sb:
        member = await sb.new_container(
            "mus1-m", rootfs=rootfs, spec=member_spec(oci.with_rootfs_readonly())
        )
        spec = member.metadata.spec
        assert spec is not None
        assert {"type": "user", "path": f"/proc/{sb.pid}/ns/user"} in spec["linux"]["namespaces"]
        assert spec["root"] == {"path": "rootfs", "readonly": True}
        assert spec["annotations"][ROOTFS_BIND_ANNOTATION] == str(rootfs)
        async with started(member) as task:
            await check_joined(sb, task)
            # read-only as asked, through the spec (containerd idmaps no read-only bind)
            wrote = await task.run("touch", "/x")
            assert wrote.returncode != 0
            assert b"Read-only" in wrote.stderr
        assert not (rootfs / "x").exists()


async def test_a_member_of_a_host_users_sandbox_keeps_the_identity_map(
    tenant: Client, rootfs: Path
) -> None:
    async with tenant.sandbox("mus2", host_users=True) as sb:
        assert await sandbox_map(sb) == IDENTITY
        member = await sb.new_container("mus2-m", rootfs=rootfs, spec=member_spec())
        spec = member.metadata.spec
        assert spec is not None
        assert all(n["type"] != "user" for n in spec["linux"]["namespaces"])
        async with started(member) as task:
            done = await task.run("cat", "/proc/self/uid_map")
            assert b" ".join(words(done.stdout)) == IDENTITY
            assert host_uid(task.pid) == 0


async def test_a_member_s_own_user_namespace_is_used_as_given(tenant: Client, rootfs: Path) -> None:
    own = member_spec(oci.with_user_namespace([(0, 0, 2**32 - 1)], [(0, 0, 2**32 - 1)]))
    async with tenant.sandbox("mus3") as sb:
        member = await sb.new_container("mus3-m", rootfs=rootfs, spec=own)
        spec = member.metadata.spec
        assert spec is not None
        users = [n for n in spec["linux"]["namespaces"] if n["type"] == "user"]
        assert users == [{"type": "user"}]
        assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 0, "size": 2**32 - 1}]
        assert spec["root"]["path"] == str(rootfs)
        await member.delete()


async def test_a_member_on_an_image_gets_an_idmapped_snapshot(
    real: RealContainerd, tmp_path: Path
) -> None:
    namespace = new_namespace()
    archive = tmp_path / "image.tar"
    archive.write_bytes(build_pause_archive(IMAGE))
    real.daemon.ctr("images", "import", str(archive), namespace=namespace)
    try:
        async with (
            Client(
                real.daemon.address, namespace=namespace, sandboxer=PLUGIN_NAME, timeout=30
            ) as client,
            client.sandbox("mus4") as sb,
        ):
            member = await sb.new_container("mus4-m", image=IMAGE, writable_root=True)
            async with started(member) as task:
                await check_joined(sb, task)
                # the snapshot's upper layer is the block root's: root inside writes to /
                done = await task.run(
                    "sh", "-c", "busybox touch /new && busybox stat -c %u:%g /new"
                )
                assert done.stdout == b"0:0\n", done
    finally:
        real.daemon.ctr("images", "rm", IMAGE, namespace=namespace)
