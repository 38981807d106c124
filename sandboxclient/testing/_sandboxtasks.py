"""A started sandbox's process as the task of the container with the sandbox's id.

containerd's ``podsandbox`` controller runs a pod's pause container as such a task: execs
into the sandbox (``Sandbox.run``) go into it, and the pod's containers run in its shim. The
stand-in's own controller (a :class:`~sandboxclient.sandboxer.ProcessSandboxer`) does the
same through :class:`SandboxTasks`: when a sandbox starts, its process becomes the task of
the container whose id is the sandbox's (a record is made for it if there is none, with the
sandbox's runtime and spec); when that process exits (Stop, or of itself) the task goes,
its execs killed, as podsandbox deletes its pause container's task; at Shutdown the record
made for it goes too. None of this goes through the Containers or Tasks service, so none of
it is published as an event (execs into the task are, as any exec is).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from datetime import datetime

from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from .._models import UNKNOWN_EXIT_STATUS
from .._serve._server import current_namespace
from .._wire._pb import AnyPb, containers_pb, sandbox_pb
from ..oci import generate_spec
from ..sandboxer import SandboxController
from ._pump import close_fd
from ._records import Records
from ._taskstate import State, Task, TaskTable

__all__ = ("SandboxProcess", "SandboxTasks")


class SandboxProcess:
    """A sandbox's process, spawned and reaped by its controller: signalled through a
    pidfd, its exit learned from the controller's Wait."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.exited_at: datetime | None = None
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the process; False once it is gone."""
        if self._pidfd is None or self.returncode is not None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:
            return False
        return True

    def holds_group(self) -> bool:
        """Whether it has not been reaped (by its supervisor) nor heard to exit."""
        return self.signal(0)

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group (it leads one) while it has not exited."""
        if self.holds_group():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def exited(self, code: int, at: datetime | None) -> None:
        """The controller says it has exited."""
        self.returncode = code
        self.exited_at = at

    def close(self) -> None:
        """Let go of the pidfd."""
        close_fd(self._pidfd)
        self._pidfd = None


class SandboxTasks:
    """What the stand-in's controller router tells of sandboxes that start and go."""

    def __init__(self, records: Records, table: TaskTable, controller: SandboxController) -> None:
        self._records = records
        self._table = table
        self._controller = controller
        self._followers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._made: set[tuple[str, str]] = set()
        self._roots: dict[tuple[str, str], str] = {}

    def rooted(self, sandbox_id: str, root: str) -> None:
        """Sandbox ``sandbox_id`` is rooted on the snapshot at ``root``: execs into it find
        their programs there."""
        self._roots[(current_namespace(), sandbox_id)] = root

    async def started(self, sandbox_id: str, sandboxer: str, pid: int) -> None:
        """Sandbox ``sandbox_id`` runs as ``pid``: make it the task of its container."""
        namespace = current_namespace()
        key = (namespace, sandbox_id)
        if not pid or self._table.closed or self._table.get(namespace, sandbox_id) is not None:
            return
        self._ensure_record(namespace, sandbox_id)
        root = self._roots.get(key)
        task = Task(namespace, sandbox_id, ("", "", ""), False, root, rooted=root is not None)
        runner = SandboxProcess(pid)
        task.init.runner = runner
        task.init.state = State.RUNNING
        self._table.add(task)
        request = sandbox_pb.ControllerWaitRequest(sandbox_id=sandbox_id, sandboxer=sandboxer)
        # Created inside the request: the controller reads the namespace from its context.
        self._followers[key] = asyncio.create_task(
            self._follow(task, runner, request), name=f"fake-containerd-sandbox-{sandbox_id}"
        )

    def _ensure_record(self, namespace: str, sandbox_id: str) -> None:
        try:
            self._records.container_get(containers_pb.GetContainerRequest(id=sandbox_id))
            return
        except GRPCError:
            pass
        try:
            stored = self._records.sandbox_get(sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id))
            runtime = stored.runtime.name if stored.runtime is not None else ""
            spec = stored.spec
        except GRPCError:
            runtime, spec = "", None
        if spec is None or spec.type_url != RUNTIME_SPEC_TYPE_URL:
            spec = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(generate_spec()).encode())
        record = containers_pb.Container(
            id=sandbox_id,
            runtime=containers_pb.ContainerRuntime(name=runtime or "io.containerd.runc.v2"),
            spec=spec,
        )
        with contextlib.suppress(GRPCError):
            self._records.container_create(containers_pb.CreateContainerRequest(container=record))
            self._made.add((namespace, sandbox_id))

    async def _follow(
        self, task: Task, runner: SandboxProcess, request: sandbox_pb.ControllerWaitRequest
    ) -> None:
        try:
            answer = await self._controller.wait(request)
            code, at = answer.exit_status, answer.exited_at
        except GRPCError:
            code, at = UNKNOWN_EXIT_STATUS, utcnow()
        _end(task, code, at)
        await task.init.exited.wait()
        self._table.remove(task)

    async def shut_down(self, sandbox_id: str) -> None:
        """Sandbox ``sandbox_id`` is gone: so are its task and the record made for it."""
        namespace = current_namespace()
        key = (namespace, sandbox_id)
        self._roots.pop(key, None)
        follower = self._followers.pop(key, None)
        if follower is not None:
            if not follower.done():
                await asyncio.wait([follower], timeout=5.0)
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        task = self._table.get(namespace, sandbox_id)
        if task is not None and isinstance(task.init.runner, SandboxProcess):
            _end(task, UNKNOWN_EXIT_STATUS, utcnow())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await task.init.exited.wait()
            self._table.remove(task)
        if key in self._made:
            self._made.discard(key)
            with contextlib.suppress(GRPCError):
                self._records.container_delete(containers_pb.DeleteContainerRequest(id=sandbox_id))

    async def aclose(self) -> None:
        """Stop following the sandboxes and end their tasks, killing the execs in them (the
        controller's own close kills the sandboxes' processes; the task table then waits for
        the execs and drops the tasks)."""
        followers = list(self._followers.values())
        self._followers.clear()
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for task in self._table.all():
            if isinstance(task.init.runner, SandboxProcess):
                _end(task, UNKNOWN_EXIT_STATUS, utcnow())


def _end(task: Task, code: int, at: datetime | None) -> None:
    """The sandbox's process is gone: kill the rest of its task, and report the exit once
    they are gone too (at once if they are)."""
    runner = task.init.runner
    if task.init.state is State.STOPPED or not isinstance(runner, SandboxProcess):
        return
    if runner.returncode is None:
        runner.exited(code, at)
        task.init_exiting()
        task.init_exited(code, at)
