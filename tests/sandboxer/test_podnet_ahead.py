"""A sandbox's network set up ahead of its task (in its user namespace, while containerd
creates the task, ``PodNetworks.start``): a plugin's failure reaches the Start as that
plugin's error, and what was set up is torn down once, by the Start's failure, with the
namespace the task was being created in left pinned until then. No root or plugins: the
namespace, the plugins, the egress rules and the DEL are stood in for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient._facts._network import NETWORK_ANNOTATION
from sandboxclient._wire._pb import SandboxPb
from sandboxclient.sandboxer import _podnet
from sandboxclient.sandboxer._cni import CniError
from sandboxclient.sandboxer._podnet import PodNetworks
from sandboxclient.sandboxer._podstate import PodEntry, PodRecord, PodTable

pytestmark = pytest.mark.anyio


@pytest.fixture
def table() -> Iterator[PodTable]:
    made = PodTable(None)
    yield made
    made.let_go()


class Host:
    """The stand-ins' record: the namespaces pinned and the DELs run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None) -> None:
        self.pinned: list[str] = []
        self.released: list[str] = []
        self.adding = asyncio.Event()
        self.add_may_end = asyncio.Event()
        self.fail = fail
        monkeypatch.setattr(_podnet, "make_netns", self.make_netns)
        monkeypatch.setattr(_podnet, "apply_egress", self.apply_egress)
        monkeypatch.setattr(_podnet, "network_add", self.network_add)
        monkeypatch.setattr(_podnet, "release", self.release)

    async def make_netns(self, userns: str, path: str, *, timeout: float) -> None:
        self.pinned.append(path)

    async def apply_egress(self, netns: str, policy: Any, *, timeout: float) -> None:
        pass

    async def network_add(self, network: Any, **kwargs: Any) -> Any:
        self.adding.set()
        await self.add_may_end.wait()
        if self.fail is not None:
            raise self.fail
        raise AssertionError("not reached in these tests")

    async def release(self, data: Any, where: str, **kwargs: Any) -> None:
        self.released.append(str(data["netns"]))
        self.pinned.remove(str(data["netns"]))


def _networks(table: PodTable, tmp_path: Path) -> PodNetworks:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bridge", "portmap", "bandwidth", "loopback"):  # found, never run
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    return PodNetworks(table, bin_dirs=[str(bin_dir)])


def _entry(table: PodTable) -> tuple[PodEntry, dict[str, Any]]:
    record = PodRecord("ns", "sb", SandboxPb(sandbox_id="sb"), datetime.now(UTC))
    entry = PodEntry(record)
    table.add(entry)
    spec = {
        "annotations": {NETWORK_ANNOTATION: "bridge"},
        "linux": {"namespaces": [{"type": "user", "path": "/proc/1/ns/user"}]},
    }
    return entry, spec


async def test_a_plugin_failing_ahead_of_the_task_fails_the_start_by_name_then_is_undone_once(
    table: PodTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(monkeypatch, CniError("tuning", "ADD", 11, "no such sysctl"))
    networks = _networks(table, tmp_path)
    entry, spec = _entry(table)
    joined = await networks.start(entry, spec, spec)
    assert joined is not None
    [netns] = host.pinned
    assert {"type": "network", "path": netns} in spec["linux"]["namespaces"]
    host.add_may_end.set()  # the plugin fails while the task is being created
    with pytest.raises(GRPCError) as got:
        await joined(4242)  # the task made: the setup's own error, not a cancellation
    assert got.value.status is Status.FAILED_PRECONDITION
    assert "CNI plugin tuning ADD failed (code 11): no such sysctl" in str(got.value.message)
    assert host.pinned == [netns]  # not undone by itself: the task joined it by path
    await networks.teardown_quietly(entry)  # the Start's failure
    assert (host.pinned, host.released) == ([], [netns])
    assert not networks.has_network(entry)


async def test_a_start_cut_short_during_the_setup_undoes_it_once(
    table: PodTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(monkeypatch, None)
    networks = _networks(table, tmp_path)
    entry, spec = _entry(table)
    joined = await networks.start(entry, spec, spec)
    assert joined is not None
    [netns] = host.pinned
    await host.adding.wait()  # the ADD in flight when the Start fails (its Create, say)
    await networks.teardown_quietly(entry)
    assert (host.pinned, host.released) == ([], [netns])
    assert not networks.has_network(entry)
