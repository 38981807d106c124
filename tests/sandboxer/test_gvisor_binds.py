"""A gVisor sandbox in a user namespace binds a host path its file server can reach, as a
runc sandbox does; one below a directory the sandbox's root may not search is refused by
name (at Create, and at Start when the host changed in between), never a late runtime
failure. The walk that finds that directory is checked here on its own too."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import Client, FailedPreconditionError, oci
from sandboxclient.sandboxer._gvisor_binds import (
    check_binds,
    check_binds_at_start,
    unreachable_directory,
)
from tests.support.backends import RealContainerd
from tests.support.constants import RUNTIME

from .test_gvisor import _need_runsc, _runsc_processes, _status_field

pytestmark = pytest.mark.anyio


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory under ``/tmp`` that anyone may search, holding ``data/seen``."""
    base = Path(tempfile.mkdtemp(prefix="gvisor-bind-", dir="/tmp"))
    try:
        base.chmod(0o711)
        (base / "data").mkdir(mode=0o755)
        (base / "data" / "seen").write_text("bound\n")
        yield base
    finally:
        shutil.rmtree(base)


def _bind(source: Path, destination: str = "/data") -> dict[str, object]:
    return {"destination": destination, "type": "bind", "source": str(source)}


# -- the walk ---------------------------------------------------------------------------------


def test_the_first_directory_others_may_not_search_is_found(reachable: Path) -> None:
    assert unreachable_directory(str(reachable / "data" / "seen")) is None
    reachable.chmod(0o700)
    assert unreachable_directory(str(reachable / "data")) == (str(reachable), 0o700)
    # the source itself need not be searchable: only the way to it
    assert unreachable_directory(str(reachable)) is None


def test_the_walk_follows_links_and_dots(reachable: Path) -> None:
    hidden = reachable / "hidden"
    hidden.mkdir(mode=0o700)
    (hidden / "in").mkdir()
    (reachable / "to-hidden").symlink_to("hidden/in")
    (reachable / "absolute").symlink_to(hidden / "in")
    for path in ("to-hidden", "absolute", "data/../hidden/in"):
        assert unreachable_directory(f"{reachable}/{path}/x") == (str(hidden), 0o700), path
    (reachable / "to-data").symlink_to("data")
    assert unreachable_directory(f"{reachable}/to-data/seen") is None
    # a missing part is the runtime's to report
    assert unreachable_directory(f"{reachable}/nothing/here") is None


def test_only_binds_in_a_user_namespace_are_checked(reachable: Path) -> None:
    reachable.chmod(0o700)
    spec = {"mounts": [_bind(reachable / "data")]}
    with pytest.raises(GRPCError) as caught:
        check_binds(spec, {})
    assert caught.value.status is Status.FAILED_PRECONDITION
    assert f'"/data" binds host path "{reachable}/data"' in str(caught.value.message)
    assert f'may not search "{reachable}" (mode 0700)' in str(caught.value.message)
    check_binds(spec, {oci.HOST_USERS_ANNOTATION: "true"})  # gVisor runs as the host's root
    tmpfs = {"destination": "/t", "type": "tmpfs", "source": str(reachable / "data")}
    check_binds({"mounts": [tmpfs]}, {})
    # at Start, the whole spec says whether there is a user namespace
    check_binds_at_start(spec)
    with pytest.raises(GRPCError):
        check_binds_at_start({**spec, "linux": {"namespaces": [{"type": "user"}]}})


# -- against a real containerd ----------------------------------------------------------------


def _mounts_of(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


@pytest.mark.real
async def test_a_gvisor_sandbox_in_a_user_namespace_binds_a_host_directory(
    real: RealContainerd, tenant: Client, reachable: Path, tmp_path: Path
) -> None:
    _need_runsc()
    # tmp_path is below pytest's 0700 directory: runsc's file server could not reach it
    (tmp_path / "data").mkdir(mode=0o755)
    spec = oci.generate_spec(oci.with_mounts([_bind(tmp_path / "data")]))
    with pytest.raises(FailedPreconditionError, match=r'"/data" binds host path .*o\+x'):
        await tenant.new_sandbox("gbind-x", runtime=RUNTIME, spec=spec, runtime_handler="gvisor")
    assert await tenant.list_sandboxes() == []
    # Reachable at Create, not at Start: refused before runsc runs, nothing left.
    spec = oci.generate_spec(
        oci.with_mounts([dict(_bind(reachable / "data"), options=["rbind", "ro"])])
    )
    sb = await tenant.new_sandbox("gbind-1", runtime=RUNTIME, spec=spec, runtime_handler="gvisor")
    try:
        os.chmod(reachable, 0o700)
        with pytest.raises(FailedPreconditionError, match=f'may not search "{reachable}"'):
            await sb.start()
        assert _runsc_processes("gbind-1") == []
        os.chmod(reachable, 0o711)
        await sb.start()
        # gVisor's processes on the host: none is the host's root (its file server, which
        # serves the bind, runs as the sandbox's block of ids)
        gvisor = _runsc_processes("gbind-1")
        assert gvisor
        assert 0 not in {int(_status_field(p, "Uid").split()[1]) for p in gvisor}
        assert (await sb.run("cat", "/data/seen")).stdout == b"bound\n"
        assert (await sb.run("touch", "/data/new")).returncode != 0  # read-only
        owner = (await sb.run("stat", "-c", "%U", "/data/seen")).stdout
        assert owner == b"nobody\n"  # the host's root, unmapped, as under runc
    finally:
        await sb.shutdown()
    assert _runsc_processes("gbind-1") == []
    assert _mounts_of(reachable) == []
    assert not (reachable / "data" / "new").exists()
