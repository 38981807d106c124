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
    shim_namespaces,
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
                f'time="x" level=info msg="connecting to shim m1" address="unix://{under}/{grouped}"'
                " namespace=t-1 protocol=ttrpc version=3",
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


def test_empty_namespace_dirs_and_stale_runsc_locks_go_and_nothing_else(tmp_path: Path) -> None:
    root, bundles = tmp_path / "runc", tmp_path / "state" / "io.containerd.runtime.v2.task"
    (root / "t-empty").mkdir(parents=True)
    stale = root / "t-runsc" / "+m+_sandbox:+s+.lock"
    stale.parent.mkdir()
    stale.write_text("")
    # A live runsc container: its state beside its lock; and a lock held by a command.
    live_lock = root / "t-live" / "+a+_sandbox:+a+.lock"
    live_lock.parent.mkdir()
    live_lock.write_text("")
    (root / "t-live" / "+a+_sandbox:+a+.state").write_text("{}")
    held = root / "t-held" / "+b+_sandbox:+b+.lock"
    held.parent.mkdir()
    held.write_text("")
    theirs = _container(root, "shared", "c9", tmp_path / "other-daemon")
    (root / "not-ours").mkdir()
    names = ["t-empty", "t-runsc", "t-live", "t-held", "shared", "t-gone"]
    with open(held) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        release_runc_namespaces(names, root=root)
        assert left_behind([], names, bundles, root) == []
    assert sorted(p.name for p in root.iterdir()) == ["not-ours", "shared", "t-held", "t-live"]
    assert theirs.exists()
    assert live_lock.exists()
    assert held.exists()
    # Released, the lock is stale: reported, then removed with its folder.
    assert left_behind([], ["t-held"], bundles, root) == [held.parent, held]
    release_runc_namespaces(["t-held"], root=root)
    assert not held.parent.exists()


def test_what_stays_of_a_daemon_is_reported(tmp_path: Path) -> None:
    root, bundles = tmp_path / "runc", tmp_path / "state" / "io.containerd.runtime.v2.task"
    sock = tmp_path / "s" / "abc"
    sock.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock))
    (root / "t-1").mkdir(parents=True)
    ours = _container(root, "t-2", "c1", bundles)
    _container(root, "t-3", "c1", tmp_path / "another")
    _container(root, "t-3", "c2", bundles)
    names = ["t-1", "t-2", "t-3", "t-4"]
    assert left_behind([sock, tmp_path / "s" / "gone"], names, bundles, root) == [
        sock,
        root / "t-1",
        root / "t-2",
        ours,
    ]
