"""A sandbox's cgroups on cgroup v2, as a pod's: its process in a leaf, its limits on a parent
the sandboxer makes (and removes), its members beside the leaf. Run against a directory tree
that behaves as a cgroup2 filesystem (``tests.support.cgroups.FakeCgroupFs``), and over the
stand-in containerd for the sandboxer's own Start and Shutdown."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import oci
from sandboxclient._facts._clock import utcnow
from sandboxclient._facts._wirenames import NAMESPACE_HEADER, RUNTIME_SPEC_TYPE_URL
from sandboxclient._members._spec import MEMBERS_CGROUP_ANNOTATION, MemberDefaults
from sandboxclient._serve._server import request_scope
from sandboxclient._wire._pb import AnyPb, SandboxPb, SandboxRuntimePb, sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer
from sandboxclient.sandboxer._cgroup2 import NOTES_DIR, CgroupFs, SandboxCgroups, limits_of
from sandboxclient.sandboxer._harden import DEFAULT_MEMORY, DEFAULT_PIDS, DefaultLimits
from sandboxclient.sandboxer._podspec import build_spec
from sandboxclient.sandboxer._podstate import PodEntry, PodRecord, PodTable
from sandboxclient.testing import FakeContainerd
from tests.support.cgroups import FakeCgroupFs
from tests.support.constants import NS, RUNTIME

pytestmark = pytest.mark.anyio


def built(
    spec: dict[str, Any] | None = None, *, unified: bool = True, sandbox_id: str = "sb1", **kw: Any
) -> dict[str, Any]:
    return build_spec(
        spec,
        namespace="ns",
        sandbox_id=sandbox_id,
        has_rootfs_mounts=False,
        default_root="/srv/default-root",
        unified=unified,
        **kw,
    )


def note(table: PodTable, namespace: str = "ns", sandbox_id: str = "sb1") -> Path:
    return Path(table.base, NOTES_DIR, namespace, sandbox_id)


@pytest.fixture
def fs(tmp_path: Path) -> FakeCgroupFs:
    return FakeCgroupFs(tmp_path / "cgroup")


@pytest.fixture
def table(tmp_path: Path) -> PodTable:
    return PodTable(tmp_path / "state")


# --- the layout in the spec ----------------------------------------------------------------


def test_on_v2_the_sandbox_runs_in_a_leaf_and_members_nest_beside_it() -> None:
    spec = built()
    assert spec["linux"]["cgroupsPath"] == "/ns/sb1/sb1"
    assert spec["annotations"][MEMBERS_CGROUP_ANNOTATION] == "/ns/sb1"
    # The limits stay in the spec (runc applies them to the leaf too; Status reads them).
    assert spec["linux"]["resources"]["memory"]["limit"] == DEFAULT_MEMORY
    # A member (the client's defaults, read from that spec) nests under the parent.
    member = oci.generate_spec()
    MemberDefaults(cgroup_parent="/ns/sb1").apply(member, "m1")
    assert member["linux"]["cgroupsPath"] == "/ns/sb1/m1"


def test_on_v2_a_spec_s_own_cgroup_is_used_as_given_with_no_members_cgroup() -> None:
    spec = built({"linux": {"cgroupsPath": "/mine/sb1"}})
    assert spec["linux"]["cgroupsPath"] == "/mine/sb1"
    assert MEMBERS_CGROUP_ANNOTATION not in spec["annotations"]
    # Asking for the sandboxer's own path is asking for the default: the same layout.
    same = built({"linux": {"cgroupsPath": "/ns/sb1"}})
    assert same["linux"]["cgroupsPath"] == "/ns/sb1/sb1"


def test_on_v1_the_layout_is_as_it_was() -> None:
    spec = built(unified=False)
    assert spec["linux"]["cgroupsPath"] == "/ns/sb1"
    assert spec["annotations"][MEMBERS_CGROUP_ANNOTATION] == "/ns/sb1"


def test_limits_are_converted_as_runc_converts_them() -> None:
    default = limits_of(built())
    assert default.files() == (
        ("memory.max", str(DEFAULT_MEMORY)),
        ("memory.swap.max", "0"),  # memory plus swap = memory: no swap
        ("pids.max", str(DEFAULT_PIDS)),
        ("cpu.max", "100000 100000"),
    )
    assert default.controllers() == ("memory", "pids", "cpu")
    own = {"linux": {"resources": {"memory": {"limit": 100, "swap": 300}, "cpu": {"quota": 5}}}}
    assert limits_of(own).files() == (
        ("memory.max", "100"),
        ("memory.swap.max", "200"),
        ("cpu.max", "5 100000"),
    )
    assert limits_of({"linux": {"resources": {"memory": {"swap": -1}}}}).swap_max == "max"
    free = built(limits=DefaultLimits(memory=None, pids=None, cpus=None))
    assert limits_of(free).files() == ()


# --- making the parent ---------------------------------------------------------------------


def test_the_parent_is_made_with_the_limits_and_controllers_enabled_from_the_root(
    fs: FakeCgroupFs, table: PodTable
) -> None:
    cgroups = SandboxCgroups(table, fs)
    assert cgroups.unified
    assert cgroups.prepare("ns", "sb1", built()) == "/ns/sb1"
    for cgroup in ("/", "/ns", "/ns/sb1"):  # the parent's too: for the leaf and members
        assert fs.read(cgroup, "cgroup.subtree_control").split() == ["memory", "pids", "cpu"]
    assert fs.read("/ns/sb1", "memory.max") == str(DEFAULT_MEMORY)
    assert fs.read("/ns/sb1", "memory.swap.max") == "0"
    assert fs.read("/ns/sb1", "pids.max") == str(DEFAULT_PIDS)
    assert fs.read("/ns/sb1", "cpu.max") == "100000 100000"
    assert note(table).exists()
    # Controllers already enabled are not written again.
    fs.writes.clear()
    assert cgroups.prepare("ns", "sb2", built(sandbox_id="sb2")) == "/ns/sb2"
    assert [w for w in fs.writes if w[1] == "cgroup.subtree_control"] == [
        ("/ns/sb2", "cgroup.subtree_control", f"+{c}") for c in ("memory", "pids", "cpu")
    ]


def test_nothing_is_made_on_v1_or_for_a_spec_s_own_cgroup(
    tmp_path: Path, fs: FakeCgroupFs, table: PodTable
) -> None:
    (tmp_path / "v1").mkdir()
    v1 = SandboxCgroups(table, CgroupFs(str(tmp_path / "v1")))  # no cgroup.controllers
    assert not v1.unified
    assert v1.prepare("ns", "sb1", built(unified=False)) is None
    cgroups = SandboxCgroups(table, fs)
    assert cgroups.prepare("ns", "sb1", built({"linux": {"cgroupsPath": "/mine/sb1"}})) is None
    assert not Path(fs.path("/ns")).exists()
    assert not Path(fs.path("/mine")).exists()
    assert not note(table).exists()


@pytest.mark.parametrize("missing", ["memory", "pids", "cpu"])
def test_a_missing_controller_refuses_the_sandbox_by_name_and_leaves_nothing(
    tmp_path: Path, table: PodTable, missing: str
) -> None:
    offered = " ".join(c for c in ("cpu", "memory", "pids") if c != missing)
    fs = FakeCgroupFs(tmp_path / "cgroup", controllers=offered)
    cgroups = SandboxCgroups(table, fs)
    with pytest.raises(GRPCError) as info:
        cgroups.prepare("ns", "sb1", built())
    assert info.value.status is Status.FAILED_PRECONDITION
    assert f'controller "{missing}" is not available' in str(info.value.message)
    assert not Path(fs.path("/ns/sb1")).exists()
    assert not note(table).exists()
    # A sandbox that needs no such limit is made.
    unlimited = built(limits=DefaultLimits(**{"cpus" if missing == "cpu" else missing: None}))
    assert cgroups.prepare("ns", "sb1", unlimited) == "/ns/sb1"


def test_a_write_refused_midway_names_the_file_and_removes_the_parent(
    fs: FakeCgroupFs, table: PodTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    cgroups = SandboxCgroups(table, fs)
    for cgroup in ("/", "/ns"):
        fs.mkdir(cgroup)
        for controller in ("memory", "pids", "cpu"):
            fs.write(cgroup, "cgroup.subtree_control", f"+{controller}")
    fs.add_process("/ns/sb1")  # a process in the parent: no controller for its children
    with pytest.raises(GRPCError) as info:
        cgroups.prepare("ns", "sb1", built())
    assert info.value.status is Status.FAILED_PRECONDITION
    assert "/ns/sb1/cgroup.subtree_control" in str(info.value.message)
    assert "Device or resource busy" in str(info.value.message)
    assert Path(fs.path("/ns/sb1")).exists()  # populated: never torn down
    (Path(fs.path("/ns/sb1")) / "cgroup.procs").write_text("")
    writes = fs.write

    def refused(cgroup: str, name: str, value: str) -> None:
        if name == "cpu.max":
            raise PermissionError(13, "Permission denied")
        writes(cgroup, name, value)

    monkeypatch.setattr(fs, "write", refused)
    with pytest.raises(GRPCError) as info:
        cgroups.prepare("ns", "sb1", built())
    assert "cpu.max" in str(info.value.message)
    assert "Permission denied" in str(info.value.message)
    assert not Path(fs.path("/ns/sb1")).exists()  # once empty, a failure removes it
    assert not note(table).exists()


# --- removing it ---------------------------------------------------------------------------


def test_remove_takes_the_parent_once_empty_and_never_a_populated_one(
    fs: FakeCgroupFs, table: PodTable, caplog: pytest.LogCaptureFixture
) -> None:
    cgroups = SandboxCgroups(table, fs)
    cgroups.prepare("ns", "sb1", built())
    fs.add_process("/ns/sb1/sb1")  # the sandbox's process, still there
    fs.mkdir("/ns/sb1/m1")  # a member's cgroup runc left empty
    with caplog.at_level(logging.WARNING, "sandboxclient.sandboxer"):
        assert not cgroups.remove("ns", "sb1")
    assert "cannot remove the sandbox's cgroup /ns/sb1" in caplog.text
    assert Path(fs.path("/ns/sb1/sb1")).exists()
    assert not Path(fs.path("/ns/sb1/m1")).exists()  # empty: removed
    assert note(table).exists()  # kept for the next try
    (Path(fs.path("/ns/sb1/sb1")) / "cgroup.procs").write_text("")
    assert cgroups.remove("ns", "sb1")
    assert not Path(fs.path("/ns/sb1")).exists()
    assert not note(table).exists()
    assert Path(fs.path("/ns")).exists()  # the namespace's: containerd's layout, kept
    # A cgroup the sandboxer did not make (no note) is never touched.
    fs.mkdir("/ns/other")
    assert not cgroups.remove("ns", "other")
    assert Path(fs.path("/ns/other")).exists()


def test_a_sandboxer_started_again_sweeps_the_parents_a_killed_one_left(
    fs: FakeCgroupFs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    table = PodTable(state)
    now = utcnow()
    live = PodEntry(PodRecord("ns", "live", SandboxPb(sandbox_id="live"), now, started_at=now))
    table.add(live)
    first = SandboxCgroups(table, fs)
    spec = built()
    for sandbox_id in ("live", "gone", "busy"):
        laid = json.loads(json.dumps(spec).replace("sb1", sandbox_id))
        first.prepare("ns", sandbox_id, laid)
    fs.add_process("/ns/busy/busy")
    note(table, sandbox_id="half").touch()  # killed between its note and its mkdir
    table.let_go()
    again = PodTable(state)
    with caplog.at_level(logging.WARNING, "sandboxclient.sandboxer"):
        SandboxCgroups(again, fs)
    assert "removed the cgroup /ns/gone a stopped sandboxer left" in caplog.text
    assert not Path(fs.path("/ns/gone")).exists()
    assert not note(again, sandbox_id="gone").exists()
    assert Path(fs.path("/ns/live")).exists()  # a sandbox still held: its Shutdown removes it
    assert Path(fs.path("/ns/busy")).exists()  # populated: kept, noted, tried again later
    assert note(again, sandbox_id="busy").exists()
    assert not note(again, sandbox_id="half").exists()
    assert "/ns/half" not in caplog.text


# --- what metrics read ---------------------------------------------------------------------


def test_usage_is_the_whole_sandbox_s(fs: FakeCgroupFs, table: PodTable) -> None:
    cgroups = SandboxCgroups(table, fs)
    assert cgroups.usage("ns", "sb1") is None  # no parent
    cgroups.prepare("ns", "sb1", built())
    parent = Path(fs.path("/ns/sb1"))
    (parent / "memory.current").write_text("1000\n")
    (parent / "memory.peak").write_text("2000\n")
    (parent / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (parent / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (parent / "pids.current").write_text("7\n")
    assert cgroups.usage("ns", "sb1") == {
        "memory_usage_bytes": 1000,
        "memory_limit_bytes": DEFAULT_MEMORY,
        "memory_max_usage_bytes": 2000,
        "oom_kills": 1,
        "cpu_usage_seconds": 2.5,
        "pids": 7,
        "pids_limit": DEFAULT_PIDS,
    }
    (parent / "pids.current").unlink()
    assert cgroups.usage("ns", "sb1") is None  # unreadable: the task's own figures stay


# --- the sandboxer's Start and Shutdown ----------------------------------------------------


def create_request(sandbox_id: str, spec: dict[str, Any]) -> sandbox_pb.ControllerCreateRequest:
    return sandbox_pb.ControllerCreateRequest(
        sandbox_id=sandbox_id,
        sandbox=SandboxPb(
            sandbox_id=sandbox_id,
            runtime=SandboxRuntimePb(name=RUNTIME),
            spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(spec).encode()),
        ),
    )


def made(fs: FakeCgroupFs, sandbox_id: str, table: PodTable) -> bool:
    """Whether the sandbox's parent cgroup is in the fake tree, or its note in the state."""
    return Path(fs.path(f"/{NS}/{sandbox_id}")).exists() or note(table, NS, sandbox_id).exists()


def on_fake_v2(sandboxer: ContainerSandboxer, fs: FakeCgroupFs) -> SandboxCgroups:
    """Point ``sandboxer`` at the fake cgroup2 tree (its spec built for v2 as well)."""
    cgroups = SandboxCgroups(sandboxer._table, fs)
    sandboxer._runtime.cgroups = cgroups
    return cgroups


async def test_start_makes_the_parent_and_shutdown_or_a_failed_start_removes_it(
    fs: FakeCgroupFs, workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandboxclient.sandboxer import _harden

    monkeypatch.setattr(_harden, "cgroup_v2", lambda: True)  # the spec laid out for v2
    spec = {"root": {"path": workdir}, "process": {"args": ["sleep", "600"]}}
    async with FakeContainerd() as fake:
        with request_scope({NAMESPACE_HEADER: NS}):
            sandboxer = ContainerSandboxer(os.path.join(workdir, "state"), containerd=fake.address)
            try:
                cgroups = on_fake_v2(sandboxer, fs)
                await sandboxer.create(create_request("cg1", spec))
                await sandboxer.start(sandbox_pb.ControllerStartRequest(sandbox_id="cg1"))
                assert fs.read(f"/{NS}/cg1", "pids.max") == str(DEFAULT_PIDS)
                assert fake.container_ids(NS) == ["cg1"]
                await sandboxer.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="cg1"))
                assert not made(fs, "cg1", sandboxer._table)
                # A Start that fails once its container is made (no such program): undone.
                broken = {**spec, "process": {"args": ["/no/such/program"]}}
                await sandboxer.create(create_request("cg2", broken))
                with pytest.raises(GRPCError):
                    await sandboxer.start(sandbox_pb.ControllerStartRequest(sandbox_id="cg2"))
                assert fake.container_ids(NS) == []
                assert not made(fs, "cg2", sandboxer._table)
                # A host without a controller the limits need: refused by name, nothing left.
                fs.write("/", "cgroup.controllers", "cpu memory")
                await sandboxer.create(create_request("cg3", spec))
                with pytest.raises(GRPCError) as info:
                    await sandboxer.start(sandbox_pb.ControllerStartRequest(sandbox_id="cg3"))
                assert info.value.status is Status.FAILED_PRECONDITION
                assert '"pids" is not available' in str(info.value.message)
                assert fake.container_ids(NS) == []
                assert not made(fs, "cg3", sandboxer._table)
                assert cgroups.usage(NS, "cg3") is None
            finally:
                await sandboxer.aclose()
