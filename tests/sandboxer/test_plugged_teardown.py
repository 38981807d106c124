"""``plugged_containerd`` ending with a sandbox its sandboxer still holds, as after a test
that failed with one live: the sandbox goes, and its network with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sandboxclient import Client
from sandboxclient.testing import PLUGIN_NAME, plugged_containerd, require_or_skip_reason
from tests.support.backends import new_namespace
from tests.support.network import counts, require_cni

pytestmark = pytest.mark.real


def _pins(state_dir: str) -> list[str]:
    """The mounts below the sandboxer's state directory (its network namespaces' pins)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(state_dir + "/cni/")]


async def _leave_a_networked_sandbox(address: str) -> None:
    async with Client(address, namespace=new_namespace(), sandboxer=PLUGIN_NAME) as client:
        sandbox = await client.new_sandbox("left", network="bridge")
        await sandbox.start()


def test_a_sandbox_left_live_goes_with_its_network() -> None:
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    require_cni()
    before = counts()
    with plugged_containerd(PLUGIN_NAME) as plugged:
        state_dir = plugged.sandboxer.state_dir
        asyncio.run(_leave_a_networked_sandbox(plugged.address))
        assert _pins(state_dir)
        assert counts().leases == before.leases + 1
    after = counts()
    assert _pins(state_dir) == []
    assert not Path(state_dir).exists()
    assert (after.veths, after.leases, after.netns_mounts) == (
        before.veths,
        before.leases,
        before.netns_mounts,
    )
