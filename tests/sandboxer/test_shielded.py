"""The isolating sandboxer's clean-up work (removing a sandbox, undoing a Start, closing)
runs to its end however often the caller is cancelled: a second cancel, as a Start cut by
its client and then by the controller's close, must not cut it either."""

from __future__ import annotations

import asyncio
import gc

import pytest

from sandboxclient.sandboxer._pods import shielded

pytestmark = pytest.mark.anyio


async def test_clean_up_work_outlives_two_cancels_of_its_caller() -> None:
    release, began, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def clean_up() -> None:
        began.set()
        await release.wait()
        finished.set()

    caller = asyncio.ensure_future(shielded(clean_up()))
    await began.wait()
    for _ in range(2):
        caller.cancel()
        await asyncio.sleep(0)  # the cancel lands in the caller's wait
        assert not caller.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished.is_set()


async def test_a_failure_after_the_cancel_is_dropped_not_logged_as_never_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release, began = asyncio.Event(), asyncio.Event()

    async def clean_up() -> None:
        began.set()
        await release.wait()
        raise OSError("gone meanwhile")

    caller = asyncio.ensure_future(shielded(clean_up()))
    await began.wait()
    caller.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gc.collect()
    assert "never retrieved" not in caplog.text
