"""A member made while its sandbox shuts down: the check its maker runs once its record is
made (the real race is in ``tests/sandboxer/test_shutdown_real.py``)."""

from __future__ import annotations

import pytest

from sandboxclient import SandboxState, SandboxStatus
from sandboxclient._members._ending import SHUTDOWN_INFO, SHUTDOWN_UNDER_WAY, refuse_if_ending
from sandboxclient.errors import FailedPreconditionError, NotFoundError

pytestmark = pytest.mark.anyio


def answer(info: dict[str, str]) -> SandboxStatus:
    return SandboxStatus("sb", SandboxState.READY, 7, None, None, info=info)


async def test_a_sandbox_that_says_nothing_of_a_shutdown_keeps_its_member() -> None:
    deleted: list[str] = []

    async def status() -> SandboxStatus:
        return answer({"deadline": "x"})

    async def delete() -> None:
        deleted.append("m")

    await refuse_if_ending("sb", "m", status, delete)
    assert deleted == []


@pytest.mark.parametrize("shut", [True, False], ids=["shutting-down", "gone"])
async def test_a_sandbox_shutting_down_or_gone_has_the_member_deleted_and_refused(
    shut: bool,
) -> None:
    deleted: list[str] = []

    async def status() -> SandboxStatus:
        if not shut:
            raise NotFoundError('sandbox "sb" does not exist')
        return answer({SHUTDOWN_INFO: SHUTDOWN_UNDER_WAY})

    async def delete() -> None:
        deleted.append("m")
        raise NotFoundError("gone already")  # its Shutdown may have deleted it: fine

    state = "shutting down" if shut else "shut down"
    with pytest.raises(FailedPreconditionError, match=f'sandbox "sb" is {state}.*"m" was deleted'):
        await refuse_if_ending("sb", "m", status, delete)
    assert deleted == ["m"]
