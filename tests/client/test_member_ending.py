"""A member made while its sandbox shuts down: the check its maker runs once its record is
made, and the record deleted whenever that check fails (the real race is in
``tests/sandboxer/test_shutdown_real.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client, Sandbox, SandboxState, SandboxStatus
from sandboxclient._members._ending import SHUTDOWN_INFO, SHUTDOWN_UNDER_WAY, refuse_if_ending
from sandboxclient.errors import (
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)

pytestmark = pytest.mark.anyio


def answer(info: dict[str, str]) -> SandboxStatus:
    return SandboxStatus("sb", SandboxState.READY, 7, None, None, info=info)


@pytest.mark.parametrize("has_status", [True, False])
async def test_a_sandbox_that_says_nothing_of_a_shutdown_keeps_its_member(
    has_status: bool,
) -> None:
    async def status() -> SandboxStatus:
        if not has_status:
            raise UnimplementedError("unknown method Status")
        return answer({"deadline": "x"})

    await refuse_if_ending("sb", "m", status)


@pytest.mark.parametrize("shut", [True, False], ids=["shutting-down", "gone"])
async def test_a_sandbox_shutting_down_or_gone_refuses_the_member(shut: bool) -> None:
    async def status() -> SandboxStatus:
        if not shut:
            raise NotFoundError('sandbox "sb" does not exist')
        return answer({SHUTDOWN_INFO: SHUTDOWN_UNDER_WAY})

    state = "shutting down" if shut else "shut down"
    with pytest.raises(FailedPreconditionError, match=f'sandbox "sb" is {state}.*"m" was deleted'):
        await refuse_if_ending("sb", "m", status)


@pytest.mark.parametrize("said", ["shutting down", "unreachable"])
async def test_a_member_refused_or_unconfirmed_is_deleted(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, said: str
) -> None:
    sb = await client.new_sandbox("end-sb")
    try:
        real_status = Sandbox.status

        async def status(self: Sandbox, **kwargs: Any) -> SandboxStatus:
            found = await real_status(self, **kwargs)
            if said == "unreachable":
                raise UnavailableError("the sandboxer is not answering")
            return answer({**found.info, SHUTDOWN_INFO: SHUTDOWN_UNDER_WAY})

        monkeypatch.setattr(Sandbox, "status", status)
        error = FailedPreconditionError if said == "shutting down" else UnavailableError
        with pytest.raises(error):
            await sb.new_container("end-m", rootfs=tmp_path, join_namespaces=False)
        assert await client.list_containers() == []
        monkeypatch.undo()
        kept = await sb.new_container("end-m", rootfs=tmp_path, join_namespaces=False)
        assert [c.id for c in await sb.list_containers()] == [kept.id]
    finally:
        await sb.shutdown()
