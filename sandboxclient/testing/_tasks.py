"""The stand-in's Tasks service: containerd's ``containerd.services.tasks.v1.Tasks``.

Each task runs as plain host processes (see :mod:`._hostproc` for what of the OCI spec is
acted on: nothing is isolated), with its streams opened and copied as the runc shim does
(:mod:`._stdio`). The answers, errors included, are containerd 2.1.9's with the runc shim,
word for word where tests compare them. What the stand-in cannot do it says as the daemon
would on this kind of host: Checkpoint fails as runc does without CRIU; Update records the
resources without enforcing them; Metrics answers cgroup v1 metrics computed from ``/proc``
(pids, CPU time, resident memory) instead of read from a cgroup. The requests that crash
containerd or its shim (Create for a container without a spec, Exec without a spec, Update
without resources) are refused and counted as the other services' are.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._golang import GO_ZERO_TIME
from .._facts._validation import identifier_problem
from .._serve._refusals import already_exists, failed_precondition, invalid_argument, not_found
from .._serve._server import current_namespace
from .._wire._pb import (
    AnyPb,
    EmptyPb,
    MountPb,
    containers_pb,
    runc_options_pb,
    sandbox_pb,
)
from .._wire._pb import task_types_pb as types_pb
from .._wire._pb import tasks_pb as pb
from ._filters import matches, parse_filters
from ._hostproc import HostProcess, SpecError, resolve
from ._records import Records
from ._services import Binder
from ._stdio import Stdio, StdioError
from ._taskevents import TaskEvents
from ._taskstate import Proc, State, Task, TaskTable, metric_of, settle

__all__ = ("TasksService",)

_CREATE = "failed to create shim task: "
_EXEC_FAILED = "OCI runtime exec failed: exec failed: "
_DETAILS_TYPE_URL = "containerd.runc.v1.ProcessDetails"


def _unknown(message: str) -> GRPCError:
    # What the shim's untyped errors become on the way through containerd.
    return GRPCError(Status.UNKNOWN, message)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        decoded = json.loads(data or b"{}")
    except ValueError as exc:
        raise _unknown(f"invalid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise _unknown(f"json: cannot unmarshal {type(decoded).__name__} into Go value of {what}")
    return decoded


class TasksService(pb.TasksBase):
    """containerd's Tasks service over the container records and a :class:`TaskTable`.

    ``events`` publishes the ``/tasks/*`` events (see :mod:`._taskevents`). ``state_dir``
    only shows where containerd names its state folder: the tasks' bundles, and a failed
    Checkpoint's log path.
    """

    def __init__(
        self,
        records: Records,
        bind: Binder,
        table: TaskTable,
        events: TaskEvents,
        *,
        image_root: Callable[[list[MountPb]], str | None] | None = None,
    ) -> None:
        self._records = records
        self._bind = bind
        self._table = table
        self._events = events
        self._image_root = image_root

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    # -- lookups, in containerd's order: the container, then its task, then the process ----

    def _container(self, container_id: str) -> containers_pb.Container:
        return self._records.container_get(containers_pb.GetContainerRequest(id=container_id))

    def _task(self, container_id: str) -> Task:
        self._container(container_id)
        task = self._table.get(current_namespace(), container_id)
        if task is None:
            raise GRPCError(Status.NOT_FOUND, f"task {container_id} not found")
        return task

    def _proc(self, container_id: str, exec_id: str) -> tuple[Task, Proc]:
        task = self._task(container_id)
        if not exec_id:
            return task, task.init
        proc = task.execs.get(exec_id)
        if proc is None:
            raise not_found(f"process does not exist {exec_id}")
        return task, proc

    def _check_sandbox(self, namespace: str, sandbox_id: str) -> None:
        """A member of a sandbox the store knows runs in the shim of the sandbox's task."""
        if not sandbox_id:
            return
        try:
            self._records.sandbox_get(sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id))
        except GRPCError:
            return  # containerd starts a shim of its own for it ("maybe created from v1.x")
        if self._table.get(namespace, sandbox_id) is None:
            raise not_found(f"failed to start shim: can't find shim for sandbox {sandbox_id}")

    # -- the task's own process -----------------------------------------------------------

    async def create(self, message: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        """Create: the container's process, waiting to be started, and its open streams."""
        namespace = current_namespace()
        container = self._container(message.container_id)
        if self._table.get(namespace, container.id) is not None:
            raise already_exists(f"task {container.id}")
        if container.spec is None:
            raise self._records.crash("container.Spec")  # containerd 2.1.9 dies on it
        self._check_sandbox(namespace, container.sandbox)
        spec = _json_object(container.spec.value, "type specs.Spec")
        process = spec.get("process") if isinstance(spec.get("process"), dict) else {}
        root = (spec.get("root") or {}).get("path") if isinstance(spec.get("root"), dict) else None
        snapshot = self._image_root(list(message.rootfs)) if self._image_root else None
        if snapshot is not None:
            root = snapshot  # the image's snapshot is the root programs are found in
        try:
            launch = resolve(process or {}, root=root, own=True, rooted=snapshot is not None)
        except SpecError as exc:
            raise _unknown(
                f"{_CREATE}OCI runtime create failed: runc create failed: {exc}"
            ) from None
        try:
            stdio = Stdio.open(
                message.stdin, message.stdout, message.stderr, terminal=message.terminal
            )
        except StdioError as exc:
            raise _unknown(f"{_CREATE}{exc.message}") from None
        task = Task(
            namespace,
            container.id,
            (message.stdin, message.stdout, message.stderr),
            message.terminal,
            root if isinstance(root, str) else None,
            rooted=snapshot is not None,
        )
        try:
            runner = HostProcess.spawn(
                launch,
                stdio.child_fds,
                gated=True,
                terminal=message.terminal,
                on_exit=lambda r: task.init_exited(r.returncode or 0, r.exited_at),
                before_reap=lambda r: task.init_exiting(r.pid),
            )
        except OSError as exc:
            stdio.close()
            raise _unknown(f"{_CREATE}OCI runtime create failed: {exc}") from None
        stdio.started()
        task.init.runner, task.init.stdio = runner, stdio
        self._table.add(task)
        self._events.created(task, message)
        return pb.CreateTaskResponse(container_id=container.id, pid=runner.pid)

    async def start(self, message: pb.StartRequest) -> pb.StartResponse:
        """Start: run the task's own process, or an exec."""
        task, proc = self._proc(message.container_id, message.exec_id)
        if proc.state is State.RUNNING:
            raise _unknown("cannot start a running process")
        if proc.state is State.STOPPED:
            raise _unknown("cannot start a stopped process")
        self._events.starting(proc)
        try:
            if proc is task.init:
                runner = proc.runner
                assert isinstance(runner, HostProcess)
                proc.state = State.RUNNING  # before the wait: a quick exit may be heard in it
                try:
                    await runner.release()
                except SpecError as exc:
                    raise _unknown(f"OCI runtime start failed: {exc}") from None
            else:
                await self._start_exec(task, proc)
        except BaseException:
            self._events.failed(proc)
            raise
        self._events.started(proc)
        return pb.StartResponse(pid=proc.pid)

    async def _start_exec(self, task: Task, proc: Proc) -> None:
        if task.init.state is State.STOPPED:
            raise failed_precondition(f"container {task.container_id} init process is not running")
        if task.paused:
            raise _unknown("cannot exec in a paused state")
        try:
            launch = resolve(proc.spec or {}, root=task.root, own=False, rooted=task.rooted)
        except SpecError as exc:
            raise _unknown(f"{_EXEC_FAILED}{exc}") from None
        try:
            stdio = Stdio.open(
                *proc.paths,
                terminal=proc.terminal,
                late_shared_writer=self._table.late_shared_writer,
            )
        except StdioError as exc:
            raise _unknown(exc.message) from None
        try:
            runner = HostProcess.spawn(
                launch,
                stdio.child_fds,
                gated=False,
                terminal=proc.terminal,
                on_exit=lambda r: task.exec_exited(proc, r.returncode or 0, r.exited_at),
                before_reap=lambda r: task.leader_exiting(r.pid),
            )
        except OSError as exc:
            stdio.close()
            raise _unknown(f"{_EXEC_FAILED}{exc}") from None
        stdio.started()
        proc.runner, proc.stdio, proc.state = runner, stdio, State.RUNNING
        try:
            await runner.release()
            await stdio.open_late_writer()  # the shim's copies begin after runc exec
        except SpecError as exc:
            raise _unknown(f"{_EXEC_FAILED}{exc}") from None
        except StdioError as exc:
            raise _unknown(exc.message) from None

    async def delete(self, message: pb.DeleteTaskRequest) -> pb.DeleteResponse:
        """Delete: forget a task whose process has exited (or never started)."""
        return await self._delete_init(self._task(message.container_id), "failed to delete task: ")

    async def _delete_init(self, task: Task, prefix: str) -> pb.DeleteResponse:
        init = task.init
        if init.state is State.RUNNING:
            kind = "paused" if task.paused else "running"
            raise _unknown(f"{prefix}cannot delete a {kind} process")
        answer = pb.DeleteResponse(
            pid=init.pid, exit_status=init.exit_status, exited_at=init.exited_at or GO_ZERO_TIME
        )
        if init.state is State.CREATED:
            # Never started: runc's delete kills what it had made; no exit is reported.
            answer.exit_status, answer.exited_at = 0, GO_ZERO_TIME
            init.on_exit = None
            if init.runner is not None and init.runner.signal(signal.SIGKILL):
                await _bounded(init)
        elif init.stdio is not None:
            await init.stdio.drained()
        self._table.remove(task)
        self._events.deleted(task, answer)
        return answer

    async def delete_process(self, message: pb.DeleteProcessRequest) -> pb.DeleteResponse:
        """DeleteProcess: forget an exec that has exited (or never started)."""
        task, proc = self._proc(message.container_id, message.exec_id)
        if proc is task.init:
            return await self._delete_init(task, "")
        if proc.state is State.RUNNING:
            raise _unknown(f"cannot delete a {'paused' if task.paused else 'running'} process")
        if proc.stdio is not None:
            await proc.stdio.drained()
        if task.execs.pop(proc.exec_id, None) is not proc:
            raise not_found(f"process does not exist {proc.exec_id}")
        proc.release()
        return pb.DeleteResponse(
            id=proc.exec_id,
            pid=proc.pid,
            exit_status=proc.exit_status,
            exited_at=proc.exited_at or GO_ZERO_TIME,
        )

    async def get(self, message: pb.GetRequest) -> pb.GetResponse:
        """Get: one process's state."""
        _, proc = self._proc(message.container_id, message.exec_id)
        return pb.GetResponse(process=proc.to_pb())

    async def list(self, message: pb.ListTasksRequest) -> pb.ListTasksResponse:
        """List: every task of the namespace (the filter is not looked at, as containerd's)."""
        tasks = self._table.in_namespace(current_namespace())
        return pb.ListTasksResponse(tasks=[t.init.to_pb() for t in tasks])

    async def kill(self, message: pb.KillRequest) -> EmptyPb:
        """Kill: a signal to a process, or (``all``) to every process of the task."""
        task, proc = self._proc(message.container_id, message.exec_id)
        if message.all and proc is task.init:
            if proc.state is not State.STOPPED:
                task.signal_all(message.signal)
            return EmptyPb()
        if proc.state is State.STOPPED:
            raise not_found("process already finished")
        if proc.runner is None:
            raise failed_precondition("process not created")
        if not proc.runner.signal(message.signal):
            raise not_found("process already finished")
        return EmptyPb()

    async def exec(self, message: pb.ExecProcessRequest) -> EmptyPb:
        """Exec: add a process to the task (started with Start)."""
        if not message.exec_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "exec id cannot be empty")
        task = self._task(message.container_id)
        problem = identifier_problem(message.exec_id)
        if problem is not None:
            raise invalid_argument(f"invalid exec id {message.exec_id}: {problem}")
        if message.spec is None:
            raise self._records.crash("spec")  # the runc shim dies on it
        if message.exec_id in task.execs:
            raise already_exists(f"id {message.exec_id}")
        if task.paused:
            raise _unknown("cannot exec in a paused state")
        if task.init.state is State.STOPPED:
            raise _unknown("cannot exec in a stopped state")
        spec = _json_object(message.spec.value, "type specs.Process")
        paths = (message.stdin, message.stdout, message.stderr)
        proc = Proc(task, message.exec_id, paths, message.terminal, spec)
        task.execs[message.exec_id] = proc
        self._events.exec_added(proc)
        return EmptyPb()

    async def resize_pty(self, message: pb.ResizePtyRequest) -> EmptyPb:
        """ResizePty: the window size of a process's pty (nothing without one)."""
        _, proc = self._proc(message.container_id, message.exec_id)
        if proc.stdio is not None:
            proc.stdio.resize(message.width, message.height)
        return EmptyPb()

    async def close_io(self, message: pb.CloseIoRequest) -> EmptyPb:
        """CloseIO: close the shim's own write end of stdin, so the process reads EOF."""
        _, proc = self._proc(message.container_id, message.exec_id)
        if message.stdin and proc.stdio is not None:
            proc.stdio.close_stdin()
        return EmptyPb()

    async def pause(self, message: pb.PauseTaskRequest) -> EmptyPb:
        """Pause: SIGSTOP to every process of the task."""
        task = self._task(message.container_id)
        if task.init.state is State.CREATED:
            raise _unknown("cannot pause task in created state")
        if task.init.state is State.STOPPED:
            raise _unknown("cannot pause a stopped container")
        if task.paused:
            raise _unknown("cannot pause a paused container")
        task.signal_all(signal.SIGSTOP)
        task.paused = True
        await settle(task, stopped=True)
        self._events.paused(task)
        return EmptyPb()

    async def resume(self, message: pb.ResumeTaskRequest) -> EmptyPb:
        """Resume: SIGCONT to every process of a paused task."""
        task = self._task(message.container_id)
        if task.init.state is State.CREATED:
            raise _unknown("cannot resume task in created state")
        if task.init.state is State.STOPPED:
            raise _unknown("cannot resume a stopped container")
        if not task.paused:
            raise _unknown("cannot resume a running process")
        task.paused = False
        task.signal_all(signal.SIGCONT)
        await settle(task, stopped=False)
        self._events.resumed(task)
        return EmptyPb()

    async def list_pids(self, message: pb.ListPidsRequest) -> pb.ListPidsResponse:
        """ListPids: the task's processes on the host, an exec's own marked with its id."""
        task = self._task(message.container_id)
        execs = {p.pid: p.exec_id for p in task.execs.values() if p.pid}
        answer = []
        for pid in task.members():
            info = None
            if pid in execs:
                details = runc_options_pb.ProcessDetails(exec_id=execs[pid])
                info = AnyPb(type_url=_DETAILS_TYPE_URL, value=bytes(details))
            answer.append(types_pb.ProcessInfo(pid=pid, info=info))
        return pb.ListPidsResponse(processes=answer)

    async def checkpoint(self, message: pb.CheckpointTaskRequest) -> pb.CheckpointTaskResponse:
        """Checkpoint: refused as runc refuses it on a host without CRIU."""
        task = self._task(message.container_id)
        if task.init.state is State.STOPPED:
            raise _unknown("cannot checkpoint a stopped container")
        if task.init.state is State.CREATED:
            raise _unknown("cannot checkpoint a task in created state")
        log = os.path.join(self._events.bundle(task), "criu-dump.log")
        raise _unknown(
            "runc did not terminate successfully: exit status 1: CRIU version check failed: "
            f'exec: "criu": executable file not found in $PATH path= {log}'
        )

    async def update(self, message: pb.UpdateTaskRequest) -> EmptyPb:
        """Update: record the task's new resources (the stand-in enforces none)."""
        task = self._task(message.container_id)
        if message.resources is None:
            raise self._records.crash("resources")  # the runc shim dies on it
        if task.init.state is State.STOPPED:
            raise _unknown("cannot update a stopped container")
        # As the shim, whatever the type URL says, the value is read as LinuxResources.
        task.resources = _json_object(message.resources.value, "type specs.LinuxResources")
        return EmptyPb()

    async def metrics(self, message: pb.MetricsRequest) -> pb.MetricsResponse:
        """Metrics: a cgroup v1 sample per task of the namespace that passes the filters."""
        namespace = current_namespace()
        try:
            filters = parse_filters(message.filters)
        except GRPCError as exc:
            # ParseAll's error, passed on untyped (the stores add their class once more).
            raise _unknown((exc.message or "").removesuffix(": invalid argument")) from None

        def adaptor(task: Task) -> Any:
            fields = {"id": task.container_id, "namespace": namespace}
            return lambda path: (
                (fields.get(path[0], ""), path[0] in fields) if path else ("", False)
            )

        answer = [
            metric_of(task)
            for task in self._table.in_namespace(namespace)
            if matches(filters, adaptor(task))
        ]
        return pb.MetricsResponse(metrics=answer)

    async def wait(self, message: pb.WaitRequest) -> pb.WaitResponse:
        """Wait: until the process exits; at once with its status if it has."""
        _, proc = self._proc(message.container_id, message.exec_id)
        await proc.exited.wait()
        return pb.WaitResponse(exit_status=proc.exit_status, exited_at=proc.exited_at)


async def _bounded(proc: Proc, timeout: float = 5.0) -> None:
    """Wait for ``proc``'s exit to be heard, ``timeout`` seconds at most."""
    try:
        async with asyncio.timeout(timeout):
            await proc.exited.wait()
    except TimeoutError:
        pass
