"""How the sandboxer's Shutdown reports members it could not delete."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sandboxclient.errors import UnavailableError
from sandboxclient.sandboxer._pods import _all_of

pytestmark = pytest.mark.anyio


async def test_every_member_is_tried_and_every_failure_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []

    async def deleted(name: str, fails: bool) -> None:
        await asyncio.sleep(0)
        done.append(name)
        if fails:
            raise UnavailableError(f"{name} not deleted")

    works = [deleted("m1", True), deleted("m2", False), deleted("m3", True)]
    with (
        caplog.at_level(logging.WARNING, "sandboxclient.sandboxer"),
        pytest.raises(UnavailableError, match="m1 not deleted"),
    ):
        await _all_of(works)
    assert sorted(done) == ["m1", "m2", "m3"]
    assert "m3 not deleted" in caplog.text
