"""What a private containerd's shims leave on the machine's shared paths, tried on paths of
the test's own: the socket folder, runc's state folder, the daemon's log."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path

from sandboxclient.testing._hostpaths import (
    left_behind,
    listening_sockets,
    logged_shim_sockets,
    release_runc_namespaces,
    remove_sockets,
    runc_namespaces,
    shim_namespaces,
    shim_tasks,
)

ADDRESS = "/tmp/ctrd-x/c.sock"


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _container(root: Path, ns: str, cid: str, bundles: Path) -> Path:
    """runc's state of a container whose bundle is below ``bundles``."""
    d = root / ns / cid
    d.mkdir(parents=True)
    labels = [f"bundle={bundles}/{ns}/{cid}"]
    (d / "state.json").write_text(json.dumps({"config": {"labels": labels}}))
    return d


def test_the_sockets_a_process_listens_on_are_found(tmp_path: Path) -> None:
    sockets = tmp_path / "s"
    sockets.mkdir()
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as other:
        listener.bind(str(sockets / "abc"))
        listener.listen()
        other.bind(str(tmp_path / "elsewhere"))  # not below the folder asked for
        assert listening_sockets([os.getpid()], under=sockets) == {sockets / "abc"}
    assert listening_sockets([], under=sockets) == set()


def test_the_log_names_this_daemons_shim_sockets_and_their_debug_sockets(tmp_path: Path) -> None:
    under = tmp_path / "s"
    own = _name(f"{ADDRESS}/t-1/c1")
    grouped = _name(f"{ADDRESS}/t-1/pod")  # a member connecting to its sandbox's shim
    log = tmp_path / "containerd.log"
    log.write_text(
        "\n".join(
            [
                'time="x" level=info msg="containerd successfully booted in 0.1s"',
                f'time="x" level=info msg="connecting to shim c1" address="unix://{under}/{own}"'
                " namespace=t-1 protocol=ttrpc version=3",
                'time="x" level=info msg="connecting to shim m1" '
                f'address="unix://{under}/{grouped}" namespace=t-1 protocol=ttrpc version=3',
                # Not in the shared folder (a vsock shim, another path): not ours to remove.
                'time="x" level=info msg="connecting to shim v1" address="unix:///elsewhere/v"'
                " namespace=t-1 protocol=ttrpc version=3",
            ]
        )
    )
    debug = _name(f"{ADDRESS}/t-1/c1/debug")
    every = {under / own, under / grouped, under / debug}
    assert logged_shim_sockets(log, ADDRESS, under) == every
    assert logged_shim_sockets(log, ADDRESS, under, namespace="t-1") == every
    assert logged_shim_sockets(log, ADDRESS, under, namespace="t-2") == set()
    assert logged_shim_sockets(tmp_path / "no.log", ADDRESS, under) == set()


def test_only_sockets_are_removed(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
    (tmp_path / "file").write_text("")
    remove_sockets([tmp_path / "sock", tmp_path / "file", tmp_path / "gone"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_namespaces_are_those_of_the_shims_bundles(tmp_path: Path) -> None:
    assert shim_namespaces(tmp_path) == set()
    bundles = tmp_path / "io.containerd.runtime.v2.task"
    (bundles / "t-1").mkdir(parents=True)
    (bundles / "k8s.io" / "c1").mkdir(parents=True)
    (tmp_path / "io.containerd.sandbox.controller.v1.shim" / "t-2").mkdir(parents=True)
    (tmp_path / "io.containerd.grpc.v1.cri" / "t-3").mkdir(parents=True)
    assert shim_namespaces(tmp_path) == {"t-1", "k8s.io", "t-2"}


def test_the_tasks_are_those_the_log_names_and_those_with_a_bundle(tmp_path: Path) -> None:
    state, under = tmp_path / "state", tmp_path / "s"
    (state / "io.containerd.runtime.v2.task" / "t-1" / "c1").mkdir(parents=True)
    (state / "io.containerd.sandbox.controller.v1.shim" / "t-2" / "pod").mkdir(parents=True)
    (state / "io.containerd.runtime.v2.task" / "t-3").mkdir(parents=True)
    log = tmp_path / "containerd.log"
    log.write_text(
        f'time="x" level=info msg="connecting to shim gone" address="unix://{under}/abc"'
        " namespace=t-1 protocol=ttrpc version=3\n"
        f'time="x" level=info msg="connecting to shim m1" address="unix://{under}/def"'
        " namespace=t-4 protocol=ttrpc version=3\n"
    )
    assert shim_tasks(state, log) == {
        "t-1": {"c1", "gone"},
        "t-2": {"pod"},
        "t-3": set(),
        "t-4": {"m1"},
    }
    assert shim_tasks(tmp_path / "none", tmp_path / "no.log") == {}


def test_the_runc_namespaces_are_the_folders_of_its_root(tmp_path: Path) -> None:
    (tmp_path / "t-1").mkdir()
    (tmp_path / "file").write_text("")
    assert runc_namespaces(tmp_path) == {"t-1"}
    assert runc_namespaces(tmp_path / "none") == frozenset()


def _lock(directory: Path, cid: str, sid: str, *, state_of: Path | None = None) -> Path:
    """A runsc lock, with its state file (bundle ``state_of``) if given."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / f"+{cid}+_sandbox:+{sid}+.lock"
    lock.write_text("")
    if state_of is not None:
        state = lock.with_suffix(".state")
        state.write_text(json.dumps({"id": cid, "bundleDir": str(state_of)}))
    return lock


def test_only_its_tasks_stale_runsc_locks_go_and_only_its_empty_folders(tmp_path: Path) -> None:
    root, bundles = tmp_path / "runc", tmp_path / "state" / "io.containerd.runtime.v2.task"
    (root / "t-empty").mkdir(parents=True)
    stale = _lock(root / "t-runsc", "m", "s")
    # A live runsc container: its state beside its lock; and a lock held by a command.
    live_lock = _lock(root / "t-live", "a", "a", state_of=bundles / "t-live" / "a")
    held = _lock(root / "t-held", "b", "b")
    theirs = _container(root, "shared", "c9", tmp_path / "other-daemon")
    # Another's stale lock, in a namespace this daemon used too: not ours to judge.
    another = _lock(root / "t-both", "x", "x")
    old_ours = _lock(root / "t-both", "o", "o")
    (root / "not-ours").mkdir()
    tasks = {
        "t-empty": set(),
        "t-runsc": {"m"},
        "t-live": {"a"},
        "t-held": {"b"},
        "shared": {"c1"},
        "t-both": {"o"},
        "t-gone": {"g"},
    }
    with open(held) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        release_runc_namespaces(tasks, kept=(), root=root)
        assert left_behind([], tasks, [bundles], (), root) == [
            held.parent,
            held,
            live_lock.parent,
            live_lock,
            live_lock.with_suffix(".state"),
        ]
    assert sorted(p.name for p in root.iterdir()) == [
        "not-ours",
        "shared",
        "t-both",
        "t-held",
        "t-live",
    ]
    assert not stale.exists()
    assert theirs.exists()
    assert another.exists()
    assert not old_ours.exists()
    assert held.exists()
    # Released, the lock is stale: reported, then removed with its folder.
    assert left_behind([], {"t-held": {"b"}}, [bundles], (), root) == [held.parent, held]
    release_runc_namespaces({"t-held": {"b"}}, kept=(), root=root)
    assert not held.parent.exists()


def test_folders_there_before_it_and_shared_ones_stay(tmp_path: Path) -> None:
    root, bundles = tmp_path / "runc", tmp_path / "state" / "io.containerd.runtime.v2.task"
    names = ["t-before", "default", "k8s.io", "moby", "t-new"]
    for ns in names:
        _lock(root / ns, "c", "c")
    tasks = {ns: {"c"} for ns in names}
    release_runc_namespaces(tasks, kept={"t-before"}, root=root)
    assert sorted(p.name for p in root.iterdir()) == ["default", "k8s.io", "moby", "t-before"]
    assert all(not any((root / ns).iterdir()) for ns in names[:4])  # its locks went
    # An empty folder that stays is no leftover of this daemon's.
    assert left_behind([], tasks, [bundles], {"t-before"}, root) == []


def test_what_stays_of_a_daemon_is_reported(tmp_path: Path) -> None:
    root, bundles = tmp_path / "runc", tmp_path / "state" / "io.containerd.runtime.v2.task"
    sock = tmp_path / "s" / "abc"
    sock.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
    (root / "t-1").mkdir(parents=True)
    ours = _container(root, "t-2", "c1", bundles)
    _container(root, "t-3", "c1", tmp_path / "another")
    mine = _container(root, "t-3", "c2", bundles)
    # gVisor's state of a container of ours, and of another's, in a kept folder.
    gvisor = _lock(root / "k8s.io", "g1", "g1", state_of=bundles / "k8s.io" / "g1")
    _lock(root / "k8s.io", "h1", "h1", state_of=tmp_path / "another" / "h1")
    tasks = {"t-1": set(), "t-2": {"c1"}, "t-3": {"c2"}, "t-4": set(), "k8s.io": {"g1"}}
    assert left_behind([sock, tmp_path / "s" / "gone"], tasks, [bundles], (), root) == [
        sock,
        gvisor,
        gvisor.with_suffix(".state"),
        root / "t-1",
        root / "t-2",
        ours,
        mine,
    ]


def test_state_below_any_of_the_daemon_s_bundle_folders_is_its_own(tmp_path: Path) -> None:
    # The shim sandbox controller bundles its sandboxes apart from tasks: both are ours.
    root = tmp_path / "runc"
    tasks_dir, sandboxes_dir = tmp_path / "tasks", tmp_path / "sandboxes"
    task = _container(root, "t-1", "c1", tasks_dir)
    pod = _container(root, "t-1", "p1", sandboxes_dir)
    other = _container(root, "t-2", "c2", tmp_path / "another-daemon")
    tasks = {"t-1": {"c1", "p1"}, "t-2": {"c2"}}
    assert left_behind([], tasks, [tasks_dir, sandboxes_dir], (), root) == [
        task.parent,
        task,
        pod,
    ]
    assert left_behind([], tasks, [tasks_dir], (), root) == [task]
    assert other.exists()


def test_a_stale_lock_of_a_member_of_its_sandbox_is_its_own(tmp_path: Path) -> None:
    # A gVisor member starts no shim: only its sandbox's id is among the daemon's tasks.
    root = tmp_path / "runc"
    member = _lock(root / "t-m", "sb-exit", "sb")
    strangers = _lock(root / "t-m", "x-exit", "x")
    tasks = {"t-m": {"sb"}}
    assert left_behind([], tasks, [tmp_path / "bundles"], (), root) == [member]
    release_runc_namespaces(tasks, kept=(), root=root)
    assert not member.exists()
    assert strangers.exists()
