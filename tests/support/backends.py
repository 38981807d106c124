"""What the tests share about where they run: the stand-in or a real containerd, a fresh
namespace, and the figures a test wants in the run's log."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sandboxclient import Client
from sandboxclient.testing import (
    PLUGIN_NAME,
    ContainerdDaemon,
    FakeContainerd,
    PluggedContainerd,
    SandboxerProcess,
)
from tests.support.slowdown import slowed

__all__ = ("PLUGIN_NAME", "SUMMARY_LINES", "Backend", "RealContainerd", "new_namespace")

SUMMARY_LINES: list[str] = []
"""Figures tests want in the run's log (pytest captures their output)."""


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

    def leases(self) -> list[str]:
        """The ids of the leases in the test's namespace (``ctr leases ls`` on the daemon)."""
        return self._listed("leases")

    def snapshots(self) -> list[str]:
        """The keys of the snapshots in the test's namespace (``ctr snapshots ls``)."""
        return self._listed("snapshots")

    def _listed(self, what: str) -> list[str]:
        if self.fake is not None:
            found = self.fake.lease_ids if what == "leases" else self.fake.snapshot_keys
            return found(self.namespace)
        assert self.daemon is not None
        out = self.daemon.ctr(what, "ls", namespace=self.namespace).stdout.splitlines()
        return sorted(line.split()[0] for line in out[1:] if line.strip())

    def client(self, **kwargs: object) -> Client:
        """A Client for this backend in the test's own namespace."""
        options: dict[str, object] = {
            "namespace": self.namespace,
            "sandboxer": self.sandboxer,
            "timeout": slowed(20.0),
        }
        options.update(kwargs)
        return Client(self.address, **options)  # type: ignore[arg-type]


RealContainerd = PluggedContainerd
"""The session's real containerd (see ``sandboxclient.testing.PluggedContainerd``)."""


def new_namespace() -> str:
    """A fresh namespace, so tests never see each other's sandboxes."""
    return f"t-{uuid.uuid4().hex[:12]}"
