"""A gVisor sandbox in a user namespace binds host paths as a runc sandbox does, even one
below a directory the sandbox's root may not search: the sandboxer binds the source, as the
host's root, where runsc's file server can reach it for the Start, and removes that place
once runsc created the sandbox. Checked from inside and from the host (nothing stays). A
member, made by the client with no one on the host to bind for it, is refused such a source
by name before anything is made; a source it can reach is bound."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client, FailedPreconditionError, oci
from sandboxclient._members._gvisor import (
    CONTAINER_TYPE_ANNOTATION,
    SANDBOX_ID_ANNOTATION,
    annotated_sandbox,
)
from sandboxclient._members._reach import unreachable_directory
from sandboxclient._models import RuntimeInfo
from sandboxclient.sandboxer._gvisor_binds import BindStaging
from tests.support.backends import RealContainerd
from tests.support.constants import RUNTIME
from tests.support.containers import started
from tests.support.host import SYSTEM_PYTHON, needs_root

from .test_gvisor import _need_runsc, _runsc_processes, _status_field

pytestmark = pytest.mark.anyio

_MAPPED = {
    "linux": {
        "namespaces": [{"type": "user"}],
        "uidMappings": [{"containerID": 0, "hostID": 100_000_000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100_000_000, "size": 65536}],
    }
}


def _bind(source: Path | str, destination: str = "/data", **more: object) -> dict[str, object]:
    return {"destination": destination, "type": "bind", "source": str(source), **more}


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A folder anyone may search, for the staging root (``/run``'s stand-in)."""
    where = Path(tempfile.mkdtemp(prefix="gvisor-binds-", dir="/tmp"))
    where.chmod(0o755)
    yield where
    shutil.rmtree(where)


def _reads_as(uid: int, path: str) -> bool:
    """Whether uid and gid ``uid`` (no other group) may read ``path``."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", f"open({path!r}).read()"],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def _gone(path: str) -> bool:
    """Whether ``path`` is not there and nothing is mounted below it."""
    return not os.path.exists(path) and _mounts_under(path) == []


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if f" {path}/" in line]


# -- the staging on its own (as the host's root, as the sandboxer runs) ----------------------


@needs_root
def test_sources_are_bound_where_only_the_block_may_reach_and_removed(
    tmp_path: Path, run_dir: Path
) -> None:
    hidden = tmp_path / "hidden"
    (hidden / "dir").mkdir(parents=True)
    (hidden / "file").write_text("f\n")
    (hidden / "dir" / "in").write_text("d\n")
    hidden.chmod(0o700)
    (hidden / "file").chmod(0o644)
    staging = BindStaging(str(tmp_path / "state"), root=str(run_dir / "run"))
    spec = {
        **_MAPPED,
        "mounts": [
            _bind(hidden / "dir", options=["rbind", "ro"]),
            _bind(hidden / "file", "/f"),
            {"destination": "/t", "type": "tmpfs", "source": "tmpfs"},
        ],
    }
    staging.stage(spec)
    mounts: list[dict[str, object]] = spec["mounts"]  # type: ignore[assignment]
    placed = [str(m["source"]) for m in mounts]
    assert placed[2] == "tmpfs"  # not a bind: as given
    start = os.path.dirname(placed[0])
    assert os.path.dirname(start) == staging.directory
    info = os.stat(start)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 100_000_000, 0o710)
    for level in (staging.root, staging.directory):
        assert os.stat(level).st_mode & 0o777 == 0o711
    assert Path(placed[0], "in").read_text() == "d\n"
    assert Path(placed[1]).read_text() == "f\n"
    assert mounts[0]["options"] == ["rbind", "ro"]  # runsc applies them in turn
    assert len(_mounts_under(start)) == 2
    # the block's root may reach the source there, and no other unprivileged id
    assert not _reads_as(100_000_000, str(hidden / "file"))
    assert _reads_as(100_000_000, placed[1])
    assert not _reads_as(65534, placed[1])
    staging.release(spec)
    assert not os.path.exists(staging.directory)  # this sandboxer's folder goes when empty
    assert _mounts_under(staging.directory) == []


@needs_root
def test_nothing_is_staged_without_a_user_namespace_and_a_bad_source_is_named(
    tmp_path: Path,
) -> None:
    staging = BindStaging(str(tmp_path / "state"), root=str(tmp_path / "run"))
    spec: dict[str, object] = {"mounts": [_bind(tmp_path)]}
    staging.stage(spec)  # the host's users: runsc opens it as the host's root
    assert spec["mounts"] == [_bind(tmp_path)]
    spec = {**_MAPPED, "mounts": [_bind(tmp_path, "/ok"), _bind(tmp_path / "gone", "/x")]}
    with pytest.raises(Exception, match=r'"/x" cannot bind host path ".*/gone"'):
        staging.stage(spec)
    assert not os.path.exists(staging.directory)  # the first one's place went too
    assert _mounts_under(staging.directory) == []


@needs_root
def test_a_sandboxer_starting_again_sweeps_what_a_dead_one_left(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    staging = BindStaging(str(tmp_path / "state"), root=str(tmp_path / "run"))
    staging.stage({**_MAPPED, "mounts": [_bind(tmp_path / "src")]})
    assert _mounts_under(staging.directory)
    BindStaging(str(tmp_path / "state"), root=str(tmp_path / "run")).sweep()
    assert not os.path.exists(staging.directory)
    assert _mounts_under(staging.directory) == []


# -- a member's sources: the walk, and the refusal --------------------------------------------


@pytest.fixture
def reachable(run_dir: Path) -> Path:
    """``data/seen`` in a folder anyone may search."""
    (run_dir / "data").mkdir(mode=0o755)
    (run_dir / "data" / "seen").write_text("bound\n")
    return run_dir


def test_the_first_directory_others_may_not_search_is_found(reachable: Path) -> None:
    assert unreachable_directory(str(reachable / "data" / "seen")) is None
    hidden = reachable / "hidden"
    (hidden / "in").mkdir(parents=True)
    hidden.chmod(0o700)
    assert unreachable_directory(str(hidden / "in")) == (str(hidden), 0o700)
    assert unreachable_directory(str(hidden)) is None  # only the way to it counts
    (reachable / "to-hidden").symlink_to("hidden/in")
    (reachable / "absolute").symlink_to(hidden / "in")
    for path in ("to-hidden", "absolute", "data/../hidden/in"):
        assert unreachable_directory(f"{reachable}/{path}/x") == (str(hidden), 0o700), path
    (reachable / "to-data").symlink_to("data")
    assert unreachable_directory(f"{reachable}/to-data/seen") is None
    assert unreachable_directory(f"{reachable}/nothing/here") is None  # the runtime's to say


def _sandbox_spec(mapped: bool) -> dict[str, Any]:
    spec = oci.generate_spec()
    spec["annotations"] = {CONTAINER_TYPE_ANNOTATION: "sandbox", SANDBOX_ID_ANNOTATION: "+s1+"}
    if mapped:
        spec["linux"].update(_MAPPED["linux"])
    return spec


def test_a_member_is_refused_a_source_its_file_server_cannot_reach(reachable: Path) -> None:
    closed = reachable / "closed"
    (closed / "d").mkdir(parents=True)
    closed.chmod(0o700)
    hidden = oci.with_mounts([_bind(closed / "d", "/h")])
    joined = annotated_sandbox("s1", _sandbox_spec(True), RuntimeInfo(RUNTIME), "gvisor")
    assert joined is not None
    with pytest.raises(FailedPreconditionError) as caught:
        joined.apply(oci.generate_spec(hidden))
    said = str(caught.value)
    assert f'"/h" of host path "{closed}/d"' in said
    assert f'may not search "{closed}" (mode 0700)' in said
    joined.apply(oci.generate_spec(oci.with_mounts([_bind(reachable / "data")])))
    # with the host's users the file server is the host's root: nothing to refuse
    host = annotated_sandbox("s1", _sandbox_spec(False), RuntimeInfo(RUNTIME), "gvisor")
    assert host is not None
    host.apply(oci.generate_spec(hidden))


# -- against a real containerd ----------------------------------------------------------------


@pytest.mark.real
@pytest.mark.cgroup2
async def test_a_gvisor_sandbox_in_a_user_namespace_binds_a_host_directory(
    real: RealContainerd, tenant: Client, tmp_path: Path, reachable: Path, rootfs: Path
) -> None:
    _need_runsc()
    # tmp_path is below pytest's 0700 directory, which the sandbox's root may not search
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "seen").write_text("bound\n")
    staged = BindStaging(real.sandboxer.state_dir).directory
    spec = oci.generate_spec(oci.with_mounts([_bind(data, options=["rbind", "ro"])]))
    async with tenant.sandbox(
        "gbind-1", spec=spec, runtime=RUNTIME, runtime_handler="gvisor"
    ) as sb:
        assert (await sb.run("cat", "/data/seen")).stdout == b"bound\n"
        assert (await sb.run("touch", "/data/new")).returncode != 0  # read-only
        owner = (await sb.run("stat", "-c", "%U", "/data/seen")).stdout
        assert owner == b"nobody\n"  # the host's root, unmapped, as under runc
        # gVisor's processes on the host: none is the host's root (its file server, which
        # serves the bind, runs as the sandbox's block of ids)
        runsc = _runsc_processes("gbind-1")
        assert runsc
        assert 0 not in {int(_status_field(p, "Uid").split()[1]) for p in runsc}
        # the place runsc was given is gone once it created the sandbox
        assert _gone(staged)
        # A member is refused the same source before anything is made; one it can reach
        # is bound.
        args = oci.with_process_args("sleep", "600")
        spec = oci.generate_spec(args, oci.with_mounts([_bind(data)]))
        with pytest.raises(FailedPreconditionError, match=r'"/data" of host path'):
            await sb.new_container("gbind-1-m", rootfs=rootfs, spec=spec)
        assert await sb.list_containers() == []  # nothing was made
        spec = oci.generate_spec(args, oci.with_mounts([_bind(reachable / "data")]))
        member = await sb.new_container("gbind-1-m", rootfs=rootfs, spec=spec)
        async with started(member) as task:
            assert (await task.run("cat", "/data/seen")).stdout == b"bound\n"
    assert _runsc_processes("gbind-1") == []
    assert not (data / "new").exists()
    # A source that is not there fails the Start by name, and leaves nothing.
    spec = oci.generate_spec(oci.with_mounts([_bind(tmp_path / "gone", "/gone")]))
    sb = await tenant.new_sandbox("gbind-2", spec=spec, runtime=RUNTIME, runtime_handler="gvisor")
    with pytest.raises(FailedPreconditionError, match=r'"/gone" cannot bind host path'):
        await sb.start()
    await sb.shutdown()
    assert _gone(staged)
    assert _runsc_processes("gbind-2") == []
