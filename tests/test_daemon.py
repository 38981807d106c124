"""The private containerd the real-daemon tests and benchmarks run against."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxclient.testing._daemon import (
    MIN_VERSION,
    REQUIRE_ENV,
    ContainerdDaemon,
    ContainerdUnavailable,
    require_or_skip_reason,
)

PAUSE_REF = "registry.k8s.io/pause:3.10"


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


@pytest.fixture
def daemon() -> Iterator[ContainerdDaemon]:
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with ContainerdDaemon() as d:
        d.start()
        yield d


@pytest.mark.real
def test_version_is_at_least_2(daemon: ContainerdDaemon) -> None:
    version = tuple(int(part) for part in daemon.version.split("."))
    assert len(version) == 3
    assert version[:2] >= MIN_VERSION


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
    assert daemon.version in out.split("Server:", 1)[1]
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
    assert _gone(old_pid)
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
    daemon.ensure_pause_image()
    assert PAUSE_REF in daemon.ctr("images", "ls", "-q", namespace="k8s.io").stdout.split()
    # Present now: the second call only looks.
    started = time.monotonic()
    daemon.ensure_pause_image()
    assert time.monotonic() - started < 2


@pytest.mark.real
def test_stop_leaves_no_process(daemon: ContainerdDaemon) -> None:
    reason = require_or_skip_reason(pause_image=True)
    if reason is not None:
        pytest.skip(reason)
    daemon.ensure_pause_image()
    # A running container gives the daemon a shim and the shim a child to clean up.
    daemon.ctr("run", "-d", "--null-io", PAUSE_REF, "t-stop", namespace="k8s.io")
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
        assert _gone(pid), pid
    assert str(daemon.base_dir) not in Path("/proc/self/mountinfo").read_text()
    daemon.stop()  # idempotent


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
    else:
        assert require_or_skip_reason() is not None
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(ContainerdUnavailable, match=REQUIRE_ENV):
        require_or_skip_reason()
