"""The sandboxer's time-limit clocks when an ending fails part way: the retry ends only a
sandbox whose limit is still due, never a new sandbox of the same id, nor one whose lifetime
was moved meanwhile."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sandboxclient import IDLE_EXIT_STATUS, LIFETIME_EXIT_STATUS, Client
from sandboxclient._facts._clock import utcnow
from sandboxclient.sandboxer import _clocks
from sandboxclient.sandboxer._clocks import Key, SandboxClocks
from sandboxclient.sandboxer._timelimits import TimeLimits

pytestmark = pytest.mark.anyio

KEY: Key = ("ns", "job")


def _no_client(namespace: str) -> Client:
    raise AssertionError("no idle limit here: containerd is never asked")


@pytest.mark.parametrize("meanwhile", ["replaced, no limits", "replaced, later", "extended"])
async def test_a_failed_ending_is_retried_only_while_its_limit_is_due(
    monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    monkeypatch.setattr(_clocks, "RETRY_AFTER", 0.05)
    ended: list[tuple[Key, int]] = []
    tried = asyncio.Event()
    later = TimeLimits(deadline=utcnow() + timedelta(seconds=60))

    async def end(key: Key, code: int, reason: str) -> None:
        ended.append((key, code))
        if meanwhile.startswith("replaced"):  # a client shut it down and made a new one
            clocks.forget(key)
            clocks.arm(key, TimeLimits() if meanwhile.endswith("no limits") else later)
        else:  # a client moved its deadline while the ending was under way
            clocks.arm(key, later)
        tried.set()
        raise OSError("containerd away")

    clocks = SandboxClocks(_no_client, end)
    try:
        clocks.arm(KEY, TimeLimits(deadline=utcnow() - timedelta(seconds=1)))  # due at once
        await asyncio.wait_for(tried.wait(), 5)
        await asyncio.sleep(_clocks.RETRY_AFTER * 4)  # a retry would have come by then
        assert ended == [(KEY, LIFETIME_EXIT_STATUS)]
        expected = {} if meanwhile.endswith("no limits") else later.info()
        assert {k: v for k, v in clocks.status_info(KEY).items() if k != "idle_deadline"} == (
            expected
        )
    finally:
        await clocks.aclose()


async def test_a_failed_ending_still_due_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_clocks, "RETRY_AFTER", 0.05)
    ended: list[int] = []
    done = asyncio.Event()

    async def end(key: Key, code: int, reason: str) -> None:
        ended.append(code)
        if len(ended) == 1:
            raise OSError("containerd away")
        done.set()

    clocks = SandboxClocks(_no_client, end)
    try:
        clocks.arm(KEY, TimeLimits(deadline=utcnow() - timedelta(seconds=1)))
        await asyncio.wait_for(done.wait(), 5)
        assert ended == [LIFETIME_EXIT_STATUS, LIFETIME_EXIT_STATUS]
        await asyncio.sleep(0)  # the ending's own bookkeeping, after end() returned
        assert clocks.status_info(KEY) == {}  # ended: nothing kept
    finally:
        await clocks.aclose()


async def test_cancel_cuts_an_ending_under_way_short() -> None:
    """What ``detach()`` relies on: once the clocks are cancelled, an ending under way does
    nothing more (whoever takes the sandboxes over finishes it)."""
    begun, cut = asyncio.Event(), asyncio.Event()

    async def end(key: Key, code: int, reason: str) -> None:
        begun.set()
        try:
            await asyncio.Event().wait()  # a call to containerd, in flight
        except asyncio.CancelledError:
            cut.set()
            raise

    clocks = SandboxClocks(_no_client, end)
    try:
        clocks.arm(KEY, TimeLimits(deadline=utcnow() - timedelta(seconds=1)))
        await asyncio.wait_for(begun.wait(), 5)
        clocks.cancel()
        await asyncio.wait_for(cut.wait(), 5)
    finally:
        await clocks.aclose()


async def test_an_ending_decided_before_is_carried_out_whatever_the_limits_say() -> None:
    """A sandboxer started again over a record that says its ending was decided (and its
    task perhaps killed) finishes it with that status, even with no limit due or left."""
    ended: list[tuple[int, str]] = []
    done = asyncio.Event()

    async def end(key: Key, code: int, reason: str) -> None:
        ended.append((code, reason))
        done.set()

    clocks = SandboxClocks(_no_client, end)
    try:
        later = TimeLimits(deadline=utcnow() + timedelta(seconds=60))
        clocks.arm(KEY, later, (IDLE_EXIT_STATUS, "it was idle"))
        clocks.arm(("ns", "other"), TimeLimits(), (LIFETIME_EXIT_STATUS, "its lifetime ended"))
        await asyncio.wait_for(done.wait(), 5)
        while len(ended) < 2:
            done.clear()
            await asyncio.wait_for(done.wait(), 5)
        assert sorted(ended) == [
            (LIFETIME_EXIT_STATUS, "its lifetime ended"),
            (IDLE_EXIT_STATUS, "it was idle"),
        ]
    finally:
        await clocks.aclose()
