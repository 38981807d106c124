"""Checkpointing a running task, which runc does through CRIU: the host may lack it (Debian's
runc only recommends it), so the test looks for it where the daemon would and asserts what
goes with the answer. The stand-in answers as a host without CRIU does."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient._wire._pb import tasks_pb as tpb
from tests.support.backends import Backend
from tests.support.host import daemon_finds
from tests.support.taskwire import make_root, task_wire

pytestmark = pytest.mark.anyio

NO_CRIU = 'CRIU version check failed: exec: "criu": executable file not found in $PATH'


async def test_checkpoint_of_a_running_task_goes_to_criu(backend: Backend, tmp_path: Path) -> None:
    """runc checkpoints through CRIU, which the host may lack (Debian's runc only recommends
    it). Without it, the refusal names the missing program and ends with the daemon's own
    state folder; the stand-in answers as such a host does. With it, runc gets past that
    lookup, and whatever CRIU makes of the container, the answer is not that it is missing."""
    criu = None if backend.daemon is None else daemon_finds(backend.daemon, "criu")
    async with task_wire(backend.address, backend.namespace, make_root(tmp_path)) as wire:
        await wire.task("c1")
        checkpoint = wire.tasks.checkpoint(tpb.CheckpointTaskRequest(container_id="c1"))
        if criu is None:
            with pytest.raises(GRPCError) as info:
                await checkpoint
            got = info.value.message or ""
            assert info.value.status is Status.UNKNOWN, got
            assert got.startswith(
                f"runc did not terminate successfully: exit status 1: {NO_CRIU} path= "
            ), got
            return
        try:
            await checkpoint
            message = ""
        except GRPCError as exc:
            message = exc.message or ""
        assert NO_CRIU not in message, (criu, message)
