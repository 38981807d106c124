"""An image root's bounded layer without containerd: the size asked for (refused by name
when it is no size, exceeds the sandbox's memory or there is no image root), the flag and
its default, what Status shows, and the overlay of an image root or of the default root
rewritten onto the layer's tmpfs (as root: mounted for the Start alone, and swept when a
killed sandboxer left it); a member's image root read-only unless asked for."""

from __future__ import annotations

import copy
import os
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import oci
from sandboxclient._facts._disk import DISK_ANNOTATION
from sandboxclient._members._root import MEMBERS_ROOT_ANNOTATION, READONLY, TMP_MOUNT, member_root
from sandboxclient._models import Mount
from sandboxclient._wire._pb import SandboxPb
from sandboxclient.errors import FailedPreconditionError
from sandboxclient.sandboxer import __main__ as sandboxer_main
from sandboxclient.sandboxer._harden import (
    DEFAULT_DISK,
    DefaultLimits,
    InForce,
    asked_disk,
    harden,
    in_force,
)
from sandboxclient.sandboxer._podspec import check_spec
from sandboxclient.sandboxer._podstate import PodEntry, PodRecord, PodTable
from sandboxclient.sandboxer._rootdisk import (
    TMPFS_SOURCE,
    RootDisks,
    bounded_overlay,
    disk_size,
    layer_inodes,
)
from sandboxclient.sandboxer._userns import IdBlock

MiB = 2**20
LOWERS = "lowerdir=/snap/2/fs:/snap/1/fs"
IDMAP = ("uidmap=0:200000:65536", "gidmap=0:200000:65536")
SNAPSHOT = Mount(
    "overlay", "overlay", "", ("index=off", "workdir=/snap/3/work", "upperdir=/snap/3/fs", LOWERS)
)


def spec_with(memory: int | None = None, disk: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"linux": {"resources": {}}, "annotations": {}}
    if memory is not None:
        spec["linux"]["resources"]["memory"] = {"limit": memory}
    if disk is not None:
        spec["annotations"][DISK_ANNOTATION] = disk
    return spec


def refused(status: Status, match: str) -> Any:
    return pytest.raises(GRPCError, check=lambda e: e.status is status, match=match)


# --- the size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "disk", "size"),
    [
        (None, None, DEFAULT_DISK),
        (512 * MiB, None, DEFAULT_DISK),
        (128 * MiB, None, 64 * MiB),  # half its memory, without a size of its own
        (128 * MiB, "100Mi", 100 * MiB),
        (None, str(8 * 2**30), 8 * 2**30),
        (1, None, 1),  # not 0: a tmpfs of size=0 has no bound
    ],
)
def test_the_layer_is_the_size_asked_or_the_default_within_memory(
    memory: int | None, disk: str | None, size: int
) -> None:
    assert disk_size(spec_with(memory, disk), {}, None) == size


def test_a_layer_beyond_the_sandbox_s_memory_is_refused_naming_both() -> None:
    with refused(Status.INVALID_ARGUMENT, r"67108864 bytes .*disk=.* memory limit of 33554432"):
        disk_size(spec_with(32 * MiB, "64Mi"), {}, None)


@pytest.mark.parametrize("bad", ["lots", "0", "512", "-5Mi", "5MiB", ""])
def test_a_bad_size_is_refused_naming_the_annotation(bad: str) -> None:
    with refused(Status.INVALID_ARGUMENT, DISK_ANNOTATION):
        asked_disk(spec_with(disk=bad), {}, has_rootfs_mounts=True)


def test_a_size_is_read_from_the_create_request_and_refused_without_an_image_root() -> None:
    assert asked_disk(None, {DISK_ANNOTATION: "32Mi"}, has_rootfs_mounts=True) == 32 * MiB
    spec = spec_with(disk="32Mi")
    assert asked_disk(spec, {DISK_ANNOTATION: "1Gi"}, has_rootfs_mounts=True) == 32 * MiB
    with refused(Status.INVALID_ARGUMENT, "this sandbox has none"):
        check_spec(spec, has_rootfs_mounts=False)
    check_spec(spec, has_rootfs_mounts=True)


def test_the_inode_bound_grows_with_the_layer() -> None:
    assert layer_inodes(MiB) == 16384
    assert layer_inodes(2**30) == 65536


def test_status_shows_the_layer_in_force() -> None:
    spec = spec_with(64 * MiB, str(32 * MiB))
    assert in_force(spec).disk_limit == 32 * MiB
    assert in_force(spec).info()["disk_limit_bytes"] == str(32 * MiB)
    assert "disk_limit_bytes" not in in_force(spec_with(64 * MiB)).info()


def test_the_flag_and_its_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    args = sandboxer_main.parser().parse_args(["--socket", "/s", "--default-disk", "1Gi"])
    assert args.default_disk == 2**30
    assert sandboxer_main.parser().parse_args(["--socket", "/s"]).default_disk is None
    assert DefaultLimits(memory=16 * MiB).disk is None  # a small memory keeps its default
    with pytest.raises(ValueError, match="default disk"):
        DefaultLimits(disk=1024)
    with pytest.raises(SystemExit, match=r"default disk .* must not exceed default memory"):
        sandboxer_main.main(["--socket", "/s", "--default-disk", "1Gi"])
    with pytest.raises(SystemExit):
        sandboxer_main.parser().parse_args(["--socket", "/s", "--default-disk", "lots"])
    assert "lots" in capsys.readouterr().err


# --- the overlay ---------------------------------------------------------------------------


def test_the_overlay_writes_into_the_layer_and_keeps_its_lowers_and_idmap() -> None:
    idmapped = Mount(SNAPSHOT.type, SNAPSHOT.source, "", (*SNAPSHOT.options, *IDMAP))
    bind = Mount("bind", "/data", "/data", ("rbind", "ro"))
    done = bounded_overlay((idmapped, bind), "/l/upper", "/l/work")
    assert done[1] == bind
    assert sorted(done[0].options) == sorted(
        ["index=off", LOWERS, *IDMAP, "upperdir=/l/upper", "workdir=/l/work"]
    )
    read_only = Mount("overlay", "overlay", "", (LOWERS,))  # no upper: nothing to bound
    assert bounded_overlay((read_only,), "/l/upper", "/l/work") == (read_only,)
    with refused(Status.FAILED_PRECONDITION, "more than one overlay"):
        bounded_overlay((SNAPSHOT, SNAPSHOT), "/l/upper", "/l/work")


# --- the tmpfs (as root) -------------------------------------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def table(tmp_path: Path) -> Iterator[PodTable]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    found = PodTable(str(state))
    try:
        yield found
    finally:
        RootDisks(found)  # a layer a failed test left mounted: swept
        found.let_go()


def entry_of(rootfs: tuple[Mount, ...]) -> PodEntry:
    record = PodRecord("ns", "sb1", SandboxPb(sandbox_id="sb1"), datetime.now(UTC), rootfs)
    return PodEntry(record, in_force=InForce("default", 64 * MiB, None, None))


def mounted(path: str) -> list[str]:
    """``path``'s lines of this process's mount table."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if line.split()[4] == path]


@as_root
def test_an_image_root_s_upper_is_a_tmpfs_of_its_size_for_the_start_alone(
    table: PodTable,
) -> None:
    disks, entry = RootDisks(table), entry_of((SNAPSHOT,))
    spec = spec_with(64 * MiB, str(4 * MiB)) | {"root": {"readonly": True}}
    block = IdBlock(200000, 65536)
    try:
        (mount,) = disks.root(entry, spec, None, "", block, DefaultLimits())
        layer = disks.path(entry.record)
        (line,) = mounted(layer)
        assert f" - tmpfs {TMPFS_SOURCE} " in line, line
        assert "size=4096k" in line, line
        assert f"nr_inodes={layer_inodes(4 * MiB)}" in line, line
        options = set(mount.options)
        assert {f"upperdir={layer}/upper", f"workdir={layer}/work", LOWERS, *IDMAP} <= options
        owner = os.stat(f"{layer}/upper")
        assert (owner.st_uid, owner.st_gid, owner.st_mode & 0o777) == (200000, 200000, 0o755)
        assert spec["annotations"][DISK_ANNOTATION] == str(4 * MiB)
        assert entry.in_force is not None
        assert entry.in_force.disk_limit == 4 * MiB
    finally:
        disks.release(entry)
    assert mounted(disks.path(entry.record)) == []
    assert not os.path.exists(disks.path(entry.record))


@as_root
def test_the_default_root_s_upper_is_a_tmpfs_too_and_a_root_of_the_caller_s_is_not(
    table: PodTable, tmp_path: Path
) -> None:
    disks, entry = RootDisks(table), entry_of(())
    layer = disks.path(entry.record)
    try:
        (mount,) = disks.root(entry, spec_with(64 * MiB), str(tmp_path), "", None, DefaultLimits())
        assert mount.options == (
            f"lowerdir={tmp_path}",
            f"upperdir={layer}/upper",
            f"workdir={layer}/work",
        )
        (line,) = mounted(layer)
        assert "size=32768k" in line, line  # half its memory
    finally:
        disks.release(entry)
    (bind,) = disks.root(entry, spec_with(), None, str(tmp_path), None, DefaultLimits())
    assert bind == Mount("bind", str(tmp_path), "", ("rbind",))
    assert mounted(layer) == []


@as_root
def test_a_layer_a_killed_sandboxer_left_is_swept(table: PodTable) -> None:
    disks, entry = RootDisks(table), entry_of((SNAPSHOT,))
    disks.root(entry, spec_with(64 * MiB), None, "", None, DefaultLimits())  # never released
    layer = disks.path(entry.record)
    assert len(mounted(layer)) == 1
    RootDisks(table)  # a sandboxer started again sweeps when it is made
    assert mounted(layer) == []
    assert not os.path.exists(layer)
    disks.root(entry, spec_with(64 * MiB), None, "", None, DefaultLimits())
    assert disks.sweep() == [layer]
    assert mounted(layer) == []


@as_root
def test_a_layer_is_swept_under_a_temporary_directory_reached_through_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a state directory the sandboxer's is a temporary one; the mount table names
    it by its real path, which the sweep must match even when the temporary directory's
    path goes through a symbolic link (a symlinked ``/tmp``)."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "tmp").symlink_to(real)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    table = PodTable(None)
    disks, entry = RootDisks(table), entry_of((SNAPSHOT,))
    layer = os.path.realpath(disks.path(entry.record))
    try:
        assert layer.startswith(f"{real}{os.sep}")
        disks.root(entry, spec_with(64 * MiB), None, "", None, DefaultLimits())  # a cut Start
        assert len(mounted(layer)) == 1
        assert [os.path.realpath(p) for p in disks.sweep()] == [layer]
        assert mounted(layer) == []
    finally:
        while subprocess.run(["umount", layer], check=False, capture_output=True).returncode == 0:
            pass
        table.let_go()


def mount_tmpfs(path: str, source: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", source, path], check=True)


@as_root
def test_the_sweep_and_a_release_leave_mounts_not_of_a_root_layer_alone(
    table: PodTable, tmp_path: Path
) -> None:
    disks, entry = RootDisks(table), entry_of((SNAPSHOT,))
    layer = disks.path(entry.record)
    os.makedirs(layer)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        mount_tmpfs(layer, "someone-else")  # a mount of another's, named as a layer's
        RootDisks(table)
        assert len(mounted(layer)) == 1
        disks.root(entry, spec_with(64 * MiB), None, "", None, DefaultLimits())
        mount_tmpfs(layer, "someone-else")  # over a layer: what it covers is left too
        assert disks.sweep() == []
        assert len(mounted(layer)) == 3
        subprocess.run(["umount", layer], check=True)
        assert disks.sweep() == [layer]  # the layer on top, then another's: left
        assert len(mounted(layer)) == 1
        subprocess.run(["umount", layer], check=True)
        # A symlink in the layer's place is not followed to the mount it leads to.
        mount_tmpfs(str(elsewhere), "someone-else")
        os.rmdir(layer)
        os.symlink(elsewhere, layer)
        disks.release(entry)
        assert len(mounted(str(elsewhere))) == 1
    finally:
        subprocess.run(["umount", "-R", str(elsewhere)], check=False, capture_output=True)
        while subprocess.run(["umount", layer], check=False, capture_output=True).returncode == 0:
            pass


# --- members -------------------------------------------------------------------------------


def test_the_sandboxer_says_members_image_roots_are_read_only() -> None:
    spec: dict[str, Any] = {"linux": {}, "annotations": {MEMBERS_ROOT_ANNOTATION: "writable"}}
    harden(spec, DefaultLimits(), unified=True)
    assert spec["annotations"][MEMBERS_ROOT_ANNOTATION] == READONLY  # its word alone


def test_a_member_s_image_root_is_read_only_with_a_tmp_unless_asked() -> None:
    made = oci.generate_spec()
    member_root(made, "m1", given=False, writable=False)
    assert made["root"]["readonly"] is True
    assert [m for m in made["mounts"] if m["destination"] == "/tmp"] == [TMP_MOUNT]
    asked = oci.generate_spec()
    member_root(asked, "m1", given=True, writable=True)
    assert asked == oci.generate_spec()


def test_a_member_spec_with_a_writable_image_root_is_refused_naming_the_ways_out() -> None:
    with pytest.raises(FailedPreconditionError, match=r'"m2".*root\.readonly true.*writable_root'):
        member_root(oci.generate_spec(), "m2", given=True, writable=False)
    read_only = oci.generate_spec()
    read_only["root"]["readonly"] = True
    kept = copy.deepcopy(read_only)
    member_root(read_only, "m2", given=True, writable=False)
    assert read_only == kept  # as its spec says: no /tmp added
