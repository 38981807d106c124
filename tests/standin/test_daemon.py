"""The private containerd the real-daemon tests and benchmarks run against."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxclient import ContainerdVersion
from sandboxclient.testing import ContainerdDaemon, ContainerdUnavailable, require_or_skip_reason
from sandboxclient.testing._hostpaths import SHARED_RUNC_ROOT, SHIM_SOCKET_DIR
from sandboxclient.testing._locate import (
    MIN_VERSION,
    REQUIRE_ENV,
    find_containerd_bin_dir,
    locate_containerd,
)
from sandboxclient.testing._procs import kill_and_reap
from tests.support.helpers import pid_gone
from tests.support.releases import SANDBOX_IMAGES


@pytest.fixture
def daemon() -> Iterator[ContainerdDaemon]:
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with ContainerdDaemon() as d:
        d.start()
        yield d
    assert d.left_behind == []


@pytest.mark.real
def test_version_is_at_least_2(daemon: ContainerdDaemon) -> None:
    assert daemon.version.release >= MIN_VERSION


@pytest.mark.real
def test_socket_and_dirs_are_private(daemon: ContainerdDaemon) -> None:
    assert len(os.fsencode(daemon.address)) < 108
    assert Path(daemon.address).is_socket()
    for path in (daemon.root, daemon.state, daemon.log_path):
        assert path.is_relative_to(daemon.base_dir)
        assert path.exists()
    assert "containerd successfully booted" in daemon.log_path.read_text()


@pytest.mark.real
def test_ctr_version_and_namespaces(daemon: ContainerdDaemon) -> None:
    out = daemon.ctr("version").stdout
    assert "Server:" in out
    server = dict(
        line.strip().partition(":")[::2] for line in out.split("Server:", 1)[1].splitlines()
    )
    assert ContainerdVersion.parse(server["Version"].strip()) == daemon.version
    daemon.ctr("namespaces", "create", "t-daemon")
    assert "t-daemon" in daemon.ctr("namespaces", "ls", "-q").stdout.split()


@pytest.mark.real
def test_ctr_failure_carries_stderr(daemon: ContainerdDaemon) -> None:
    assert daemon.ctr("namespaces", "create", "Bad_NS!", check=False).returncode != 0
    with pytest.raises(subprocess.CalledProcessError) as info:
        daemon.ctr("namespaces", "create", "Bad_NS!")
    assert "Bad_NS!" in info.value.stderr
    assert any("Bad_NS!" in note for note in info.value.__notes__)


@pytest.mark.real
def test_kill_then_restart_keeps_state(daemon: ContainerdDaemon) -> None:
    daemon.ctr("namespaces", "create", "t-persist")
    old_pid = daemon.pid
    assert old_pid is not None
    daemon.kill()
    assert not daemon.alive()
    assert daemon.pid is None
    assert pid_gone(old_pid)
    assert daemon.ctr("version", check=False).returncode != 0

    started = time.monotonic()
    daemon.restart()
    assert time.monotonic() - started < 10
    assert daemon.alive()
    assert daemon.pid not in (None, old_pid)
    assert "t-persist" in daemon.ctr("namespaces", "ls", "-q").stdout.split()


@pytest.mark.real
def test_restart_while_running(daemon: ContainerdDaemon) -> None:
    old_pid = daemon.pid
    daemon.restart()
    assert daemon.alive()
    assert daemon.pid != old_pid
    daemon.ctr("version")


@pytest.mark.real
def test_pause_image_imports_into_k8s_io(daemon: ContainerdDaemon) -> None:
    reason = require_or_skip_reason(pause_image=True)
    if reason is not None:
        pytest.skip(reason)
    # The image the daemon's CRI asks for, which its release chose.
    ref = daemon.ensure_pause_image()
    assert ref == daemon.sandbox_image() == SANDBOX_IMAGES[daemon.version.release]
    assert ref in daemon.ctr("images", "ls", "-q", namespace="k8s.io").stdout.split()
    # Present now: the second call only looks.
    started = time.monotonic()
    assert daemon.ensure_pause_image() == ref
    assert time.monotonic() - started < 2


@pytest.mark.real
def test_stop_leaves_no_process(daemon: ContainerdDaemon) -> None:
    reason = require_or_skip_reason(pause_image=True)
    if reason is not None:
        pytest.skip(reason)
    pause = daemon.ensure_pause_image()
    # A running container gives the daemon a shim and the shim a child to clean up.
    daemon.ctr("run", "-d", "--null-io", pause, "t-stop", namespace="k8s.io")
    shims = daemon.shim_pids()
    assert len(shims) == 1
    # The shim outlives a killed daemon and is still found as ours.
    daemon.kill()
    assert daemon.shim_pids() == shims
    daemon.restart()
    assert "t-stop" in daemon.ctr("tasks", "ls", "-q", namespace="k8s.io").stdout.split()
    task_pid = int(daemon.ctr("tasks", "ls", namespace="k8s.io").stdout.split()[-2])
    daemon_pid = daemon.pid
    assert daemon_pid is not None

    daemon.stop()
    assert not daemon.alive()
    assert daemon.shim_pids() == []
    for pid in (daemon_pid, *shims, task_pid):
        assert pid_gone(pid), pid
    assert str(daemon.base_dir) not in Path("/proc/self/mountinfo").read_text()
    daemon.stop()  # idempotent


def _shim_socket(daemon: ContainerdDaemon, namespace: str, task_id: str) -> Path:
    """Where containerd's shim of task ``task_id`` listens (pkg/shim's SocketAddress)."""
    key = f"{daemon.address}/{namespace}/{task_id}".encode()
    return SHIM_SOCKET_DIR / hashlib.sha256(key).hexdigest()


@pytest.mark.real
def test_stop_leaves_nothing_on_the_shared_paths(daemon: ContainerdDaemon) -> None:
    reason = require_or_skip_reason(pause_image=True)
    if reason is not None:
        pytest.skip(reason)
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    pause = daemon.ensure_pause_image(namespace)
    for task_id in ("ended", "crashed"):
        daemon.ctr("run", "-d", "--null-io", pause, task_id, namespace=namespace)
    sockets = [_shim_socket(daemon, namespace, t) for t in ("ended", "crashed")]
    assert all(s.is_socket() for s in sockets)
    assert (SHARED_RUNC_ROOT / namespace / "ended").is_dir()
    # A shim that dies while containerd is down: at its start containerd deletes the bundle,
    # which named the socket, and the socket stays.
    argv = {p: Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") for p in daemon.shim_pids()}
    crashed = [p for p, args in argv.items() if b"crashed" in args]
    daemon.kill()
    kill_and_reap(crashed)
    daemon.restart()
    assert "crashed" not in daemon.ctr("tasks", "ls", "-q", namespace=namespace).stdout.split()
    assert sockets[1].is_socket()
    # A task deleted as usual: runc removes its state, not the namespace's folder.
    daemon.ctr("tasks", "delete", "--force", "ended", namespace=namespace)
    assert not (SHARED_RUNC_ROOT / namespace / "ended").exists()
    assert (SHARED_RUNC_ROOT / namespace).is_dir()

    daemon.stop()
    assert daemon.left_behind == []
    assert not sockets[1].exists()
    assert not (SHARED_RUNC_ROOT / namespace).exists()


@pytest.mark.real
def test_a_runc_folder_there_before_the_first_start_stays() -> None:
    reason = require_or_skip_reason(pause_image=True)
    if reason is not None:
        pytest.skip(reason)
    # As the namespace of another containerd on the machine.
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    (SHARED_RUNC_ROOT / namespace).mkdir()
    try:
        with ContainerdDaemon() as daemon:
            daemon.start()
            pause = daemon.ensure_pause_image(namespace)
            daemon.ctr("run", "-d", "--null-io", pause, "c1", namespace=namespace)
            daemon.ctr("tasks", "delete", "--force", "c1", namespace=namespace)
        assert daemon.left_behind == []
        assert (SHARED_RUNC_ROOT / namespace).is_dir()
    finally:
        with contextlib.suppress(FileNotFoundError):
            (SHARED_RUNC_ROOT / namespace).rmdir()


def test_a_log_level_that_hides_the_shims_is_refused() -> None:
    for level in ("warn", "error", "WARN"):
        with pytest.raises(ValueError, match="info-level lines"):
            ContainerdDaemon(log_level=level)


def test_a_log_level_is_taken_in_any_case() -> None:
    # containerd parses its level ignoring case; so does the check that comes first.
    try:
        daemon = ContainerdDaemon(log_level="DEBUG")
    except ContainerdUnavailable as exc:
        pytest.skip(str(exc))
    try:
        assert daemon.log_level == "DEBUG"
    finally:
        daemon.cleanup()
    assert not daemon.base_dir.exists()


@pytest.mark.real
def test_cleanup_removes_private_dirs() -> None:
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    d = ContainerdDaemon()
    d.start()
    d.cleanup()
    assert not d.base_dir.exists()
    d.cleanup()  # idempotent


def test_missing_containerd_skips_or_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONTAINERD_BIN", str(tmp_path / "nowhere"))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    if os.geteuid() == 0:
        reason = require_or_skip_reason()
        assert reason is not None
        assert "CONTAINERD_BIN" in reason
        assert "install containerd >= 2.0" in reason
    else:
        assert require_or_skip_reason() is not None
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(ContainerdUnavailable, match=REQUIRE_ENV):
        require_or_skip_reason()


def fake_tool(directory: Path, name: str, output: str = "") -> Path:
    """An executable ``name`` in ``directory`` that prints ``output``."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(0o755)
    return path


def fake_containerd(directory: Path, version: str) -> Path:
    return fake_tool(
        directory, "containerd", f"containerd github.com/containerd/containerd/v2 {version} abc"
    )


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CONTAINERD_BIN, and a PATH of one empty directory (returned)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("CONTAINERD_BIN", raising=False)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_containerd_is_found_through_containerd_bin_then_path(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Nothing else is looked at, whatever this checkout's .cache holds.
    with pytest.raises(ContainerdUnavailable) as info:
        find_containerd_bin_dir()
    assert str(info.value) == (
        "no containerd on PATH: install containerd >= 2.0 with containerd-shim-runc-v2, ctr "
        "and runc, or set CONTAINERD_BIN to the directory that holds them"
    )
    on_path = tmp_path / "on-path"
    fake_containerd(on_path, "2.1.9")
    monkeypatch.setenv("PATH", f"{bare_env}{os.pathsep}{on_path}")
    assert find_containerd_bin_dir() == on_path
    # CONTAINERD_BIN comes first, as a directory or as the binary in it.
    chosen = tmp_path / "chosen"
    binary = fake_containerd(chosen, "2.0.0")
    monkeypatch.setenv("CONTAINERD_BIN", str(chosen))
    assert find_containerd_bin_dir() == chosen
    monkeypatch.setenv("CONTAINERD_BIN", str(binary))
    assert find_containerd_bin_dir() == chosen
    monkeypatch.setenv("CONTAINERD_BIN", str(on_path / "nothing-here"))
    with pytest.raises(ContainerdUnavailable, match="no such file or directory"):
        find_containerd_bin_dir()
    monkeypatch.setenv("CONTAINERD_BIN", str(bare_env))
    with pytest.raises(ContainerdUnavailable, match=r"no executable containerd in .*; install"):
        find_containerd_bin_dir()


@pytest.mark.parametrize(
    ("reported", "expected"),
    [("2.1.9+unknown", "2.1.9"), ("v2.3.4", "2.3.4"), ("v2.4.0-beta.0", "2.4.0-beta.0")],
)
def test_the_version_is_read_as_each_kind_of_build_reports_it(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reported: str, expected: str
) -> None:
    fake_containerd(tmp_path / "bin", reported)
    monkeypatch.setenv("CONTAINERD_BIN", str(tmp_path / "bin"))
    bin_dir, version = locate_containerd()
    assert (bin_dir, version) == (tmp_path / "bin", ContainerdVersion.parse(expected))


def test_a_containerd_older_than_2_is_refused(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_containerd(tmp_path / "old", "1.7.24")
    monkeypatch.setenv("CONTAINERD_BIN", str(tmp_path / "old"))
    with pytest.raises(ContainerdUnavailable) as info:
        find_containerd_bin_dir()
    assert "containerd 1.7.24 from CONTAINERD_BIN=" in str(info.value)
    assert "has no sandbox API: install containerd >= 2.0" in str(info.value)
    with pytest.raises(ContainerdUnavailable, match="has no sandbox API"):
        ContainerdDaemon(bin_dir=tmp_path / "old")
    fake_tool(tmp_path / "odd", "containerd", "no version here")
    monkeypatch.setenv("CONTAINERD_BIN", str(tmp_path / "odd"))
    with pytest.raises(ContainerdUnavailable, match=r"cannot read a version .*; install"):
        find_containerd_bin_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="the tool checks come after the root check")
def test_each_missing_tool_is_named(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    fake_containerd(bin_dir, "2.1.9")
    monkeypatch.setenv("CONTAINERD_BIN", str(bin_dir))
    for tool in ("containerd-shim-runc-v2", "ctr", "runc"):
        reason = require_or_skip_reason()
        assert reason is not None
        assert reason.startswith(f"{tool} not found in {bin_dir} or on PATH: install it")
        fake_tool(bare_env if tool == "runc" else bin_dir, tool)  # runc may come from PATH
    assert require_or_skip_reason() is None
