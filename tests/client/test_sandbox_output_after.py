"""A sandbox's output once its controller's Shutdown has succeeded: let go of (read to its
end, its FIFOs closed) even when a later step of ``Sandbox.shutdown()`` fails."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sandboxclient import PIPE, Client, UnavailableError
from sandboxclient._plumbing._sandbox_io import OUTPUT_LABEL
from sandboxclient._plumbing._sandbox_store import SandboxStore
from sandboxclient.testing import FakeContainerd
from tests.client.test_sandbox_output import fifo_fds
from tests.support.fifos import out_dirs

pytestmark = pytest.mark.anyio


async def test_a_failure_after_the_controllers_shutdown_still_lets_go_of_the_output(
    fake: FakeContainerd, fifo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(self: SandboxStore, sandbox_id: str, **_: object) -> None:
        raise UnavailableError("the store is away")

    async with Client(fake.address) as client:
        sb = await client.new_sandbox(
            "sb-half", command=("sh", "-c", "echo out; echo err >&2"), stdout=PIPE, stderr=PIPE
        )
        folder = os.path.dirname(sb.metadata.labels[OUTPUT_LABEL])
        await sb.start()
        assert (await sb.wait_exit(timeout=30)).returncode == 0
        with monkeypatch.context() as patched:
            patched.setattr(SandboxStore, "delete", away)
            with pytest.raises(UnavailableError, match="the store is away"):
                await sb.shutdown()
        assert fifo_fds(folder) == []  # the sandbox is gone: so are its FIFOs
        assert out_dirs(fifo_home) == []
        assert sb.stdout is not None
        assert sb.stderr is not None
        async with asyncio.timeout(10):  # read to its end: nothing more comes
            assert await sb.stdout.read() == b"out\n"
            assert await sb.stderr.read() == b"err\n"
        assert [s.id for s in await client.list_sandboxes()] == ["sb-half"]
        await sb.shutdown()  # again: the record goes
        assert await client.list_sandboxes() == []
