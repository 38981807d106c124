"""A container's task, as Go's ``client.Task``: its own process plus what a task can do."""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ._creation._create import may_have_landed
from ._facts._golang import go_quote
from ._facts._validation import checked_identifier
from ._io import ProcessIO
from ._models import AnyValue
from ._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._plumbing._stream_args import StreamArg, plan_io
from ._plumbing._wait import WaitRegistry
from ._process import Process
from ._process_models import CompletedProcess, ProcessInfo, TaskState
from ._run import DEFAULT_MAX_OUTPUT, checked_run_arguments, run_process, spawn_process
from ._sandbox_metrics import SandboxMetrics
from ._wire._convert import any_to_pb
from ._wire._metrics import metrics_from_pb
from ._wire._pb import tasks_pb
from .errors import ContainerdError, FailedPreconditionError, NotFoundError, UnknownError
from .oci import DEFAULT_PATH_ENV, with_env, with_process_cwd, with_user

__all__ = (
    "PROCESS_SPEC_TYPE_URL",
    "RESOURCES_TYPE_URL",
    "FindTask",
    "Task",
    "exec_process_spec",
    "run_in_task",
)

PROCESS_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
"""The type URL containerd's typeurl gives an OCI process spec (JSON)."""
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
"""The type URL of OCI Linux resources (JSON), as ``update()`` sends them."""

SpecLoader = Callable[[], Awaitable["Mapping[str, Any] | None"]]

# Of the container's process, what an exec keeps unless told otherwise.
_INHERITED = (
    "user",
    "env",
    "cwd",
    "capabilities",
    "noNewPrivileges",
    "apparmorProfile",
    "selinuxLabel",
    "rlimits",
    "oomScoreAdj",
    "umask",
)


class Task(Process):
    """The task of a container: its own process, and exec, pause, resume, pids, metrics."""

    def __init__(
        self,
        connection: Connection,
        waits: WaitRegistry,
        container_id: str,
        *,
        spec: SpecLoader,
        io: ProcessIO | None = None,
        pid: int = 0,
    ) -> None:
        super().__init__(connection, waits, container_id, io=io, pid=pid)
        self._load_spec = spec

    def _tasks(self) -> tasks_pb.TasksStub:
        return self._connection.stub(tasks_pb.TasksStub)

    async def pause(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Freeze every process of the task."""
        await self._connection.call(
            self._tasks().pause,
            tasks_pb.PauseTaskRequest(container_id=self.container_id),
            timeout,
        )

    async def resume(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Thaw a paused task."""
        await self._connection.call(
            self._tasks().resume,
            tasks_pb.ResumeTaskRequest(container_id=self.container_id),
            timeout,
        )

    async def pids(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[ProcessInfo]:
        """Every process of the task, on the host's pid numbering."""
        resp = await self._connection.call(
            self._tasks().list_pids,
            tasks_pb.ListPidsRequest(container_id=self.container_id),
            timeout,
            idempotent=True,
        )
        return [
            ProcessInfo(p.pid, None if p.info is None else AnyValue(p.info.type_url, p.info.value))
            for p in resp.processes
        ]

    async def metrics(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> SandboxMetrics:
        """One metrics sample of the task (for runc, its cgroup's statistics), decoded into
        the record a sandbox's metrics are (see :class:`SandboxMetrics`).

        NotFoundError when containerd has none for the task; a sample that carries nothing, or
        nothing this client decodes, is an InternalError naming its type.
        """
        resp = await self._connection.call(
            self._tasks().metrics,
            tasks_pb.MetricsRequest(filters=[f"id=={self.container_id}"]),
            timeout,
            idempotent=True,
        )
        for metric in resp.metrics:
            if metric.id == self.container_id:
                return metrics_from_pb(metric, f"task {go_quote(self.container_id)}")
        raise NotFoundError(f"no metrics for task {self.container_id!r}")

    async def update(
        self, resources: Mapping[str, Any], *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Change the task's resources: OCI ``linux.resources`` (``{"memory": {"limit": N}}``)."""
        if not isinstance(resources, Mapping):
            raise TypeError(f"resources must be a mapping, got {type(resources).__name__}")
        try:
            data = json.dumps(dict(resources), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"resources are not JSON-serialisable: {exc}") from None
        await self._connection.call(
            self._tasks().update,
            tasks_pb.UpdateTaskRequest(
                container_id=self.container_id,
                resources=any_to_pb(AnyValue(RESOURCES_TYPE_URL, data)),
            ),
            timeout,
        )

    async def _process_spec(
        self,
        args: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | Sequence[str] | None = None,
        user: str | int | None = None,
        terminal: bool = False,
    ) -> dict[str, Any]:
        """The process spec an exec of ``args`` gets (see :func:`exec_process_spec`)."""
        args = _checked_args(args)
        return exec_process_spec(
            await self._load_spec(), args, cwd=cwd, env=env, user=user, terminal=terminal
        )

    async def exec(
        self,
        exec_id: str,
        process: Sequence[str] | Mapping[str, Any],
        *,
        stdin: StreamArg = None,
        stdout: StreamArg = None,
        stderr: StreamArg = None,
        terminal: bool = False,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Process:
        """Create (not start) process ``exec_id`` in the task.

        ``process`` is the command (args, with the container's own process settings) or a
        whole OCI process spec. The streams are as for ``new_task``.
        """
        checked_identifier(exec_id, "exec ID")
        plan = plan_io(stdin, stdout, stderr, terminal=terminal)
        if isinstance(process, Mapping):
            spec = dict(process)
            spec["terminal"] = terminal
            _checked_args(spec.get("args"))
        else:
            spec = await self._process_spec(process, terminal=terminal)
        io = await ProcessIO.open(plan, exec_id)
        try:
            await self._connection.call(
                self._tasks().exec,
                tasks_pb.ExecProcessRequest(
                    container_id=self.container_id,
                    exec_id=exec_id,
                    stdin=io.stdin_path,
                    stdout=io.stdout_path,
                    stderr=io.stderr_path,
                    terminal=terminal,
                    spec=any_to_pb(AnyValue(PROCESS_SPEC_TYPE_URL, json.dumps(spec).encode())),
                ),
                timeout,
            )
        except UnknownError as exc:
            io.close()
            # The shim's refusal to exec into a task that has stopped comes untyped.
            if await self._state_or_none() in (TaskState.STOPPED, None):
                raise FailedPreconditionError(
                    f"task {self.container_id!r} is not running: nothing to exec into"
                ) from exc
            raise
        except BaseException as exc:
            io.close()
            if may_have_landed(exc):
                # On the Client's time, not the caller's: a cancellation is raised at once.
                self._connection.start_cleanup(
                    self._forget_exec(exec_id), name=f"sandboxclient-forget-{exec_id}"
                )
            raise
        return Process(self._connection, self._waits, self.container_id, exec_id, io=io)

    async def _forget_exec(self, exec_id: str) -> None:
        # Never made, or the daemon is away: nothing more to do from here.
        with contextlib.suppress(ContainerdError):
            await self._connection.call(
                self._tasks().delete_process,
                tasks_pb.DeleteProcessRequest(container_id=self.container_id, exec_id=exec_id),
                10.0,
            )

    async def spawn(
        self,
        *args: str,
        stdin: StreamArg = None,
        stdout: StreamArg = None,
        stderr: StreamArg = None,
        cwd: str | None = None,
        env: Mapping[str, str] | Sequence[str] | None = None,
        user: str | int | None = None,
        terminal: bool = False,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Process:
        """Exec ``args`` into the task and start it; use the result as ``async with`` to
        kill and delete it on the way out."""
        spec = await self._process_spec(args, cwd=cwd, env=env, user=user, terminal=terminal)
        return await spawn_process(
            self.exec,
            _new_exec_id(),
            spec,
            streams=(stdin, stdout, stderr),
            terminal=terminal,
            timeout=timeout,
        )

    async def run(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | Sequence[str] | None = None,
        user: str | int | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> CompletedProcess:
        """Exec ``args`` into the task, feed it ``input``, and return what it wrote and its
        exit code.

        ``timeout`` (seconds) bounds the whole run, whatever the command does: when it
        passes, :class:`~sandboxclient.errors.CommandTimeoutError` is raised at once, saying
        whether the command did not exit or exited with a child of its own still holding its
        output open. The process is killed and deleted by clean-up the Client owns, as on a
        cancellation (raised at once too). Each stream keeps at most ``max_output`` bytes;
        the rest is read and dropped. Like ``communicate()``, a run reads the output to its
        end: with ``timeout=None``, a command that leaves a child holding its output runs as
        long as that child does.
        """

        async def myself() -> tuple[Task, Mapping[str, Any] | None]:
            return self, await self._load_spec()

        return await run_in_task(
            myself,
            args,
            input=input,
            timeout=timeout,
            cwd=cwd,
            env=env,
            user=user,
            max_output=max_output,
        )


def exec_process_spec(
    container_spec: Mapping[str, Any] | None,
    args: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | Sequence[str] | None = None,
    user: str | int | None = None,
    terminal: bool = False,
) -> dict[str, Any]:
    """The process spec an exec of ``args`` gets in a container whose spec is
    ``container_spec``: the container's own process settings (user, env, cwd,
    capabilities, no_new_privileges, ...) with these changes."""
    own = dict((container_spec or {}).get("process") or {})
    process: dict[str, Any] = {k: copy.deepcopy(own[k]) for k in _INHERITED if k in own}
    process.setdefault("cwd", "/")
    process.setdefault("user", {"uid": 0, "gid": 0})
    # A task whose own process names no environment still gets a PATH to find args[0].
    process.setdefault("env", [DEFAULT_PATH_ENV])
    process["args"] = list(args)
    process["terminal"] = bool(terminal)
    holder = {"process": process}
    if cwd is not None:
        with_process_cwd(cwd)(holder)
    if env is not None:
        with_env(env)(holder)
    if user is not None:
        with_user(str(user))(holder)
    return holder["process"]


FindTask = Callable[[], Awaitable["tuple[Task, Mapping[str, Any] | None]"]]
"""Find the task to run in, and its container's spec."""


async def run_in_task(
    find: FindTask,
    args: Sequence[str],
    *,
    input: bytes | None,
    timeout: float | None,
    cwd: str | None,
    env: Mapping[str, str] | Sequence[str] | None,
    user: str | int | None,
    max_output: int,
) -> CompletedProcess:
    """``Task.run`` in the task ``find()`` finds: the finding is under the deadline too."""
    command = tuple(_checked_args(args))
    checked_run_arguments(input, timeout, max_output)

    async def prepare() -> tuple[Callable[..., Awaitable[Process]], dict[str, Any]]:
        task, container_spec = await find()
        spec = exec_process_spec(container_spec, command, cwd=cwd, env=env, user=user)
        return task.exec, spec

    return await run_process(
        prepare, _new_exec_id(), command, input=input, timeout=timeout, max_output=max_output
    )


def _new_exec_id() -> str:
    return f"exec-{secrets.token_hex(6)}"


def _checked_args(args: object) -> list[str]:
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError("args must be a sequence of str (the command and its arguments)")
    if not args:
        raise ValueError("args must name a command")
    for arg in args:
        if not isinstance(arg, str):
            raise TypeError(f"args must be str, got {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError("args must not contain NUL bytes")
    return list(args)
