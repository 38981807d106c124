"""The Tasks service's refusals, row by row, on the stand-in and on a real containerd.

Each row's expected code and message are containerd 2.1.9's (with the runc shim), as the
real daemon answered them: every row runs on both backends and must match word for word,
``{ns}`` standing for the test's namespace. Checkpointing a running task depends on whether
the host has CRIU: ``test_checkpoint.py`` looks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient._wire._pb import AnyPb
from sandboxclient._wire._pb import tasks_pb as tpb
from tests.support.backends import Backend
from tests.support.taskwire import (
    NULL,
    PROCESS_TYPE_URL,
    TaskWire,
    make_root,
    process_spec,
    task_wire,
)

pytestmark = pytest.mark.anyio

Call = Callable[[TaskWire], Awaitable[object]]
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
NOT_IN_PATH = 'exec: "nosuchprog": executable file not found in $PATH'
CREATE = "failed to create shim task: "
RUNC_CREATE = CREATE + "OCI runtime create failed: runc create failed: "
EXEC = "OCI runtime exec failed: exec failed: "
START = "unable to start container process: "
NO_FILE = "no such file or directory"
PIPE_COPY = "failed to start io pipe copy: unable to copy pipes: containerd-shim: opening file "
EMPTY_PATH = PIPE_COPY + f'"" failed: open : {NO_FILE}'
ID_RULE = "must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


@dataclass(frozen=True)
class Row:
    """A request the daemon refuses, and its exact answer."""

    name: str
    call: Call
    status: Status
    message: str


def _then(*steps: Call) -> Call:
    async def call(w: TaskWire) -> object:
        result: object = None
        for step in steps:
            result = await step(w)
        return result

    return call


def _create(cid: str = "c1", **kw: object) -> Call:
    async def call(w: TaskWire) -> object:
        kw.setdefault("stdout", NULL)
        kw.setdefault("stderr", NULL)
        return await w.tasks.create(tpb.CreateTaskRequest(container_id=cid, **kw))  # type: ignore[arg-type]

    return call


def _container(cid: str = "c1", *args: str, **kw: object) -> Call:
    async def call(w: TaskWire) -> object:
        await w.container(cid, *args, **kw)  # type: ignore[arg-type]
        return None

    return call


def _task(cid: str = "c1", *args: str, start: bool = True) -> Call:
    async def call(w: TaskWire) -> object:
        return await w.task(cid, *args, start=start)

    return call


def _exited(cid: str = "c1") -> Call:
    async def call(w: TaskWire) -> object:
        await w.exited(cid)
        return None

    return call


def _exec(eid: str = "e1", *args: str, start: bool = True, **kw: object) -> Call:
    async def call(w: TaskWire) -> object:
        await w.exec("c1", eid, *args, start=start, **kw)
        return None

    return call


def _exec_spec(eid: str, spec: AnyPb) -> Call:
    async def call(w: TaskWire) -> object:
        request = tpb.ExecProcessRequest(
            container_id="c1", exec_id=eid, stdout=NULL, stderr=NULL, spec=spec
        )
        return await w.tasks.exec(request)

    return call


def _start(eid: str = "") -> Call:
    return lambda w: w.tasks.start(tpb.StartRequest(container_id="c1", exec_id=eid))


def _kill(eid: str = "", signal: int = 15, all: bool = False) -> Call:
    return lambda w: w.tasks.kill(
        tpb.KillRequest(container_id="c1", exec_id=eid, signal=signal, all=all)
    )


def _pause(w: TaskWire) -> Awaitable[object]:
    return w.tasks.pause(tpb.PauseTaskRequest(container_id="c1"))


def _resume(w: TaskWire) -> Awaitable[object]:
    return w.tasks.resume(tpb.ResumeTaskRequest(container_id="c1"))


def _delete(cid: str = "c1") -> Call:
    return lambda w: w.tasks.delete(tpb.DeleteTaskRequest(container_id=cid))


def _delete_process(eid: str, cid: str = "c1") -> Call:
    return lambda w: w.tasks.delete_process(tpb.DeleteProcessRequest(container_id=cid, exec_id=eid))


def _update(w: TaskWire) -> Awaitable[object]:
    resources = AnyPb(type_url=RESOURCES_TYPE_URL, value=b"{}")
    return w.tasks.update(tpb.UpdateTaskRequest(container_id="c1", resources=resources))


def _sandbox_record(w: TaskWire) -> Awaitable[object]:
    return w.sandbox_record("sb1", "pysandbox")


_NO_TASK: list[tuple[str, Call]] = [
    ("kill", _kill()),
    ("wait", lambda w: w.tasks.wait(tpb.WaitRequest(container_id="c1"))),
    ("start", _start()),
    ("get", lambda w: w.tasks.get(tpb.GetRequest(container_id="c1"))),
    ("pids", lambda w: w.tasks.list_pids(tpb.ListPidsRequest(container_id="c1"))),
    ("exec", _exec()),
    ("delete", _delete()),
    ("deleteprocess", _delete_process("x")),
    ("pause", _pause),
    ("closeio", lambda w: w.tasks.close_io(tpb.CloseIoRequest(container_id="c1", stdin=True))),
    ("checkpoint", lambda w: w.tasks.checkpoint(tpb.CheckpointTaskRequest(container_id="c1"))),
]

ROWS: list[Row] = [
    # Unknown containers and tasks.
    Row(
        "create-unknown",
        _create("nope"),
        Status.NOT_FOUND,
        'container "nope" in namespace "{ns}": not found',
    ),
    Row(
        "delete-unknown",
        _delete("nope"),
        Status.NOT_FOUND,
        'container "nope" in namespace "{ns}": not found',
    ),
    Row(
        "deleteprocess-unknown-container",
        _delete_process("x", "nope"),
        Status.NOT_FOUND,
        'container "nope" in namespace "{ns}": not found',
    ),
    *(
        Row(f"{name}-no-task", _then(_container(), call), Status.NOT_FOUND, "task c1 not found")
        for name, call in _NO_TASK
    ),
    Row(
        "get-unknown-exec",
        _then(_task(), lambda w: w.tasks.get(tpb.GetRequest(container_id="c1", exec_id="zz"))),
        Status.NOT_FOUND,
        "process does not exist zz: not found",
    ),
    Row(
        "deleteprocess-unknown",
        _then(_task(), _delete_process("e9")),
        Status.NOT_FOUND,
        "process does not exist e9: not found",
    ),
    Row(
        "kill-unknown-exec",
        _then(_task(), _kill("zz")),
        Status.NOT_FOUND,
        "process does not exist zz: not found",
    ),
    # Create.
    Row(
        "create-twice",
        _then(_task(start=False), _create()),
        Status.ALREADY_EXISTS,
        "task c1: already exists",
    ),
    Row(
        "create-twice-stopped",
        _then(_exited(), _create()),
        Status.ALREADY_EXISTS,
        "task c1: already exists",
    ),
    Row(
        "create-no-program",
        _then(_container("c1", "nosuchprog"), _create()),
        Status.UNKNOWN,
        RUNC_CREATE + START + NOT_IN_PATH,
    ),
    Row(
        "create-no-args",
        _then(_container("c1", no_args=True), _create()),
        Status.UNKNOWN,
        RUNC_CREATE + "args must not be empty",
    ),
    Row(
        "create-empty-stdout",
        _then(_container(), _create(stdout="")),
        Status.UNKNOWN,
        CREATE + EMPTY_PATH,
    ),
    Row(
        "create-empty-stderr",
        _then(_container(), _create(stderr="")),
        Status.UNKNOWN,
        CREATE + EMPTY_PATH,
    ),
    Row(
        "create-missing-stdout",
        _then(_container(), _create(stdout="/nonexist/x")),
        Status.UNKNOWN,
        CREATE + PIPE_COPY + f'"/nonexist/x" failed: open /nonexist/x: {NO_FILE}',
    ),
    Row(
        "create-missing-stdin",
        _then(_container(), _create(stdin="/nonexist/x")),
        Status.UNKNOWN,
        CREATE + f"failed to open stdin fifo /nonexist/x: stat /nonexist/x: {NO_FILE}",
    ),
    Row(
        "create-tty-no-stdout",
        _then(_container("c1", tty=True), _create(terminal=True, stdout="", stderr="")),
        Status.UNKNOWN,
        CREATE + f"failed to start console copy: stat : {NO_FILE}",
    ),
    Row(
        "create-member-without-sandbox-task",
        _then(_sandbox_record, _container("m1", sandbox="sb1"), _create("m1")),
        Status.NOT_FOUND,
        "failed to start shim: can't find shim for sandbox sb1: not found",
    ),
    # Start.
    Row("start-twice", _then(_task(), _start()), Status.UNKNOWN, "cannot start a running process"),
    Row(
        "start-stopped",
        _then(_exited(), _start()),
        Status.UNKNOWN,
        "cannot start a stopped process",
    ),
    Row(
        "start-exec-twice",
        _then(_task(), _exec(), _start("e1")),
        Status.UNKNOWN,
        "cannot start a running process",
    ),
    Row(
        "start-exec-init-stopped",
        _then(
            _task(),
            _exec(start=False),
            _kill(signal=9),
            lambda w: w.tasks.wait(tpb.WaitRequest(container_id="c1")),
            _start("e1"),
        ),
        Status.FAILED_PRECONDITION,
        "container c1 init process is not running: failed precondition",
    ),
    Row(
        "start-exec-no-program",
        _then(_task(), _exec("e1", "nosuchprog")),
        Status.UNKNOWN,
        EXEC + START + NOT_IN_PATH,
    ),
    Row(
        "start-exec-no-args",
        _then(
            _task(),
            _exec_spec("e1", AnyPb(type_url=PROCESS_TYPE_URL, value=b'{"cwd":"/"}')),
            _start("e1"),
        ),
        Status.UNKNOWN,
        EXEC + "args must not be empty",
    ),
    Row(
        "start-exec-no-cwd",
        _then(
            _task(), _exec_spec("e1", AnyPb(type_url="example.com/x", value=b"{}")), _start("e1")
        ),
        Status.UNKNOWN,
        EXEC + "Cwd property must not be empty",
    ),
    Row(
        "start-exec-relative-cwd",
        _then(_task(), _exec_spec("e1", process_spec("true", cwd="rel")), _start("e1")),
        Status.UNKNOWN,
        EXEC + "Cwd must be an absolute path",
    ),
    Row(
        "start-exec-missing-cwd",
        _then(_task(), _exec_spec("e1", process_spec("pwd", cwd="/no/where")), _start("e1")),
        Status.UNKNOWN,
        EXEC + START + f'chdir to cwd ("/no/where") set in config.json failed: {NO_FILE}',
    ),
    Row(
        "start-exec-no-path",
        _then(_task(), _exec_spec("e1", process_spec("true", env=[])), _start("e1")),
        Status.UNKNOWN,
        EXEC + START + 'exec: "true": executable file not found in $PATH',
    ),
    Row(
        "start-exec-empty-stdout",
        _then(_task(), _exec("e1", stdout="")),
        Status.UNKNOWN,
        EMPTY_PATH,
    ),
    Row(
        "start-exec-missing-stdin",
        _then(_task(), _exec("e1", stdin="/nonexist")),
        Status.UNKNOWN,
        "failed to open stdin fifo /nonexist: stat /nonexist: no such file or directory",
    ),
    # Exec.
    Row(
        "exec-in-use",
        _then(_task(), _exec(), _exec(start=False)),
        Status.ALREADY_EXISTS,
        "id e1: already exists",
    ),
    Row(
        "exec-on-stopped",
        _then(_exited(), _exec()),
        Status.UNKNOWN,
        "cannot exec in a stopped state",
    ),
    Row(
        "exec-on-paused",
        _then(_task(), _pause, _exec()),
        Status.UNKNOWN,
        "cannot exec in a paused state",
    ),
    Row(
        "exec-empty-id",
        _then(_task(), _exec("")),
        Status.INVALID_ARGUMENT,
        "exec id cannot be empty",
    ),
    Row(
        "exec-bad-id",
        _then(_task(), _exec("bad id!")),
        Status.INVALID_ARGUMENT,
        f'invalid exec id bad id!: identifier "bad id!" {ID_RULE}: invalid argument',
    ),
    # Kill.
    Row(
        "kill-stopped",
        _then(_exited(), _kill()),
        Status.NOT_FOUND,
        "process already finished: not found",
    ),
    Row(
        "kill-stopped-exec",
        _then(
            _task(),
            _exec("e1", "true"),
            lambda w: w.tasks.wait(tpb.WaitRequest(container_id="c1", exec_id="e1")),
            _kill("e1"),
        ),
        Status.NOT_FOUND,
        "process already finished: not found",
    ),
    Row(
        "kill-created-exec",
        _then(_task(), _exec(start=False), _kill("e1", 9)),
        Status.FAILED_PRECONDITION,
        "process not created: failed precondition",
    ),
    # Delete.
    Row(
        "delete-running",
        _then(_task(), _delete()),
        Status.UNKNOWN,
        "failed to delete task: cannot delete a running process",
    ),
    Row(
        "delete-paused",
        _then(_task(), _pause, _delete()),
        Status.UNKNOWN,
        "failed to delete task: cannot delete a paused process",
    ),
    Row(
        "deleteprocess-running",
        _then(_task(), _exec(), _delete_process("e1")),
        Status.UNKNOWN,
        "cannot delete a running process",
    ),
    Row(
        "deleteprocess-init-running",
        _then(_task(), _delete_process("")),
        Status.UNKNOWN,
        "cannot delete a running process",
    ),
    # Pause and resume.
    Row(
        "pause-created",
        _then(_task(start=False), _pause),
        Status.UNKNOWN,
        "cannot pause task in created state",
    ),
    Row(
        "resume-created",
        _then(_task(start=False), _resume),
        Status.UNKNOWN,
        "cannot resume task in created state",
    ),
    Row(
        "pause-twice",
        _then(_task(), _pause, _pause),
        Status.UNKNOWN,
        "cannot pause a paused container",
    ),
    Row(
        "resume-running", _then(_task(), _resume), Status.UNKNOWN, "cannot resume a running process"
    ),
    Row(
        "pause-stopped",
        _then(_exited(), _pause),
        Status.UNKNOWN,
        "cannot pause a stopped container",
    ),
    Row(
        "resume-stopped",
        _then(_exited(), _resume),
        Status.UNKNOWN,
        "cannot resume a stopped container",
    ),
    # Update, Metrics, Checkpoint.
    Row(
        "update-stopped",
        _then(_exited(), _update),
        Status.UNKNOWN,
        "cannot update a stopped container",
    ),
    Row(
        "metrics-bad-filter",
        lambda w: w.tasks.metrics(tpb.MetricsRequest(filters=["id=="])),
        Status.UNKNOWN,
        "filters: parse error: [id==]: expected value or quoted: invalid argument",
    ),
    Row(
        "checkpoint-stopped",
        _then(
            _exited(), lambda w: w.tasks.checkpoint(tpb.CheckpointTaskRequest(container_id="c1"))
        ),
        Status.UNKNOWN,
        "cannot checkpoint a stopped container",
    ),
]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
async def test_task_refusal(backend: Backend, row: Row, tmp_path: Path) -> None:
    async with task_wire(backend.address, backend.namespace, make_root(tmp_path)) as wire:
        with pytest.raises(GRPCError) as info:
            await row.call(wire)
    expected = row.message.replace("{ns}", backend.namespace)
    got = info.value.message or ""
    assert info.value.status is row.status, got
    assert got == expected
