"""The ``/tasks/*`` events of the stand-in's Tasks service, as containerd's runc shim sends them.

The payloads and their order are the shim's (seen with containerd 2.1.9): ``/tasks/create``
(the bundle under the state folder, the request's rootfs and stream paths, the pid),
``/tasks/start`` or ``/tasks/exec-started``, ``/tasks/exec-added``, ``/tasks/paused``,
``/tasks/resumed``, ``/tasks/exit`` for each process (``id`` the exec's, or the container's
for its own process, which exits after its execs), ``/tasks/delete`` for the task's own
process only (no ``id``; a task never started has exit status 0 and Go's zero time). An exit
heard while its process is being started is held until the start is told, as the shim holds
it. ``/tasks/checkpointed`` never comes (a checkpoint always fails here) and neither does
``/tasks/oom``: nothing limits a host process's memory, so the stand-in cannot know of one
(:meth:`~sandboxclient.testing.FakeContainerd.publish` can make one up).
"""

from __future__ import annotations

import os

import betterproto2

from .._wire._pb import event_payloads_pb as ev
from .._wire._pb import tasks_pb
from ._exchange import Exchange
from ._taskstate import Proc, Task

__all__ = ("TaskEvents",)


class TaskEvents:
    """Publishes a task's events on ``exchange``; bundles are under ``state_dir``."""

    def __init__(self, exchange: Exchange, state_dir: str) -> None:
        self._exchange = exchange
        self._state_dir = state_dir
        self._starting: set[Proc] = set()
        self._held: set[Proc] = set()

    def bundle(self, task: Task) -> str:
        """The task's bundle folder, where containerd's runtime keeps it."""
        return os.path.join(
            self._state_dir, "io.containerd.runtime.v2.task", task.namespace, task.container_id
        )

    def _publish(self, task: Task, topic: str, payload: betterproto2.Message) -> None:
        self._exchange.publish(topic, payload, task.namespace)

    def created(self, task: Task, request: tasks_pb.CreateTaskRequest) -> None:
        """The task was created; its exits are told from now on."""
        task.init.on_exit = self.exited
        io = ev.TaskIo(
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
            terminal=request.terminal,
        )
        payload = ev.TaskCreate(
            container_id=task.container_id,
            bundle=self.bundle(task),
            rootfs=list(request.rootfs),
            io=io,
            pid=task.init.pid,
        )
        self._publish(task, "/tasks/create", payload)

    def exec_added(self, proc: Proc) -> None:
        """An exec was added; its exit is told from now on."""
        proc.on_exit = self.exited
        payload = ev.TaskExecAdded(container_id=proc.task.container_id, exec_id=proc.exec_id)
        self._publish(proc.task, "/tasks/exec-added", payload)

    def starting(self, proc: Proc) -> None:
        """``proc`` is being started: its exit waits for :meth:`started` or :meth:`failed`."""
        self._starting.add(proc)

    def started(self, proc: Proc) -> None:
        """``proc`` started: tell it, then an exit held meanwhile."""
        task = proc.task
        if proc is task.init:
            payload: betterproto2.Message = ev.TaskStart(
                container_id=task.container_id, pid=proc.pid
            )
            self._publish(task, "/tasks/start", payload)
        else:
            payload = ev.TaskExecStarted(
                container_id=task.container_id, exec_id=proc.exec_id, pid=proc.pid
            )
            self._publish(task, "/tasks/exec-started", payload)
        self.failed(proc)

    def failed(self, proc: Proc) -> None:
        """``proc``'s start is over (failed, or told): tell an exit held meanwhile."""
        self._starting.discard(proc)
        if proc in self._held:
            self._held.discard(proc)
            self.exited(proc)

    def exited(self, proc: Proc) -> None:
        """``proc`` exited (held while it is being started)."""
        if proc in self._starting:
            self._held.add(proc)
            return
        task = proc.task
        payload = ev.TaskExit(
            container_id=task.container_id,
            id=proc.name,
            pid=proc.pid,
            exit_status=proc.exit_status,
            exited_at=proc.exited_at,
        )
        self._publish(task, "/tasks/exit", payload)

    def paused(self, task: Task) -> None:
        """The task was paused."""
        self._publish(task, "/tasks/paused", ev.TaskPaused(container_id=task.container_id))

    def resumed(self, task: Task) -> None:
        """The task was resumed."""
        self._publish(task, "/tasks/resumed", ev.TaskResumed(container_id=task.container_id))

    def deleted(self, task: Task, answer: tasks_pb.DeleteResponse) -> None:
        """The task (its own process) was deleted, with Delete's ``answer``."""
        payload = ev.TaskDelete(
            container_id=task.container_id,
            pid=answer.pid,
            exit_status=answer.exit_status,
            exited_at=answer.exited_at,
        )
        self._publish(task, "/tasks/delete", payload)
