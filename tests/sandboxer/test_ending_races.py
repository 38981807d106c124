"""A sandbox's ending by a time limit, cut short: by ``detach()`` while it is under way, or
by a crash (what the next sandboxer reads of it).

The isolating sandboxer runs over the stand-in containerd here (its tasks are host
processes), which holds every call while a test says so: the ending is caught with its
SIGKILL in flight, the sandboxer lets go of its sandboxes there, and another takes the state
directory over. What is defined: ``detach()`` returns at once and cuts the ending short
(nothing more is done by the sandboxer that let go), the ending's cause is on record before
its SIGKILL, and the next sandboxer finishes it, the exit saying why (124).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import IDLE_EXIT_STATUS, LIFETIME_EXIT_STATUS
from sandboxclient._facts._clock import utcnow
from sandboxclient._facts._lifetime import DEADLINE_LABEL, deadline_text
from sandboxclient._facts._wirenames import NAMESPACE_HEADER, RUNTIME_SPEC_TYPE_URL
from sandboxclient._serve._server import request_scope
from sandboxclient._wire._pb import AnyPb, SandboxPb, SandboxRuntimePb, sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer, _podwatch
from sandboxclient.sandboxer._pods import PodRuntime
from sandboxclient.sandboxer._podstate import PodEntry, PodRecord, PodTable
from sandboxclient.testing import FakeContainerd
from tests.support.constants import NS, RUNTIME
from tests.support.helpers import until, wait_pid_gone

pytestmark = pytest.mark.anyio

SANDBOX = "end1"


def record_of(state: str) -> dict[str, Any]:
    """The sandbox's record as the state directory holds it."""
    path = Path(state, "sandboxes", NS, SANDBOX, "sandbox.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def rewrite_record(state: str, data: dict[str, Any]) -> None:
    """Replace the sandbox's record in the state directory (as a sandboxer before left it)."""
    Path(state, "sandboxes", NS, SANDBOX, "sandbox.json").write_text(json.dumps(data))


async def let_through(fake: FakeContainerd, method: str) -> None:
    """Once the next call of ``method`` is held, let the calls held go on (later ones are
    held again)."""
    await fake.wait_for_call(method, fake.call_count(method) + 1)
    fake.stall = False
    fake.stall = True


async def test_detach_cuts_an_ending_short_and_the_next_sandboxer_finishes_it(
    workdir: str,
) -> None:
    state = os.path.join(workdir, "state")
    spec = {"root": {"path": workdir}, "process": {"args": ["sleep", "600"]}}
    create = sandbox_pb.ControllerCreateRequest(
        sandbox_id=SANDBOX,
        sandbox=SandboxPb(
            sandbox_id=SANDBOX,
            runtime=SandboxRuntimePb(name=RUNTIME),
            spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(spec).encode()),
        ),
    )
    past = deadline_text(utcnow() - timedelta(seconds=1))
    moved = sandbox_pb.ControllerUpdateRequest(
        sandbox_id=SANDBOX,
        sandbox=SandboxPb(sandbox_id=SANDBOX, labels={DEADLINE_LABEL: past}),
        fields=[f"labels.{DEADLINE_LABEL}"],
    )
    async with FakeContainerd() as fake:
        with request_scope({NAMESPACE_HEADER: NS}):
            first = ContainerSandboxer(state, containerd=fake.address, timeout=20)
            try:
                await first.create(create)
                pid = (await first.start(sandbox_pb.ControllerStartRequest(sandbox_id=SANDBOX))).pid
                fake.stall = True  # from here every call to containerd is held
                await first.update(moved)  # past its deadline: the ending begins at once
                for method in ("Store/Get", "Containers/Get", "Tasks/Get"):
                    await let_through(fake, method)
                kills = fake.call_count("Tasks/Kill")
                await fake.wait_for_call("Tasks/Kill", kills + 1)  # its SIGKILL, in flight
                first.detach()  # returns at once: the ending is cut short
            finally:
                fake.stall = False
                await asyncio.wait_for(first.aclose(), 10)
            assert fake.call_count("Tasks/Kill") == kills + 1  # nothing more was done
            assert fake.call_count("Delete") == 0
            record = record_of(state)
            assert record["exit_status"] is None  # the one that let go records no exit
            assert record["ended_by"][0] == LIFETIME_EXIT_STATUS  # but why, before the kill

            second = ContainerSandboxer(state, containerd=fake.address, timeout=20)
            try:
                # Asked before its ending runs (the timer fires after this call's first step).
                waited = asyncio.ensure_future(
                    second.wait(sandbox_pb.ControllerWaitRequest(sandbox_id=SANDBOX))
                )
                answer = await asyncio.wait_for(waited, 10)
                assert answer.exit_status == LIFETIME_EXIT_STATUS
                await wait_pid_gone(pid)
                await until(lambda: second.sandbox_ids(NS) == [])  # then shut down
                assert fake.container_ids(NS) == []
                assert fake.task_ids(NS) == []
            finally:
                await second.aclose()


def test_an_ending_on_record_survives_a_restart_and_decides_the_exit(tmp_path: Path) -> None:
    """What a sandboxer started again reads: the idle ending its predecessor wrote down
    makes the task's own status (137, SIGKILL) a 125; a record written before endings were
    kept reads as none."""
    state = str(tmp_path / "state")
    table = PodTable(state)
    now = utcnow()
    entry = PodEntry(PodRecord(NS, SANDBOX, SandboxPb(sandbox_id=SANDBOX), now, started_at=now))
    table.add(entry)
    entry.record.ended_by = (IDLE_EXIT_STATUS, "it was idle for its idle timeout (1.0 s)")
    table.save(entry)
    table.let_go()
    again = PodTable(state)
    try:
        (found,) = again.entries()
        assert found.record.ended_by == entry.record.ended_by
        again.exited(found, 137, utcnow())
        assert found.record.exit_status == IDLE_EXIT_STATUS
        assert found.record.exit_reason == "it was idle for its idle timeout (1.0 s)"
    finally:
        again.let_go()
    older = entry.record.to_json()
    del older["ended_by"]
    assert PodRecord.from_json(older).ended_by is None


async def test_a_failed_kill_keeps_an_ending_decided_by_the_sandboxer_before(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next sandboxer's kill of an ending on record fails (containerd away, say): the
    record still says why, for the SIGKILL its predecessor sent may yet land."""
    state = os.path.join(workdir, "state")
    spec = {"root": {"path": workdir}, "process": {"args": ["sleep", "600"]}}
    create = sandbox_pb.ControllerCreateRequest(
        sandbox_id=SANDBOX,
        sandbox=SandboxPb(
            sandbox_id=SANDBOX,
            runtime=SandboxRuntimePb(name=RUNTIME),
            spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(spec).encode()),
        ),
    )
    async with FakeContainerd() as fake:
        with request_scope({NAMESPACE_HEADER: NS}):
            first = ContainerSandboxer(state, containerd=fake.address, timeout=20)
            try:
                await first.create(create)
                await first.start(sandbox_pb.ControllerStartRequest(sandbox_id=SANDBOX))
                first.detach()
            finally:
                await first.aclose()
            record = record_of(state)
            record["ended_by"] = [LIFETIME_EXIT_STATUS, "decided before"]
            rewrite_record(state, record)
            failed = asyncio.Event()
            real_stop = PodRuntime.stop

            async def stop_failing_once(self: PodRuntime, namespace: str, sandbox_id: str) -> None:
                if not failed.is_set():
                    failed.set()
                    raise RuntimeError("containerd away")
                await real_stop(self, namespace, sandbox_id)

            monkeypatch.setattr(PodRuntime, "stop", stop_failing_once)
            second = ContainerSandboxer(state, containerd=fake.address, timeout=20)
            try:
                await asyncio.wait_for(failed.wait(), 10)
                assert record_of(state)["ended_by"] == [LIFETIME_EXIT_STATUS, "decided before"]
            finally:
                await second.aclose()


async def test_an_ending_whose_kill_was_sent_but_not_yet_seen_still_decides_the_exit(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ending's SIGKILL is sent but the exit is not heard within the wait for it (a
    loaded host): the ending fails and is tried again, but the exit, heard later, is the
    limit's (124), not the signal's (137)."""
    monkeypatch.setattr(_podwatch, "_KILL_GRACE", 0.0)
    state = os.path.join(workdir, "state")
    spec = {"root": {"path": workdir}, "process": {"args": ["sleep", "600"]}}
    past = deadline_text(utcnow() - timedelta(seconds=1))
    create = sandbox_pb.ControllerCreateRequest(
        sandbox_id=SANDBOX,
        sandbox=SandboxPb(
            sandbox_id=SANDBOX,
            runtime=SandboxRuntimePb(name=RUNTIME),
            spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(spec).encode()),
        ),
    )
    moved = sandbox_pb.ControllerUpdateRequest(
        sandbox_id=SANDBOX,
        sandbox=SandboxPb(sandbox_id=SANDBOX, labels={DEADLINE_LABEL: past}),
        fields=[f"labels.{DEADLINE_LABEL}"],
    )
    async with FakeContainerd() as fake:
        with request_scope({NAMESPACE_HEADER: NS}):
            sandboxer = ContainerSandboxer(state, containerd=fake.address, timeout=20)
            try:
                await sandboxer.create(create)
                await sandboxer.start(sandbox_pb.ControllerStartRequest(sandbox_id=SANDBOX))
                await sandboxer.update(moved)  # past its deadline: the ending begins at once
                answer = await asyncio.wait_for(
                    sandboxer.wait(sandbox_pb.ControllerWaitRequest(sandbox_id=SANDBOX)), 10
                )
                assert answer.exit_status == LIFETIME_EXIT_STATUS
            finally:
                await sandboxer.aclose()
