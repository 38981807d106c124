"""``lifetime=`` and ``idle_timeout=``: what is checked before any call, what a sandboxer is
asked to enforce, and the one timer the sandboxer keeps them with.

What needs ``ctr``, a sandboxer restart or exec events (idle) is in
``tests/sandboxer/test_lifetime.py``, against a real containerd.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import (
    DEADLINE_LABEL,
    IDLE_EXIT_STATUS,
    IDLE_TIMEOUT_LABEL,
    LIFETIME_EXIT_STATUS,
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    SandboxInfo,
    SandboxPool,
    SandboxState,
    SandboxStatus,
)
from sandboxclient._facts._clock import utcnow
from sandboxclient._facts._lifetime import deadline_text, lifetime_labels, parse_deadline
from sandboxclient._models import RuntimeInfo
from sandboxclient.sandboxer import ProcessSandboxer
from sandboxclient.sandboxer._timelimits import Timer, time_limits
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend
from tests.support.lifetimes import GONE_WITHIN, exit_of, record_gone

pytestmark = pytest.mark.anyio


BAD = [
    (-1, ValueError),
    (0, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (1e12, ValueError),
    (True, TypeError),
    ("10", TypeError),
    (b"1", TypeError),
]


@pytest.mark.parametrize("field", ["lifetime", "idle_timeout"])
@pytest.mark.parametrize(("value", "error"), BAD)
async def test_a_bad_time_limit_is_refused_before_any_call(
    fake: FakeContainerd, field: str, value: object, error: type[Exception]
) -> None:
    async with Client(fake.address, namespace="lt") as client:
        with pytest.raises(error, match=field):
            await client.new_sandbox("lt-bad", **{field: value})  # type: ignore[arg-type]
        assert fake.call_count("Create") == 0
        assert await client.list_sandboxes() == []


@pytest.mark.parametrize("field", ["lifetime", "idle_timeout"])
@pytest.mark.parametrize(("value", "error"), BAD)
async def test_set_lifetime_refuses_a_bad_value_before_any_call(
    fake: FakeContainerd, value: object, error: type[Exception], field: str
) -> None:
    async with Client(fake.address, namespace="lt") as client:
        sb = await client.new_sandbox("lt-set")
        updates = fake.call_count("Update")
        with pytest.raises(error, match=field):
            await getattr(sb, f"set_{field}")(value)
        assert fake.call_count("Update") == updates
        await sb.shutdown()


async def test_a_limit_given_twice_is_refused(fake: FakeContainerd) -> None:
    async with Client(fake.address, namespace="lt") as client:
        with pytest.raises(ValueError, match="lifetime= and the label"):
            await client.new_sandbox("lt-twice", lifetime=5, labels={DEADLINE_LABEL: "x"})
        with pytest.raises(ValueError, match="idle_timeout= and the label"):
            await client.new_sandbox("lt-twice", idle_timeout=5, labels={IDLE_TIMEOUT_LABEL: "1"})


async def test_a_sandboxer_that_does_not_enforce_limits_is_refused() -> None:
    """A controller of the caller's own keeps no time (the stand-in keeps deadlines only for
    its own): a sandbox asking for one is undone, and set_lifetime writes no label."""
    controller = ProcessSandboxer(refuse_unenforced=False)  # the caller's to close
    async with (
        contextlib.aclosing(controller),
        FakeContainerd(controller=controller) as fake,
        Client(fake.address, namespace="lt") as client,
    ):
        with pytest.raises(FailedPreconditionError, match="does not enforce time limits"):
            await client.new_sandbox("lt-unenforced", lifetime=60)
        assert await client.list_sandboxes() == []
        assert fake.sandbox_ids("lt") == []
        sb = await client.new_sandbox("lt-later")
        with pytest.raises(FailedPreconditionError, match="shows no deadline"):
            await sb.set_lifetime(60)
        with pytest.raises(FailedPreconditionError, match="shows no idle_timeout"):
            await sb.set_idle_timeout(60)
        assert DEADLINE_LABEL not in await sb.labels()
        assert IDLE_TIMEOUT_LABEL not in await sb.labels()
        await sb.shutdown()


def controller_holds(backend: Backend) -> list[str]:
    """The sandboxes the backend's controller holds in the backend's namespace."""
    if backend.fake is not None:
        return backend.fake.sandbox_ids(backend.namespace)
    assert backend.sandboxer_process is not None
    path = Path(backend.sandboxer_process.state_dir, "sandboxes", backend.namespace)
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


async def test_a_sandbox_past_its_lifetime_is_gone_with_its_client_closed(
    backend: Backend,
) -> None:
    async with backend.client() as watcher, watcher.events('topic=="/sandboxes/exit"') as events:
        await events.subscribed()
        async with backend.client() as client:
            sb = await client.new_sandbox("lt-gone", lifetime=1.5)
            await sb.start()
            deadline = (await watcher.get_sandbox("lt-gone")).deadline
            assert deadline is not None
            assert (await sb.status()).deadline == deadline
        ended, heard = await exit_of(events, "lt-gone")
        assert ended.returncode == LIFETIME_EXIT_STATUS
        assert heard >= deadline
        await record_gone(watcher, "lt-gone")
        assert (utcnow() - deadline).total_seconds() < GONE_WITHIN
        assert await watcher.list_containers() == []
    assert controller_holds(backend) == []


async def test_a_sandbox_never_started_is_gone_past_its_lifetime(backend: Backend) -> None:
    """Its client died between Create and Start: nothing ran, nothing exits, it still goes."""
    async with backend.client() as client:
        sb = await client.new_sandbox("lt-unstarted", lifetime=1)
        deadline = sb.metadata.deadline
        assert deadline is not None
    async with backend.client() as watcher:
        # No event tells of a record's deletion: look, within the documented bound.
        left = (deadline - utcnow()).total_seconds()
        await record_gone(watcher, "lt-unstarted", timeout=left + GONE_WITHIN)
        assert await watcher.list_sandboxes() == []
    assert controller_holds(backend) == []


async def test_a_pool_template_carries_the_time_limits(fake: FakeContainerd) -> None:
    async with (
        Client(fake.address, namespace="lt") as client,
        SandboxPool(client, size=1, template={"lifetime": 60}) as pool,
        pool.acquire() as sb,
    ):
        assert sb.metadata.deadline is not None
        assert (await sb.status()).deadline == sb.metadata.deadline


async def test_set_lifetime_extends_and_shortens(backend: Backend) -> None:
    async with (
        backend.client() as client,
        backend.client() as other,
        client.events('topic=="/sandboxes/exit"') as events,
    ):
        await events.subscribed()
        sb = await client.new_sandbox("lt-set", lifetime=30)
        await sb.start()
        first = sb.metadata.deadline
        assert first is not None
        later = await sb.set_lifetime(600)
        assert (later - first).total_seconds() > 500
        assert (await other.get_sandbox("lt-set")).deadline == later
        assert (await sb.status()).deadline == later
        sooner = await sb.set_lifetime(1)
        assert sooner < first
        assert (await other.get_sandbox("lt-set")).deadline == sooner
        ended, heard = await exit_of(events, "lt-set")
        assert ended.returncode == LIFETIME_EXIT_STATUS
        assert sooner <= heard
        await record_gone(client, "lt-set")
        with pytest.raises(NotFoundError):
            await sb.set_lifetime(10)


async def test_set_idle_timeout_lengthens_and_shortens(backend: Backend) -> None:
    async with (
        backend.client() as client,
        backend.client() as other,
        client.events('topic=="/sandboxes/exit"') as events,
    ):
        await events.subscribed()
        sb = await client.new_sandbox("lt-idle-set")  # none at first: it gets one
        await sb.start()
        assert await sb.set_idle_timeout(600) == 600.0
        labels = (await other.get_sandbox("lt-idle-set")).labels
        assert labels[IDLE_TIMEOUT_LABEL] == "600.0"
        assert (await sb.status()).info["idle_timeout"] == "600.0"
        set_at = utcnow()
        assert await sb.set_idle_timeout(1) == 1.0  # idle since its start: ends a second on
        ended, heard = await exit_of(events, "lt-idle-set")
        assert ended.returncode == IDLE_EXIT_STATUS
        assert (heard - set_at).total_seconds() < GONE_WITHIN
        await record_gone(client, "lt-idle-set")
        with pytest.raises(NotFoundError):
            await sb.set_idle_timeout(10)


@pytest.mark.parametrize(
    ("label", "value"),
    [
        (DEADLINE_LABEL, "tomorrow"),
        (DEADLINE_LABEL, "2030-01-01T00:00:00"),
        (IDLE_TIMEOUT_LABEL, "-3"),
    ],
)
async def test_a_sandboxer_refuses_a_label_that_names_no_limit(
    client: Client, backend: Backend, label: str, value: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=label):
        await client.new_sandbox("lt-label", labels={label: value})
    assert await client.list_sandboxes() == []
    sb = await client.new_sandbox("lt-label")
    with pytest.raises(InvalidArgumentError, match=label):
        await sb.controller.update(
            SandboxInfo("lt-label", RuntimeInfo(""), backend.sandboxer, None, None, {label: value}),
            [f"labels.{label}"],
        )
    await sb.shutdown()


def test_the_labels_and_what_reads_them() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    labels = lifetime_labels(2.5, 30, now=now)
    assert labels == {
        DEADLINE_LABEL: "2030-01-02T03:04:08.178901Z",
        IDLE_TIMEOUT_LABEL: "30.0",
    }
    assert parse_deadline(labels[DEADLINE_LABEL]) == now + timedelta(seconds=2.5)
    info = SandboxInfo("x", RuntimeInfo(""), "s", None, None, labels)
    assert info.deadline == now + timedelta(seconds=2.5)
    assert (
        SandboxInfo("x", RuntimeInfo(""), "s", None, None, {DEADLINE_LABEL: "?"}).deadline is None
    )
    status = SandboxStatus(
        "x",
        SandboxState.READY,
        1,
        None,
        None,
        info={"deadline": deadline_text(now), "idle_deadline": "2030-01-02T03:04:05+01:00"},
    )
    assert status.deadline == now
    assert status.idle_deadline == datetime(2030, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert SandboxStatus("x", SandboxState.READY, 1, None, None).deadline is None


def test_the_sandboxer_reads_the_limits_it_was_given() -> None:
    from sandboxclient._wire._pb import SandboxPb

    when = utcnow() + timedelta(seconds=9)
    limits = time_limits(
        SandboxPb(labels={DEADLINE_LABEL: deadline_text(when), IDLE_TIMEOUT_LABEL: "1.5"})
    )
    assert limits.deadline == when
    assert limits.idle_timeout == 1.5
    assert limits.info() == {"deadline": deadline_text(when), "idle_timeout": "1.5"}
    assert not time_limits(SandboxPb()).any


async def test_the_timer_fires_each_key_once_at_its_time() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done = asyncio.Event()

    def fire(key: str) -> None:
        fired.append(key)
        if key == "last":
            done.set()

    timer: Timer[str] = Timer(fire)
    now = loop.time()
    timer.set("b", now + 0.04)
    timer.set("a", now + 0.02)
    timer.set("moved", now + 0.01)
    timer.set("moved", now + 0.05)  # re-armed: fires once, at the later time
    timer.set("dropped", now + 0.03)
    timer.set("dropped", None)
    timer.set("last", now + 0.06)
    assert len(timer) == 4
    await asyncio.wait_for(done.wait(), 5)
    assert fired == ["a", "b", "moved", "last"]
    assert len(timer) == 0
    timer.set("after", loop.time())
    timer.close()
    timer.set("closed", loop.time())
    await asyncio.sleep(0.02)  # a callback due now would have run by then
    assert fired == ["a", "b", "moved", "last"]


async def test_the_timer_keeps_one_callback_pending_whatever_the_number_of_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []
    call_at = loop.call_at

    def counting(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        handle = call_at(when, callback, *args)
        handles.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_at", counting)
    timer: Timer[int] = Timer(lambda key: None)
    for key in range(1000):
        timer.set(key, loop.time() + 60 + key)
    for key in range(0, 1000, 2):
        timer.set(key, loop.time() + 30)
    assert len([h for h in handles if not h.cancelled()]) == 1
    assert len(handles) < 10  # re-armed only when the earliest time changed
    assert timer.due(0) is not None
    timer.close()
    assert timer.due(0) is None
    assert [h for h in handles if not h.cancelled()] == []


async def test_idle_timeout_resets_on_each_exec(backend: Backend) -> None:
    async with (
        backend.client() as client,
        client.events('topic=="/sandboxes/exit"') as events,
    ):
        await events.subscribed()
        idle = 2.0
        sb = await client.new_sandbox("lt-idle", idle_timeout=idle)
        await sb.start()
        status = await sb.status()
        assert status.info["idle_timeout"] == "2.0"
        assert status.deadline is None
        assert status.idle_deadline is not None
        assert status.idle_deadline > utcnow()
        # Execs over about 5 s, each gap half the idle timeout: it lives on. An exec that
        # outlasts the timeout keeps it alive too (idle = no exec running).
        gap = idle / 2  # the point is time passing without an exec, less than the timeout
        await asyncio.sleep(gap)
        assert (await sb.run("true")).returncode == 0
        await asyncio.sleep(gap)
        assert await sb.files.exists("/")  # files are execs too
        await asyncio.sleep(gap)
        assert (await sb.run("sleep", str(idle + 0.5))).returncode == 0
        ran_until = utcnow()
        ended, heard = await exit_of(events, "lt-idle")
        assert ended.returncode == IDLE_EXIT_STATUS
        # idle counted from the last exec's end (as the sandboxer heard it, a hair earlier)
        assert (heard - ran_until).total_seconds() >= idle - 0.5
        assert (heard - ran_until).total_seconds() < idle + GONE_WITHIN
        await record_gone(client, "lt-idle")
    assert controller_holds(backend) == []
