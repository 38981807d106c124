"""A sandbox controller whose sandboxes are plain processes on this host (``--isolation none``).

Nothing is isolated: each sandbox is a host process with the sandboxer's uid and privileges,
in its namespaces and on its file system, so a spec asking for anything else is refused (see
:mod:`._spec`). Each runs under a small supervisor process (:mod:`._supervise`) in a session
of its own, a child subreaper that keeps the sandbox's whole process tree below it and kills
it whole, writes the process's output to the sandbox's directory (mode 0600) and writes down
how it ended. Without a state directory the supervisors die with the server and the
sandboxes with them. With one, the controller writes its sandboxes down there too, so a
sandboxer that was killed and started again over the same directory finds them, watches the
ones still running and answers every Wait with the real exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import signal
from typing import ClassVar, Final

from grpclib.exceptions import GRPCError

from .. import _models
from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._serve._fields import copy_message
from .._serve._refusals import already_exists, failed_precondition, not_found, unavailable
from .._serve._server import current_namespace
from .._wire._pb import AnyPb, MetricPb, sandbox_pb
from ._answers import (
    exit_answer,
    host_platform,
    new_sandbox,
    refuse_change_once_started,
    update_target,
    updated_sandbox,
)
from ._base import SandboxController
from ._extras import check_create, check_sandbox
from ._launch import LaunchError, SupervisorLaunch
from ._metrics import process_metrics
from ._output import ClientStreams, client_output, start_labels, stream_failure
from ._sandboxes import SandboxEntry, SandboxTable
from ._spec import ProcessSpec
from ._state import SandboxState

__all__ = ("ProcessSandboxer",)

_CLOSE_GRACE: Final = 10.0


class ProcessSandboxer(SandboxController):
    """A :class:`SandboxController` that runs each sandbox as a plain process on this host.

    It isolates nothing: the process runs with the server's uid and privileges, in its
    namespaces, on its file system. It comes from the OCI runtime spec in
    ``ControllerCreateRequest.sandbox.spec`` (``process.args``, ``process.env``,
    ``process.cwd``; without a spec or args it sleeps until stopped); any other field of the
    spec that asks for something is refused with INVALID_ARGUMENT, naming it, and so are a
    Create's rootfs mounts, netns path, options and annotations, a runtime other than
    runc's and runtime options (see :mod:`._extras`). It runs in a
    session and process group of its own, under a supervisor that keeps every process it
    starts (``setsid`` or not) in its tree; its stdout and stderr go to files (mode 0600) in
    the sandbox's directory. Sandboxes are keyed by (namespace, id). Stop sends SIGTERM to
    the group and, after ``timeout_secs`` (10 s when 0), SIGKILL to the whole tree; a
    process killed by signal N exits with 128 + N. When the sandbox's process exits, what
    it left running is killed. :meth:`aclose` kills every sandbox still running. Exits are
    heard through the event loop, so a running sandbox leaves no task behind.

    Without ``state_dir`` the sandboxes exist only in memory and die with the server (their
    supervisors are told of its death). With it, the controller keeps a record of every
    sandbox there (see :mod:`._state`) and the supervisors survive the server and write
    down the exit status; a new ``ProcessSandboxer`` over the same directory (after the old one was
    killed, or :meth:`detach` ed) takes the sandboxes back: a Wait gets the real exit
    status, also of a sandbox that ended while no sandboxer ran. When that status cannot
    be known (the supervisor itself died) the sandbox ends with 255 and Status ``info``
    says why under ``exit_reason``. Only one live sandboxer can use a directory at a time
    (:class:`~._state.StateDirBusyError` otherwise).

    ``refuse_unenforced=False`` drops the refusal and ignores the rest of the spec: only for
    test doubles that stand in for an isolating sandboxer (the stand-in's default
    controller), never where a sandbox is meant to contain anything.
    """

    METRICS_TYPE_URL: ClassVar[str] = "types.sandboxclient.io/process-metrics"
    """type_url of ``Metric.data``: JSON with pid, rss_bytes, threads and cpu seconds."""

    DEFAULT_STOP_TIMEOUT: ClassVar[float] = 10.0
    """Seconds between SIGTERM and SIGKILL when a Stop asks for 0."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        refuse_unenforced: bool = True,
    ) -> None:
        self._sandboxes = SandboxTable(state_dir)
        self._refuse_unenforced = refuse_unenforced
        self._closed = False
        self._detached = False

    @property
    def state_dir(self) -> str | None:
        """The state directory (absolute), or None when the sandboxes live in memory only."""
        return self._sandboxes.state_dir

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandboxes this controller holds in ``namespace``, sorted."""
        return self._sandboxes.ids(namespace)

    def sandbox_directory(self, namespace: str, sandbox_id: str) -> str:
        """Where the files of sandbox ``sandbox_id`` in ``namespace`` are (its ``stdout`` and
        ``stderr``, its exit; with a state directory, its record): a path that may not
        exist. Without a state directory the private directory above it is made by the first
        Start or the first such call (then removed by closing the sandboxer), and once closed
        without one ever made this raises RuntimeError."""
        return self._sandboxes.directory_of(namespace, sandbox_id)

    def pids(self) -> list[int]:
        """The pids of the sandbox processes still running, in every namespace."""
        return [entry.state.pid for entry in self._sandboxes.running() if entry.state.pid]

    # --- calls -------------------------------------------------------------------------------

    def _lookup(self, sandbox_id: str) -> SandboxEntry:
        if self._detached:  # what it knows of the sandboxes is no longer kept up to date
            raise unavailable("the sandbox controller has let go of its sandboxes")
        entry = self._sandboxes.get(current_namespace(), sandbox_id)
        if entry is None:
            raise not_found(f"sandbox {go_quote(sandbox_id)} does not exist")
        return entry

    def _check_open(self) -> None:
        if self._closed:
            raise unavailable("the sandbox controller is closed")

    async def create(
        self, message: sandbox_pb.ControllerCreateRequest
    ) -> sandbox_pb.ControllerCreateResponse:
        """Record a sandbox; its process starts with :meth:`start`."""
        namespace = current_namespace()
        self._check_open()
        sandbox, sandbox_id = new_sandbox(message)
        spec = ProcessSpec.parse(sandbox.spec, refuse_unenforced=self._refuse_unenforced)
        if self._refuse_unenforced:
            check_sandbox(sandbox, "none")
            check_create(message, "none")
        if self._sandboxes.get(namespace, sandbox_id) is not None:
            raise already_exists(f"sandbox {go_quote(sandbox_id)}")
        record = copy_message(sandbox)
        record.sandbox_id = sandbox_id
        state = SandboxState(
            namespace=namespace,
            sandbox_id=sandbox_id,
            sandbox=record,
            created_at=utcnow(),
            netns_path=message.netns_path,
            annotations=dict(message.annotations),
        )
        try:
            self._sandboxes.add(SandboxEntry(state, spec))
        except OSError as exc:
            raise failed_precondition(
                f"cannot record sandbox {go_quote(sandbox_id)}: {exc}"
            ) from None
        return sandbox_pb.ControllerCreateResponse(sandbox_id=sandbox_id)

    async def start(
        self, message: sandbox_pb.ControllerStartRequest
    ) -> sandbox_pb.ControllerStartResponse:
        """Spawn the sandbox's process; a second Start answers ALREADY_EXISTS."""
        entry = self._lookup(message.sandbox_id)
        async with entry.lock:
            if entry.removed:
                raise not_found(f"sandbox {go_quote(message.sandbox_id)} does not exist")
            if entry.started:
                raise already_exists(f"sandbox {go_quote(message.sandbox_id)} was already started")
            self._check_open()
            await self._spawn_supervised(entry)
            if self._closed:
                # aclose() ran while the process was being spawned: it must not outlive it.
                entry.signal(signal.SIGKILL)
                await entry.settled.wait()
                raise unavailable("the sandbox controller is closed")
        state = entry.state
        return sandbox_pb.ControllerStartResponse(
            sandbox_id=state.sandbox_id,
            pid=state.pid,
            created_at=state.created_at,
            labels=start_labels(state.sandbox.labels),
        )

    async def _spawn_supervised(self, entry: SandboxEntry) -> None:
        """Start the process under a supervisor, recording each step.

        The record says ``starting`` (the supervisor's pid) before the supervisor answers,
        then ``running`` (the process's pid) before it is told to go on: a sandboxer that
        dies in between leaves a supervisor that kills what it started and writes down
        137 with the reason, which the next sandboxer then reports.
        """
        state = entry.state
        given = client_output(state.sandbox.labels)
        out, err = (given.stdout, given.stderr or "") if given is not None else ("", "")
        spec = dataclasses.replace(entry.spec, output=out, error=err)
        top, parts = self._sandboxes.sandbox_path(entry)
        try:
            launch = await SupervisorLaunch.spawn(spec, top, parts, tied=self._sandboxes.tied)
        except LaunchError as exc:
            self._sandboxes.clear_start(entry)
            raise _start_failed(entry, exc, given) from None
        proc = launch.process
        entry.process = proc
        state.supervisor_pid = proc.supervisor_pid
        state.supervisor_start = proc.supervisor_start
        state.boot_id = self._sandboxes.boot_id
        self._sandboxes.save(entry)
        gone = functools.partial(self._sandboxes.supervisor_gone, entry, proc)
        try:
            await launch.started()
        except LaunchError as exc:
            entry.process = None
            state.supervisor_pid = state.supervisor_start = 0
            self._sandboxes.save(entry)
            self._sandboxes.clear_start(entry)
            raise _start_failed(entry, exc, given) from None
        except BaseException:
            launch.abandon(gone)
            raise
        state.pid = proc.pid
        state.pid_start = proc.pid_start
        state.started_at = utcnow()
        self._sandboxes.save(entry)
        launch.confirm(gone, go=not self._closed)

    async def platform(
        self, message: sandbox_pb.ControllerPlatformRequest
    ) -> sandbox_pb.ControllerPlatformResponse:
        """This host's platform, named as containerd names it (``linux``/``amd64``...)."""
        self._lookup(message.sandbox_id)
        return host_platform()

    async def stop(
        self, message: sandbox_pb.ControllerStopRequest
    ) -> sandbox_pb.ControllerStopResponse:
        """SIGTERM the process group, SIGKILL it after the timeout; return once it exited."""
        entry = self._lookup(message.sandbox_id)
        if entry.running:
            timeout = message.timeout_secs or self.DEFAULT_STOP_TIMEOUT
            entry.signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await entry.settled.wait()
            except TimeoutError:
                entry.signal(signal.SIGKILL)
                await entry.settled.wait()
        return sandbox_pb.ControllerStopResponse()

    async def wait(
        self, message: sandbox_pb.ControllerWaitRequest
    ) -> sandbox_pb.ControllerWaitResponse:
        """Block until the process exits (started or not yet); answer its exit status."""
        entry = self._lookup(message.sandbox_id)
        await entry.settled.wait()
        state = entry.state
        return exit_answer(
            message.sandbox_id, state.exit_status, state.exited_at, closed=self._closed
        )

    async def status(
        self, message: sandbox_pb.ControllerStatusRequest
    ) -> sandbox_pb.ControllerStatusResponse:
        """SANDBOX_READY while the process runs, SANDBOX_NOTREADY before and after.

        ``info`` holds ``exit_reason`` when the exit status is not the process's own; with
        ``verbose``, also the namespace, runtime, args, cwd, start time, exit status, netns
        path and the supervisor's pid.
        """
        entry = self._lookup(message.sandbox_id)
        state = entry.state
        info: dict[str, str] = {}
        if message.verbose:
            info = {
                "namespace": state.namespace,
                "runtime": state.sandbox.runtime.name if state.sandbox.runtime else "",
                "args": json.dumps(list(entry.spec.args)),
                "cwd": entry.spec.cwd,
            }
            if state.started_at is not None:
                info["started_at"] = state.started_at.isoformat()
            if state.exit_status is not None:
                info["exit_status"] = str(state.exit_status)
            if state.netns_path:
                info["netns_path"] = state.netns_path
            if state.supervisor_pid:
                info["supervisor_pid"] = str(state.supervisor_pid)
        if state.exit_reason:
            info["exit_reason"] = state.exit_reason
        return sandbox_pb.ControllerStatusResponse(
            sandbox_id=state.sandbox_id,
            pid=state.pid,
            state=(
                _models.SandboxState.READY if entry.running else _models.SandboxState.NOTREADY
            ).value,
            info=info,
            created_at=state.created_at,
            exited_at=state.exited_at,
        )

    async def shutdown(
        self, message: sandbox_pb.ControllerShutdownRequest
    ) -> sandbox_pb.ControllerShutdownResponse:
        """Kill the process if it runs, then forget the sandbox and its record.

        Pending Waits are answered.
        """
        entry = self._lookup(message.sandbox_id)
        async with entry.lock:
            if entry.removed:
                raise not_found(f"sandbox {go_quote(message.sandbox_id)} does not exist")
            if entry.running:
                entry.signal(signal.SIGKILL)
                await entry.settled.wait()
            self._sandboxes.remove(entry)
        return sandbox_pb.ControllerShutdownResponse()

    async def metrics(
        self, message: sandbox_pb.ControllerMetricsRequest
    ) -> sandbox_pb.ControllerMetricsResponse:
        """CPU time and resident memory of the sandbox's process, read from /proc."""
        entry = self._lookup(message.sandbox_id)
        if not entry.running or not entry.state.pid:
            raise failed_precondition(f"sandbox {go_quote(message.sandbox_id)} is not running")
        try:
            data = process_metrics(entry.state.pid)
        except (OSError, ValueError, IndexError):
            raise failed_precondition(
                f"sandbox {go_quote(message.sandbox_id)} is not running"
            ) from None
        return sandbox_pb.ControllerMetricsResponse(
            metrics=MetricPb(
                timestamp=utcnow(),
                id=message.sandbox_id,
                data=AnyPb(type_url=self.METRICS_TYPE_URL, value=json.dumps(data).encode()),
            )
        )

    async def update(
        self, message: sandbox_pb.ControllerUpdateRequest
    ) -> sandbox_pb.ControllerUpdateResponse:
        """Store new sandbox fields (``labels[.k]``, ``extensions[.k]``, ``spec``, ``runtime``).

        No fields means all four. A new spec or runtime applies to a Start that has not
        happened yet: once one has (or while it runs) changing them is refused
        (FAILED_PRECONDITION).
        """
        sandbox, sandbox_id = update_target(message)
        entry = self._lookup(sandbox_id)
        updated = updated_sandbox(entry.state.sandbox, message, sandbox)
        spec = ProcessSpec.parse(updated.spec, refuse_unenforced=self._refuse_unenforced)
        if self._refuse_unenforced:
            check_sandbox(updated, "none")
        if entry.started or entry.lock.locked():
            refuse_change_once_started(entry.state.sandbox, updated, sandbox_id)
        entry.state.sandbox = updated
        entry.spec = spec
        self._sandboxes.save(entry)
        return sandbox_pb.ControllerUpdateResponse()

    async def aclose(self) -> None:
        """Kill (SIGKILL) every sandbox process still running and wait for it to exit.

        Waits still pending are answered; later calls that would create or start a sandbox
        answer UNAVAILABLE. The state directory keeps the records (the exits included) and
        is released for another sandboxer. Idempotent; after :meth:`detach` it does nothing.
        """
        if self._detached:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError):
            self._sandboxes.watch_recovered()
        running = self._sandboxes.running()
        for entry in running:
            entry.signal(signal.SIGKILL)
        if running:
            waits = [
                asyncio.create_task(entry.settled.wait(), name="sandboxclient.sandboxer.close")
                for entry in running
            ]
            try:
                await asyncio.wait(waits, timeout=_CLOSE_GRACE)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        self._sandboxes.let_go()

    def detach(self) -> None:
        """Let go of every sandbox without stopping it, and of the state directory.

        Leaves things as the death of this process would: the sandboxes keep running under
        their supervisors, and a new ``ProcessSandboxer`` over the same directory takes them
        back. Later calls answer UNAVAILABLE. Needs a state directory (RuntimeError without,
        as the processes would be left with nobody to know of them). Idempotent.
        """
        if self._sandboxes.state_dir is None:
            raise RuntimeError("detach() needs a state directory")
        self._closed = self._detached = True
        self._sandboxes.let_go()


def _start_failed(
    entry: SandboxEntry, exc: LaunchError, given: ClientStreams | None = None
) -> GRPCError:
    what, why = stream_failure(given, exc.what, exc.why, exc.code)
    return failed_precondition(
        f"failed to start sandbox {go_quote(entry.state.sandbox_id)}: {what}: {why}"
    )
