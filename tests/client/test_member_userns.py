"""How a member's spec joins its sandbox's user namespace, and its root is idmapped, checked
on the spec and on host processes (the real daemon's side is in
tests/sandboxer/test_member_userns.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client, FailedPreconditionError, oci
from sandboxclient._members._userns import (
    ROOTFS_BIND_ANNOTATION,
    SNAPSHOT_GIDMAP_LABEL,
    SNAPSHOT_UIDMAP_LABEL,
    IdRange,
    MemberUsers,
    check_idmapped,
    rootfs_bind,
    sandbox_users,
)
from sandboxclient._models import Mount
from sandboxclient.testing import FakeContainerd

BLOCK = (IdRange(0, 100_000_000, 65536),)
USERS = MemberUsers("/proc/77/ns/user", BLOCK, BLOCK)
MAPPING = [{"containerID": 0, "hostID": 100_000_000, "size": 65536}]


def test_a_bare_member_joins_and_its_host_directory_becomes_an_idmapped_bind(
    tmp_path: Path,
) -> None:
    spec = oci.generate_spec(oci.with_rootfs_path(str(tmp_path)), oci.with_rootfs_readonly())
    assert USERS.join(spec)
    assert {"type": "user", "path": "/proc/77/ns/user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] == spec["linux"]["gidMappings"] == MAPPING
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["annotations"][ROOTFS_BIND_ANNOTATION] == str(tmp_path)
    text = "0:100000000:65536"
    assert rootfs_bind(spec) == [
        Mount("bind", str(tmp_path), "", ("rbind", f"uidmap={text}", f"gidmap={text}"))
    ]
    assert USERS.snapshot_labels() == {SNAPSHOT_UIDMAP_LABEL: text, SNAPSHOT_GIDMAP_LABEL: text}


def test_an_image_member_keeps_the_bundle_root() -> None:
    spec = oci.generate_spec()
    assert USERS.join(spec)
    assert spec["root"]["path"] == "rootfs"
    assert ROOTFS_BIND_ANNOTATION not in (spec.get("annotations") or {})
    assert rootfs_bind(spec) is None


def _joined_by_path(spec: dict[str, Any]) -> None:
    spec["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"})


@pytest.mark.parametrize(
    "opt", [oci.with_user_namespace([(0, 5000, 100)], [(0, 5000, 100)]), _joined_by_path]
)
def test_a_member_s_own_user_namespace_is_used_as_given(opt: oci.SpecOpt) -> None:
    spec = oci.generate_spec(opt, oci.with_rootfs_path("/srv/root"))
    before = [dict(n) for n in spec["linux"]["namespaces"]]
    assert not USERS.join(spec)
    assert spec["linux"]["namespaces"] == before
    assert ROOTFS_BIND_ANNOTATION not in (spec.get("annotations") or {})
    assert spec["root"]["path"] == "/srv/root"


def test_a_bind_without_mappings_is_refused() -> None:
    spec: dict[str, Any] = {"annotations": {ROOTFS_BIND_ANNOTATION: "/srv/root"}, "linux": {}}
    with pytest.raises(ValueError, match="uidMappings"):
        rootfs_bind(spec)
    spec["annotations"][ROOTFS_BIND_ANNOTATION] = "relative"
    with pytest.raises(ValueError, match="not an absolute path"):
        rootfs_bind(spec)


def test_a_snapshot_without_idmap_options_is_refused() -> None:
    overlay = Mount("overlay", "overlay", "", ("lowerdir=/l", "upperdir=/u", "workdir=/w"))
    with pytest.raises(FailedPreconditionError, match=r"join_namespaces=False.*host_users=True"):
        check_idmapped([overlay], "img:1", "native")
    mapped = Mount("overlay", "overlay", "", (*overlay.options, "uidmap=0:1:2", "gidmap=0:1:2"))
    check_idmapped([mapped], "img:1", "overlayfs")


def test_a_process_of_this_user_namespace_gives_nothing_to_join() -> None:
    assert sandbox_users(os.getpid(), "sb") is None


@pytest.fixture
def in_own_userns() -> Iterator[int]:
    """A process in a user namespace of its own (root inside is this process's uid)."""
    if shutil.which("unshare") is None:
        pytest.fail("this test needs util-linux's unshare on the host")
    proc = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "sh", "-c", "echo up; exec sleep 60"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"up\n"  # the namespace and its map are in place
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_process_in_another_user_namespace_is_joined_with_its_maps(in_own_userns: int) -> None:
    users = sandbox_users(in_own_userns, "sb")
    assert users is not None
    assert users.path == f"/proc/{in_own_userns}/ns/user"
    assert users.uid_map == (IdRange(0, os.getuid(), 1),)
    assert users.gid_map == (IdRange(0, os.getgid(), 1),)


def test_a_process_that_is_gone_is_refused_naming_the_way_out() -> None:
    with pytest.raises(FailedPreconditionError, match=r"sandbox \"sb\".*join_namespaces=False"):
        sandbox_users(2**22 + 1, "sb")


@pytest.mark.anyio
async def test_a_member_through_the_stand_in_joins_no_user_namespace(
    fake: FakeContainerd, tmp_path: Path
) -> None:
    """The stand-in's sandbox process runs in the client's own user namespace: nothing to
    join, and the member's host directory stays its root.path."""
    async with Client(fake.address, namespace="members") as client:
        spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
        sb = await client.new_sandbox("sb2", runtime="io.containerd.runc.v2", spec=spec)
        await sb.start()
        member = await sb.new_container("m1", rootfs=tmp_path, spec=oci.generate_spec())
        got = member.metadata.spec
        assert got is not None
        assert all(n["type"] != "user" for n in got["linux"]["namespaces"])
        assert got["root"]["path"] == str(tmp_path)
        await member.delete()
        await sb.shutdown()
