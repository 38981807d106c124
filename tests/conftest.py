"""Fixtures: the embedded stand-in, a real containerd with the Python sandboxer, a
``backend`` that runs one test against each, busybox roots and short working folders."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client
from sandboxclient.testing import (
    PLUGIN_NAME,
    FakeContainerd,
    plugged_containerd,
    require_or_skip_reason,
)
from tests.support.backends import (
    SUMMARY_LINES,
    Backend,
    RealContainerd,
    new_namespace,
)
from tests.support.helpers import client_tasks
from tests.support.host import busybox_root
from tests.support.slowdown import slowdown, slowed

_seen_version: list[str] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, hand the worker's summary lines to the controller, which reports."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["sandboxclient_summary"] = (list(_seen_version), list(SUMMARY_LINES))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Gather a pytest-xdist worker's summary lines (see ``pytest_sessionfinish``)."""
    versions, lines = getattr(node, "workeroutput", {}).get("sandboxclient_summary", ([], []))
    _seen_version.extend(versions)
    SUMMARY_LINES.extend(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which containerd the real-daemon tests ran against, and how many ran."""
    outcomes = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in outcomes:
        for report in terminalreporter.stats.get(outcome, []):
            # A pass counts once (its call); a failure or skip may happen at setup.
            counted = report.when == "call" or (outcome != "passed" and report.when == "setup")
            if counted and "real" in getattr(report, "keywords", {}):
                outcomes[outcome] += 1
    version = _seen_version[0] if _seen_version else "not started"
    terminalreporter.write_line(
        f"real containerd: {version}; real-daemon tests: {outcomes['passed']} passed, "
        f"{outcomes['failed']} failed, {outcomes['skipped']} skipped"
    )
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def real_containerd() -> Iterator[RealContainerd]:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # They share the host's cgroups, networks and one daemon: `make test` runs them apart,
        # one at a time, and only the stand-in tests on every core.
        pytest.fail("a test of the real containerd must be marked real and run without -n")
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    start_timeout = slowed(20.0) if slowdown() > 1 else None
    with plugged_containerd(PLUGIN_NAME, start_timeout=start_timeout) as real:
        _seen_version.append(str(real.daemon.version))
        yield real
    # Its shims' sockets and runc state live on the machine's shared paths: none may stay.
    assert real.daemon.left_behind == [], f"the real containerd left {real.daemon.left_behind}"


@pytest.fixture
def real(real_containerd: RealContainerd) -> Iterator[RealContainerd]:
    """The session's real containerd, running before and after the test (which may kill or
    restart it)."""
    real_containerd.ensure_running()
    yield real_containerd
    real_containerd.ensure_running()


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root the session's tests share: they read it, or add files of unique names."""
    return busybox_root(tmp_path_factory.mktemp("busybox"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A busybox root of the test's own, for a test that changes what is in it."""
    return busybox_root(tmp_path / "root")


@pytest.fixture
def fifo_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The process's temporary directory for the test: a short folder of its own, where the
    client makes its FIFO folders, so a test that checks it left none (``fifo_dirs()``)
    counts only its own, never another process's on the machine. Removed after."""
    # pytest settles its own base folder on first use, from the temporary directory: before.
    tmp_path_factory.getbasetemp()
    path = tempfile.mkdtemp(prefix="f-")
    monkeypatch.setattr(tempfile, "tempdir", path)
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[str]:
    """A folder of a short path (a unix socket's must stay under 108 bytes) that others may
    look into, so only what the code under test makes keeps them out; removed after."""
    path = tempfile.mkdtemp(prefix="t-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeContainerd]:
    async with FakeContainerd(sandboxers=("shim", PLUGIN_NAME)) as server:
        yield server


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The same test against the stand-in and against a real containerd."""
    if request.param == "fake":
        async with FakeContainerd(sandboxers=("shim", PLUGIN_NAME)) as server:
            yield Backend("fake", server.address, "shim", new_namespace(), fake=server)
            # The stand-in refuses what would crash containerd 2.1; the client sends none.
            assert server.crash_requests == 0
        return
    real: RealContainerd = request.getfixturevalue("real_containerd")
    real.ensure_running()
    target = Backend(
        "real",
        real.daemon.address,
        PLUGIN_NAME,
        new_namespace(),
        real.daemon,
        sandboxer_process=real.sandboxer,
    )
    yield target
    await _sweep(target)
    real.ensure_running()


async def _sweep(target: Backend) -> None:
    """Shut down whatever a test left in its namespace, so the daemon stays clean."""
    try:
        async with target.client() as client:
            for info in await client.list_sandboxes():
                sandbox = await client.load_sandbox(info.id)
                await sandbox.shutdown()
            for record in await client.list_containers():
                await client.container_handle(record).delete(force=True)
    except Exception as exc:  # the daemon may be down after a restart test
        print(f"sweep of {target.namespace} failed: {exc!r}", file=sys.stderr)


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[Client]:
    """A Client on the backend; the test fails if it leaves a task running."""
    before = asyncio.all_tasks()
    async with backend.client() as c:
        yield c
    await asyncio.sleep(0)
    assert client_tasks(before) == []
