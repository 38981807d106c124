"""Fixtures of the real-daemon sandboxer tests: a tenant of the Python sandboxer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandboxclient import Client
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.ctr import nothing_left
from tests.support.slowdown import slowed


@pytest.fixture
async def tenant(real: RealContainerd) -> AsyncIterator[Client]:
    """A Client of the Python sandboxer in a namespace of its own; its sandboxes go after."""
    namespace = new_namespace()
    async with Client(
        real.daemon.address, namespace=namespace, sandboxer=PLUGIN_NAME, timeout=slowed(30)
    ) as client:
        try:
            yield client
        finally:
            for info in await client.list_sandboxes():
                await (await client.load_sandbox(info.id)).shutdown()
    nothing_left(real, namespace)
