"""Fixtures of the client tests: a client that must leave no container and no FIFO behind,
and a raw gRPC channel to the backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.client import Channel

from sandboxclient import Client
from tests.support.backends import Backend
from tests.support.fifos import fifo_dirs


@pytest.fixture
async def tasks_client(client: Client, fifo_home: Path) -> AsyncIterator[Client]:
    """The backend's client (no background task may outlive it); the test fails if it leaves
    a container or a FIFO folder of the client's behind (in the test's own ``fifo_home``)."""
    yield client
    assert await client.list_containers() == []
    assert fifo_dirs() == set()


@pytest.fixture
async def channel(backend: Backend) -> AsyncIterator[Channel]:
    """A plain grpclib channel to the backend, for calls the client does not make."""
    async with Channel(path=backend.address) as chan:
        yield chan
