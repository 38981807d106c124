"""A member joins its sandbox's process, never a later one given the same pid: the process's
pid and start time in the member's spec, checked once its record is made and at its
Tasks.Create, before and after (``_members._joined``). A pid's reuse is simulated by the
start time read changing; the stand-in's processes are real host processes, so the check
passes there as it does on a real daemon (tests/sandboxer/test_member*.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import (
    Client,
    FailedPreconditionError,
    Sandbox,
    SandboxState,
    SandboxStatus,
    oci,
)
from sandboxclient._facts._pidstart import running_start_time, start_time
from sandboxclient._members import _joined
from sandboxclient._members._joined import JOIN_PROCESS_ANNOTATION, JoinedProcess, joined_process
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.errors import NotFoundError
from sandboxclient.testing import FakeContainerd

pytestmark = pytest.mark.anyio


def test_a_spec_names_the_joined_process_and_a_malformed_name_is_refused() -> None:
    spec: dict[str, Any] = {}
    assert joined_process(spec, "m") is None
    JoinedProcess(42, 1234).mark(spec)
    assert spec["annotations"] == {JOIN_PROCESS_ANNOTATION: "42:1234"}
    assert joined_process(spec, "m") == JoinedProcess(42, 1234)
    for bad in ("42", "x:1", "0:5", "-1:5", "42:"):
        with pytest.raises(ValueError, match=f'container "m".*{JOIN_PROCESS_ANNOTATION}'):
            joined_process({"annotations": {JOIN_PROCESS_ANNOTATION: bad}}, "m")


def test_the_start_time_tells_a_process_and_none_for_a_gone_one() -> None:
    assert start_time(1) is not None
    assert start_time(2**22 + 1) is None
    assert running_start_time(1) == start_time(1)
    assert running_start_time(2**22 + 1) is None


def test_an_exited_process_not_yet_reaped_is_not_joined() -> None:
    """A zombie keeps its pid and start time, not its namespaces: no member joins it."""
    child = subprocess.Popen(["true"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
        started = start_time(child.pid)
        assert started is not None
        assert running_start_time(child.pid) is None
        assert not JoinedProcess(child.pid, started).held()
        with pytest.raises(FailedPreconditionError, match=rf"no running process {child.pid} "):
            _joined.sandbox_process(child.pid, "sb")
    finally:
        child.wait()


@pytest.fixture
async def sandbox(fake: FakeContainerd) -> AsyncIterator[Sandbox]:
    async with Client(fake.address, namespace="joined") as client:
        spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
        sb = await client.new_sandbox("sb", runtime="io.containerd.runc.v2", spec=spec)
        await sb.start()
        try:
            yield sb
        finally:
            await sb.shutdown()


class Reads:
    """``running_start_time`` as the check reads it: the true value for the first ``true`` reads of
    the sandbox's pid, then another (the pid gone to a later process)."""

    def __init__(self, pid: int, true: int) -> None:
        self.pid, self.true, self.count = pid, true, 0

    def __call__(self, pid: int) -> int | None:
        started = start_time(pid)
        if pid != self.pid or started is None:
            return started
        self.count += 1
        return started if self.count <= self.true else started + 1


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(pid: int, true: int) -> Reads:
        fake = Reads(pid, true)
        monkeypatch.setattr(_joined, "running_start_time", fake)
        return fake

    return install


async def member(sb: Sandbox, tmp_path: Path) -> Any:
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    return await sb.new_container("m", rootfs=tmp_path, spec=spec)


async def test_a_member_names_its_sandbox_s_process_and_its_task_is_made(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sb = sandbox
    pid = (await sb.status()).pid
    made = await member(sb, tmp_path)
    assert made.metadata.spec is not None
    assert joined_process(made.metadata.spec, "m") == JoinedProcess(pid, start_time(pid) or -1)
    task = await made.new_task()
    await task.delete(force=True)
    await made.delete()


@pytest.mark.parametrize("true", [0, 1], ids=["before-create", "after-create"])
async def test_a_task_joined_to_a_reused_pid_is_deleted_with_its_member(
    sandbox: Sandbox, tmp_path: Path, reads: Any, true: int
) -> None:
    sb = sandbox
    made = await member(sb, tmp_path)
    spec = made.metadata.spec
    assert spec is not None
    joined = joined_process(spec, "m")
    assert joined is not None
    got = reads(joined.pid, true)
    gone = rf'sandbox "sb" is not running: its process {joined.pid}'
    with pytest.raises(FailedPreconditionError, match=gone):
        await made.new_task()
    assert got.count == true + 1  # the failed read: before the Create, or after it
    assert await sb.list_containers() == []
    with pytest.raises(NotFoundError):
        await made.task()


async def test_a_member_whose_sandbox_s_process_changed_meanwhile_is_refused(
    sandbox: Sandbox, tmp_path: Path, reads: Any
) -> None:
    sb = sandbox
    pid = (await sb.status()).pid
    reads(pid, 1)  # read as the member is made; another holds the pid at the confirmation
    with pytest.raises(FailedPreconditionError, match=r'sandbox "sb" is not running'):
        await member(sb, tmp_path)
    assert await sb.list_containers() == []


@pytest.mark.parametrize("said", ["another pid", "not ready"])
async def test_a_member_whose_sandbox_s_status_is_not_its_process_is_refused(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, said: str
) -> None:
    """The pid the handle learned at Start is confirmed by the Status asked once the member is
    made: a sandbox not ready (its process exited, the pid perhaps another's) or naming
    another pid refuses it, though the pid names a live process."""
    sb = sandbox
    pid = sb.pid
    assert pid == (await sb.status()).pid
    real_status = Sandbox.status

    async def status(self: Sandbox, **kwargs: Any) -> SandboxStatus:
        found = await real_status(self, **kwargs)
        if said == "not ready":
            return dataclasses.replace(found, state=SandboxState.NOTREADY)
        return dataclasses.replace(found, pid=found.pid + 1)

    monkeypatch.setattr(Sandbox, "status", status)
    why = f"process is now {pid + 1}, not {pid}" if said == "another pid" else "SANDBOX_NOTREADY"
    with pytest.raises(FailedPreconditionError, match=why):
        await member(sb, tmp_path)
    assert await sb.list_containers() == []


@pytest.mark.parametrize("join", [False, True], ids=["unjoined", "joined"])
async def test_a_spec_carrying_the_join_annotation_is_refused_by_both_new_containers(
    fake: FakeContainerd, sandbox: Sandbox, tmp_path: Path, join: bool
) -> None:
    """Only the client writes the annotation: a forged one would get the container deleted
    at its ``new_task`` (or name a process of the caller's choosing)."""
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    spec["annotations"] = {JOIN_PROCESS_ANNOTATION: f"{os.getpid()}:{start_time(os.getpid())}"}
    reserved = f"annotation {JOIN_PROCESS_ANNOTATION} is reserved"
    with pytest.raises(ValueError, match=reserved):
        await sandbox.new_container("m", rootfs=tmp_path, spec=spec, join_namespaces=join)
    async with Client(fake.address, namespace="joined") as client:
        with pytest.raises(ValueError, match=reserved):
            await client.new_container("c", rootfs=tmp_path, spec=spec)
    assert fake.container_ids("joined") == ["sb"]


def keep_first_status(fake: FakeContainerd, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in's controller answers every Status as it answered the first: stale once
    the sandbox's process has exited."""
    answers: list[Any] = []
    real_status = fake._controller.status

    async def status(message: sandbox_pb.ControllerStatusRequest) -> Any:
        if not answers:
            answers.append(await real_status(message))
        return answers[0]

    monkeypatch.setattr(fake._controller, "status", status)


def reuse_pid(pid: int, started: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on the check reads ``pid`` as naming a process started after ``started``;
    the pids it reads, in order."""
    reads: list[int] = []

    def later(read: int) -> int | None:
        reads.append(read)
        return started + 100 if read == pid else running_start_time(read)

    monkeypatch.setattr(_joined, "running_start_time", later)
    return reads


async def test_a_stale_ready_status_after_the_process_exited_is_not_believed(
    fake: FakeContainerd,
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stand-in's controller still says ready, with the old pid, after the sandbox's
    process exited and the pid went to a later process: the start time the handle noted at
    Start tells them apart, and the member is refused before anything is made."""
    sb = sandbox
    pid = sb.pid
    assert pid is not None
    keep_first_status(fake, monkeypatch)
    first = await sb.status()
    assert (first.ready, first.pid) == (True, pid)
    started = start_time(pid)
    assert started is not None
    await sb.stop(grace=30)
    assert (await sb.wait_exit(timeout=30)).error is None
    assert await sb.status() == first  # the stale word
    reads = reuse_pid(pid, started, monkeypatch)
    with pytest.raises(FailedPreconditionError, match=rf"its process {pid} has exited, whatever"):
        await member(sb, tmp_path)
    assert reads == [pid]  # refused at the first read, before anything was made
    assert fake.container_ids("joined") == ["sb"]


async def test_a_loaded_handle_notes_its_process_and_a_later_stale_status_is_not_believed(
    fake: FakeContainerd,
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handle from ``load_sandbox`` notes the start time of the pid its ready Status named,
    as ``start()`` does: once that process exited and its pid went to a later process, a
    Status still saying ready with the pid does not get a member joined to the later one."""
    pid = sandbox.pid
    assert pid is not None
    keep_first_status(fake, monkeypatch)
    started = start_time(pid)
    assert started is not None
    async with Client(fake.address, namespace="joined") as client:
        loaded = await client.load_sandbox("sb")
        assert loaded.pid == pid
        await sandbox.stop(grace=30)
        assert (await sandbox.wait_exit(timeout=30)).error is None
        assert (await loaded.status()).ready  # the stale word
        reads = reuse_pid(pid, started, monkeypatch)
        with pytest.raises(FailedPreconditionError, match=rf"its process {pid} has exited"):
            await member(loaded, tmp_path)
        assert reads == [pid]  # refused at the first read, before anything was made
    assert fake.container_ids("joined") == ["sb"]


async def test_a_handle_loaded_while_not_ready_notes_no_process(
    fake: FakeContainerd, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A stopped sandbox's pid is not noted at load: no member can join it."""
    await sandbox.stop(grace=30)
    assert (await sandbox.wait_exit(timeout=30)).error is None
    async with Client(fake.address, namespace="joined") as client:
        loaded = await client.load_sandbox("sb")
        assert not (await loaded.status()).ready
        with pytest.raises(FailedPreconditionError, match='sandbox "sb"'):
            await member(loaded, tmp_path)
    assert fake.container_ids("joined") == ["sb"]
