"""Fixtures: the embedded stand-in, a real containerd with the Python sandboxer, and a
``backend`` that runs one test against each."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from sandboxclient import Client
from sandboxclient.testing import (
    PLUGIN_NAME,
    ContainerdDaemon,
    FakeContainerd,
    PluggedContainerd,
    SandboxerProcess,
    plugged_containerd,
    require_or_skip_reason,
)

from ._helpers import client_tasks

__all__ = ("PLUGIN_NAME",)


_seen_version: list[str] = []
SUMMARY_LINES: list[str] = []
"""Figures tests want in the run's log (pytest captures their output)."""


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


@dataclass
class Backend:
    """Where a test's client talks to: the stand-in or a real containerd."""

    kind: str
    address: str
    sandboxer: str
    namespace: str
    daemon: ContainerdDaemon | None = None
    fake: FakeContainerd | None = None
    sandboxer_process: SandboxerProcess | None = None

    def calls(self, method: str) -> int:
        """How many calls of ``method`` (``"Controller/Wait"``...) the server side has seen
        so far: the stand-in, or through containerd the Python sandboxer."""
        if self.fake is not None:
            return self.fake.call_count(method)
        assert self.sandboxer_process is not None
        return self.sandboxer_process.call_count(method)

    async def wait_for_call(self, method: str, count: int) -> None:
        """Return once :meth:`calls` of ``method`` reaches ``count``: the call is in flight."""
        if self.fake is not None:
            await asyncio.wait_for(self.fake.wait_for_call(method, count), 30)
            return
        assert self.sandboxer_process is not None
        await self.sandboxer_process.wait_for_call(method, count)

    def client(self, **kwargs: object) -> Client:
        """A Client for this backend in the test's own namespace."""
        options: dict[str, object] = {
            "namespace": self.namespace,
            "sandboxer": self.sandboxer,
            "timeout": 20.0,
        }
        options.update(kwargs)
        return Client(self.address, **options)  # type: ignore[arg-type]


RealContainerd = PluggedContainerd
"""The session's real containerd (see ``sandboxclient.testing.PluggedContainerd``)."""


@pytest.fixture(scope="session")
def real_containerd() -> Iterator[RealContainerd]:
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with plugged_containerd(PLUGIN_NAME) as real:
        _seen_version.append(real.daemon.version)
        yield real


@pytest.fixture
async def fake() -> AsyncIterator[FakeContainerd]:
    async with FakeContainerd(sandboxers=("shim", PLUGIN_NAME)) as server:
        yield server


def new_namespace() -> str:
    """A fresh namespace, so tests never see each other's sandboxes."""
    return f"t-{uuid.uuid4().hex[:12]}"


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
