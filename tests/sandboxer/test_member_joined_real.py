"""A member names its sandbox's process by pid and start time (``_members._joined``), under a
real containerd: the name is the sandbox's process's, and a member whose sandbox's process
has exited by its Tasks.Create is deleted and refused before runc opens any path by that pid
(a reused pid is simulated on the stand-in, tests/client/test_member_joined.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxclient import Client, FailedPreconditionError, NotFoundError, oci
from sandboxclient._facts._pidstart import start_time
from sandboxclient._members._joined import JoinedProcess, joined_process

pytestmark = [pytest.mark.anyio, pytest.mark.real]


async def test_a_member_of_a_stopped_sandbox_gets_no_task_and_is_deleted(
    tenant: Client, rootfs: Path
) -> None:
    async with tenant.sandbox("mj1") as sb:
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
        member = await sb.new_container("mj1-m", rootfs=rootfs, spec=spec)
        assert member.metadata.spec is not None
        pid = sb.pid
        assert pid is not None
        named = joined_process(member.metadata.spec, member.id)
        assert named == JoinedProcess(pid, start_time(pid) or -1)
        await sb.stop(grace=1)
        with pytest.raises(FailedPreconditionError, match=r'sandbox "mj1" is not running'):
            await member.new_task()
        assert await sb.list_containers() == []
        with pytest.raises(NotFoundError):
            await member.task()
