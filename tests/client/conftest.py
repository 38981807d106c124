"""Fixtures of the client tests: a client that must leave no container and no FIFO behind,
and a raw gRPC channel to the backend."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.client import Channel

from sandboxclient import Client
from tests.support.backends import Backend
from tests.support.fifos import fifo_dirs


@pytest.fixture
async def tasks_client(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Client]:
    """The backend's client (no background task may outlive it); the test fails if it leaves
    a container or a FIFO folder of the client's behind. The client makes its FIFO folders
    in one of the test's own, so another process's on the machine never count."""
    private = tmp_path / "fifos"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    yield client
    assert await client.list_containers() == []
    assert fifo_dirs() == set()


@pytest.fixture
async def channel(backend: Backend) -> AsyncIterator[Channel]:
    """A plain grpclib channel to the backend, for calls the client does not make."""
    async with Channel(path=backend.address) as chan:
        yield chan
