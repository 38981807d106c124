"""An exit's record is written just after its waiters are woken, off the way of the Wait's
answer: a later save, the table's release, or the loop's next turn writes it. Not written
before the answer: a sandboxer that dies in between, its task gone from containerd too,
comes back not knowing the code the client was told (UNKNOWN)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandboxclient._wire._pb import SandboxPb
from sandboxclient.sandboxer._podstate import PodEntry, PodRecord, PodTable
from sandboxclient.sandboxer._state import RECORD_FILE

pytestmark = pytest.mark.anyio


def _records(state: Path, sandbox_id: str) -> list[Path]:
    return list(state.rglob(f"{sandbox_id}/{RECORD_FILE}"))


def _written(state: Path, sandbox_id: str) -> dict[str, object]:
    found = _records(state, sandbox_id)
    assert len(found) == 1
    data: dict[str, object] = json.loads(found[0].read_text())
    return data


def _started(table: PodTable, sandbox_id: str) -> PodEntry:
    record = PodRecord("ns", sandbox_id, SandboxPb(sandbox_id=sandbox_id), datetime.now(UTC))
    record.started_at, record.pid = datetime.now(UTC), 4321
    entry = PodEntry(record)
    table.add(entry)
    return entry


async def test_the_waiters_are_told_before_the_exit_is_written(tmp_path: Path) -> None:
    table = PodTable(str(tmp_path))
    try:
        entry = _started(table, "sb1")
        order: list[str] = []

        async def waiter() -> None:
            await entry.settled.wait()
            order.append(f"told, written: {_written(tmp_path, 'sb1')['exit_status']}")

        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0)  # the waiter waits
        table.exited(entry, 3, datetime.now(UTC))
        assert entry.settled.is_set()
        assert _written(tmp_path, "sb1")["exit_status"] is None  # not yet
        await waiting
        await asyncio.sleep(0)  # the loop's next turn writes it
        assert order == ["told, written: None"]
        assert _written(tmp_path, "sb1")["exit_status"] == 3
    finally:
        table.let_go()


async def test_an_exit_not_yet_written_is_written_at_release(tmp_path: Path) -> None:
    table = PodTable(str(tmp_path))
    entry = _started(table, "sb2")
    table.exited(entry, 7, datetime.now(UTC))
    table.let_go()  # before the loop's turn
    assert _written(tmp_path, "sb2")["exit_status"] == 7
    await asyncio.sleep(0)  # the pending write finds the table released: nothing more
    assert _written(tmp_path, "sb2")["exit_status"] == 7
    restarted = PodTable(str(tmp_path))  # as a restarted sandboxer reads it
    try:
        again = restarted.get("ns", "sb2")
        assert again is not None
        assert again.record.exit_status == 7
    finally:
        restarted.let_go()


async def test_a_removed_sandbox_is_not_written_back(tmp_path: Path) -> None:
    table = PodTable(str(tmp_path))
    try:
        entry = _started(table, "sb3")
        table.exited(entry, 0, datetime.now(UTC))
        table.remove(entry)  # a Shutdown before the loop's turn
        await asyncio.sleep(0)
        assert _records(tmp_path, "sb3") == []
    finally:
        table.let_go()
