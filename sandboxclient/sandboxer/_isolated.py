"""The isolating sandbox controller: each sandbox a runc container, made through containerd.

See :class:`ContainerSandboxer`. Its spec is built in :mod:`._podspec`, its container and task
made in :mod:`._pods`, its state kept in :mod:`._podstate`, its default root in :mod:`._rootfs`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Final

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import GO_ZERO_TIME, go_quote
from .._models import SandboxState
from .._process_models import TaskState
from .._sandbox_metrics import SANDBOX_METRICS_TYPE_URL
from .._serve._fields import copy_message
from .._serve._refusals import already_exists, failed_precondition, not_found, unavailable
from .._serve._server import current_namespace
from .._wire._convert import any_from_pb
from .._wire._pb import sandbox_pb
from ._answers import (
    exit_answer,
    host_platform,
    new_sandbox,
    refuse_change_once_started,
    update_target,
    updated_sandbox,
)
from ._base import SandboxController
from ._cgroup2 import SandboxCgroups
from ._extras import asks_for, check_sandbox
from ._handlers import GVISOR, Handlers
from ._harden import DefaultLimits, in_force
from ._output import ClientStreams, client_output, start_labels
from ._podend import PodEnd, ending_info, started_labels
from ._podlog import DEFAULT_LOG_LIMIT, LogKeep, LogKeepers
from ._podnet import PodNetworks
from ._podreport import metrics_answer, started_info
from ._pods import RUNC, PodRuntime, shielded
from ._podsignal import first_process
from ._podspec import WAIT_FOREVER, build_spec, check_spec, checked_create, needs_default_root
from ._podstarts import StartsInFlight, closed_while_starting
from ._podstate import PodEntry, PodRecord, PodTable
from ._podtimes import PodTimes
from ._podwatch import PodWatch, handles_sigterm
from ._rootdetach import detaching_first
from ._rootdisk import RootDisks
from ._rootfs import DefaultRoot
from ._spec import decode_spec
from ._stages import timing
from ._userns import DEFAULT_POOL, IdBlock, PoolConfig, SandboxUsers

__all__ = ("DEFAULT_CONTAINERD", "ContainerSandboxer")

DEFAULT_CONTAINERD: Final = "/run/containerd/containerd.sock"
"""Where the isolating sandboxer finds containerd unless told otherwise."""

_LIVE: Final = (TaskState.RUNNING, TaskState.PAUSED, TaskState.PAUSING, TaskState.CREATED)


class ContainerSandboxer(SandboxController):
    """A :class:`SandboxController` that runs each sandbox as a container, through containerd.

    On Start it creates, over containerd's socket at ``containerd``, a container and task
    whose id is the sandbox's, in the caller's namespace, under ``io.containerd.runc.v2``,
    from the sandbox's OCI spec over ``oci.generate_spec()``'s defaults (see
    :mod:`._podspec`): its own pid, mount, network, ipc and uts namespaces, a user namespace
    mapping root to a block of unprivileged host ids (:mod:`._userns`; unless it asks for the
    host's users or brings its own), cgroup or time ones if the spec asks, its root filesystem
    (the Create request's rootfs mounts, the spec's ``root.path``, or the sandboxer's own
    default, never the host's ``/``), user, capabilities, ``noNewPrivileges``, seccomp,
    masked and read-only paths, limits, hostname and mounts, hardened by :mod:`._harden`, and
    with ``network="bridge"`` an address on a CNI network (:mod:`._podnet`, torn down at
    Stop, Shutdown or a failed Start). Its stdout and stderr go to a log (mode 0600) in the
    sandboxer's state, kept to ``log_limit`` bytes by :mod:`._podlog` (Status
    ``info["log_dropped_bytes"]``), or to its client's FIFO (:mod:`._output`). Members
    (``Sandbox.new_container``) run in the same shim; ``Sandbox.run`` execs into its task.

    Stop sends SIGTERM to the sandbox's process (PID 1 of its PID namespace) and, after
    ``timeout_secs`` (10 s when 0), SIGKILL to every process of the task: nothing escapes
    through ``setsid`` or a double fork, as the PID namespace goes with its first process.
    Wait is the task's wait; Status and Metrics come from the task (its cgroup statistics,
    decoded into a :class:`~sandboxclient.SandboxMetrics`, type URL
    :data:`~sandboxclient.SANDBOX_METRICS_TYPE_URL`); Shutdown deletes the sandbox's member
    containers, then its own task and container. Everything is keyed by (namespace, id).

    The sandboxes are containerd's and their shims': with ``state_dir`` (which keeps only
    what containerd cannot: the Create request's mounts, netns path and annotations, and
    which namespace each sandbox is in), a sandboxer killed and started again finds every
    sandbox, running or not, and answers Waits with the real exit codes. Without one,
    :meth:`aclose` deletes them all. Either way :meth:`aclose` kills those still running.
    """

    METRICS_TYPE_URL: ClassVar[str] = SANDBOX_METRICS_TYPE_URL
    """type_url of ``Metric.data``: a :class:`~sandboxclient.SandboxMetrics` as JSON."""

    DEFAULT_STOP_TIMEOUT: ClassVar[float] = 10.0
    """Seconds between SIGTERM and SIGKILL when a Stop asks for 0."""

    def __init__(
        self,
        state_dir: str | None = None,
        *,
        containerd: str = DEFAULT_CONTAINERD,
        timeout: float = 30.0,
        limits: DefaultLimits | None = None,
        log_limit: int = DEFAULT_LOG_LIMIT,
        userns_pool: str | PoolConfig = DEFAULT_POOL,
        runtime_handlers: Mapping[str, str] | None = None,
        cni_conf_dir: str | None = None,
        cni_bin_dirs: tuple[str, ...] | None = None,
    ) -> None:
        """``userns_pool``: ``START:SIZExCOUNT``, the id blocks of :mod:`._userns`;
        ``runtime_handlers``: :mod:`._handlers`; ``cni_conf_dir``, ``cni_bin_dirs``: see
        :class:`~._podnet.PodNetworks`."""
        self.limits = limits if limits is not None else DefaultLimits()
        """What every sandbox gets where its spec sets no limit (see :mod:`._harden`)."""
        self.log_limit = log_limit
        """Bytes of a sandbox's output its log keeps; the rest is dropped and counted."""
        self._table = PodTable(state_dir)
        self._runtime = PodRuntime(containerd, timeout=timeout, cgroups=SandboxCgroups(self._table))
        self._root = DefaultRoot(self._table.base)
        self._disks = RootDisks(self._table)  # roots' bounded layers; sweeps a crash's
        self.handlers = Handlers(runtime_handlers or {}, self._table.base)
        """The runtime handlers sandboxes may name (see :mod:`._handlers`)."""
        held = {e.record.key for e in self._table.entries()}
        started = {e.record.key for e in self._table.entries() if e.started}
        self._users = SandboxUsers(userns_pool, Path(self._table.base, "userns"), held, started)
        self._watch = PodWatch(self._table, self._runtime)
        self._times = PodTimes(self._table, self._runtime, self._watch, self.shutdown)
        self._net = PodNetworks(self._table, conf_dir=cni_conf_dir, bin_dirs=cni_bin_dirs)
        self._logs = LogKeepers(self._table.base, self._table.started_logs(), log_limit)
        self._closed = False
        self._detached = False
        self._starts = StartsInFlight(lambda: self._closed)
        self._cut = False
        """Whether a close was cancelled while it waited for the Starts (the next one goes on)."""
        self._end = PodEnd(
            self._table, self._runtime, self._watch, self._net, self._users.pool, self._logs
        )

    @property
    def state_dir(self) -> str | None:
        """The state directory (absolute), or None when the records live in memory only."""
        return self._table.state_dir

    @property
    def containerd(self) -> str:
        """containerd's socket."""
        return self._runtime.address

    @property
    def default_root(self) -> str:
        """Where the default root filesystem is (built on the first Start that needs it)."""
        return self._root.path

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandboxes this controller holds in ``namespace``, sorted."""
        return self._table.ids(namespace)

    # --- bookkeeping -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise unavailable("the sandbox controller is closed")

    async def _lookup(self, sandbox_id: str) -> PodEntry:
        if self._detached:
            raise unavailable("the sandbox controller has let go of its sandboxes")
        entry = self._table.get(current_namespace(), sandbox_id)
        if entry is None:
            raise not_found(f"sandbox {go_quote(sandbox_id)} does not exist")
        if not entry.synced:
            async with entry.lock:
                if not entry.synced:
                    await self._watch.sync(entry)
        return entry

    # --- calls -------------------------------------------------------------------------------

    async def create(
        self, message: sandbox_pb.ControllerCreateRequest
    ) -> sandbox_pb.ControllerCreateResponse:
        """Record a sandbox; its container is made and started by :meth:`start`."""
        namespace = current_namespace()
        self._check_open()
        sandbox, sandbox_id = new_sandbox(message)
        rootfs = checked_create(message, sandbox, self.handlers)
        self._net.check_sandbox(decode_spec(sandbox.spec), message.annotations, message.netns_path)
        if self._table.get(namespace, sandbox_id) is not None:
            raise already_exists(f"sandbox {go_quote(sandbox_id)}")
        record = copy_message(sandbox)
        record.sandbox_id = sandbox_id
        entry = PodEntry(
            PodRecord(
                namespace=namespace,
                sandbox_id=sandbox_id,
                sandbox=record,
                created_at=utcnow(),
                rootfs=rootfs,
                netns_path=message.netns_path,
                annotations=dict(message.annotations),
            )
        )
        try:
            self._table.add(entry)
        except OSError as exc:
            raise failed_precondition(
                f"cannot record sandbox {go_quote(sandbox_id)}: {exc}"
            ) from None
        return sandbox_pb.ControllerCreateResponse(sandbox_id=sandbox_id)

    async def start(
        self, message: sandbox_pb.ControllerStartRequest
    ) -> sandbox_pb.ControllerStartResponse:
        """Make and start the sandbox's container and task; a second Start answers
        ALREADY_EXISTS. A failed Start leaves no container, task or log behind, or, when
        its undo fails too, stays marked so that what it left is removed later."""
        entry = await self._lookup(message.sandbox_id)
        launched = lambda: entry.record.pid != 0  # noqa: E731
        return await self._starts.run(message.sandbox_id, self._start(entry), launched)

    async def _start(self, entry: PodEntry) -> sandbox_pb.ControllerStartResponse:
        record = entry.record
        async with entry.lock:
            if entry.removed:
                raise not_found(f"sandbox {go_quote(record.sandbox_id)} does not exist")
            if entry.started:
                raise already_exists(f"sandbox {go_quote(record.sandbox_id)} was already started")
            self._check_open()  # closing came while it waited for the lock
            if record.starting:  # a failed Start may have left its container: clear it first
                await shielded(self._runtime.remove(record.namespace, record.sandbox_id))
                record.starting = False
            with timing(record.sandbox_id), self._users.claimed(record) as block:
                await self._launch_with(entry, block)
        if self._closed:  # closing waited for this Start: it kills the sandbox next
            raise closed_while_starting(record.sandbox_id)
        return sandbox_pb.ControllerStartResponse(
            sandbox_id=record.sandbox_id,
            pid=record.pid,
            created_at=record.created_at,
            labels=started_labels(start_labels(record.sandbox.labels)),
        )

    async def _launch_with(self, entry: PodEntry, block: IdBlock | None) -> None:
        record = entry.record
        given = decode_spec(record.sandbox.spec)
        output: ClientStreams | str | None = client_output(record.sandbox.labels)  # else log
        has_mounts = bool(record.rootfs)
        default_root = None
        if needs_default_root(given, has_rootfs_mounts=has_mounts):
            default_root = await self._root.ensure()
        path = ((given or {}).get("root") or {}).get("path") or ""
        root_path = path if block is not None and not has_mounts and os.path.isabs(path) else ""
        handler = self.handlers.chosen(given, record.annotations)
        # runsc's gofer cannot setns into a user namespace (EINVAL): runsc makes it itself.
        userns_path = ""
        if block is not None and handler.kind != GVISOR:
            userns_path = await self._users.pin(block, given)
        spec = build_spec(
            given,
            namespace=record.namespace,
            sandbox_id=record.sandbox_id,
            has_rootfs_mounts=has_mounts,
            netns_path=record.netns_path,
            annotations=record.annotations,
            default_root=default_root,
            limits=self.limits,
            userns=block,
            userns_path=userns_path,
        )
        self.handlers.mark(spec, handler, record.sandbox_id)
        entry.in_force = in_force(spec)
        record.starting = True
        self._table.save(entry)
        keeper: LogKeep | None = None
        try:
            attach = await self._net.start(entry, given, spec)  # the network, before it runs
            folder = self._table.sandbox_dir(entry)
            attach = await self.handlers.before_create(handler, spec, attach, folder)
            if handler.kind != GVISOR:  # runsc's file server reads the root at the host's path
                attach = detaching_first(attach, record.namespace, record.sandbox_id)
            if output is None:
                keeper = await self._logs.keep(folder, self._table.new_log(entry), self.log_limit)
                output = keeper.fifo
            mounts = self._disks.root(entry, spec, default_root, root_path, block, self.limits)
            runtime = record.sandbox.runtime
            asked = runtime.options if runtime is not None else None
            options = self.handlers.runtime_options(handler, spec) or (
                any_from_pb(asked) if asks_for(asked) else None
            )
            where = (record.namespace, record.sandbox_id)
            pid = await self._runtime.launch(*where, spec, mounts, output, options, attach)
        except BaseException as exc:
            if keeper is not None:
                keeper.release()
            # Nothing was made when the id was taken already; else what was may be left (a
            # failed undo, a call cut short that landed): the record stays "starting" until it
            # is known gone, so Shutdown, aclose, a restarted sandboxer or the next Start clear it.
            nothing_made = isinstance(exc, GRPCError) and exc.status is Status.ALREADY_EXISTS
            try:
                if nothing_made or await self._runtime.cleared(record.namespace, record.sandbox_id):
                    record.starting = False
                    self._logs.forget(self._table.sandbox_dir(entry))  # no writer left: our copy
                    await shielded(self._net.teardown_quietly(entry))
            finally:  # a second cancellation must not skip the bookkeeping
                self._table.save(entry)
                with contextlib.suppress(OSError):
                    self._table.clear_start(entry)
            if isinstance(exc, OSError):
                raise failed_precondition(f"cannot prepare the sandbox's files: {exc}") from None
            raise
        finally:  # the overlay the shim mounted holds the layer's tmpfs, if it is made
            self.handlers.after_create(spec)
            self._disks.release(entry)
        if keeper is not None:
            keeper.release()
        record.starting = False
        record.pid = pid
        entry.first = first_process(pid, spec, gvisor=handler.kind == GVISOR)
        record.started_at = utcnow()
        self._table.save(entry)
        self._watch.watch(entry)
        if spec["process"]["args"] == list(WAIT_FOREVER):
            entry.default_process = True
            if handler.kind != GVISOR:  # its host pid is gVisor's kernel: no trap to see
                await handles_sigterm(pid, WAIT_FOREVER)

    async def platform(
        self, message: sandbox_pb.ControllerPlatformRequest
    ) -> sandbox_pb.ControllerPlatformResponse:
        """This host's platform (the sandboxes share its kernel), as containerd names it."""
        await self._lookup(message.sandbox_id)
        return host_platform()

    async def stop(
        self, message: sandbox_pb.ControllerStopRequest
    ) -> sandbox_pb.ControllerStopResponse:
        """SIGTERM the sandbox's process, SIGKILL all of its task after the timeout; return
        once it exited (see :mod:`._podend`)."""
        entry = await self._lookup(message.sandbox_id)
        await self._end.stop(entry, message.timeout_secs or self.DEFAULT_STOP_TIMEOUT)
        return sandbox_pb.ControllerStopResponse()

    async def wait(
        self, message: sandbox_pb.ControllerWaitRequest
    ) -> sandbox_pb.ControllerWaitResponse:
        """Block until the sandbox exits (started or not yet); answer its exit status."""
        entry = await self._lookup(message.sandbox_id)
        await entry.settled.wait()
        record = entry.record
        return exit_answer(
            message.sandbox_id, record.exit_status, record.exited_at, closed=self._closed
        )

    async def status(
        self, message: sandbox_pb.ControllerStatusRequest
    ) -> sandbox_pb.ControllerStatusResponse:
        """The state of the sandbox's task: SANDBOX_READY while it runs (with its pid),
        SANDBOX_NOTREADY before and after (with the exit time).

        ``info`` holds ``exit_reason`` when the exit status is not the process's own; with
        ``verbose``, also the namespace, runtime, runtime handler, isolation, task state and
        start time. A started sandbox's shows ``log_dropped_bytes`` and, with ``verbose``,
        the limits and seccomp profile in force (see :mod:`._podreport`).
        """
        entry = await self._lookup(message.sandbox_id)
        record = entry.record
        ready, pid, exited_at, state = False, record.pid, record.exited_at, "none"
        if entry.started:
            found = await self._runtime.status(record.namespace, record.sandbox_id)
            if found is not None:
                state, pid = found.state.value, found.pid or pid
                ready = found.state in _LIVE and record.exit_status is None
                exited_at = exited_at or (None if ready else found.exited_at)
        verbose = message.verbose
        info = record.status_info(state, RUNC, verbose=verbose)
        if verbose:
            spec = decode_spec(record.sandbox.spec)
            info["runtime_handler"] = self.handlers.asked(spec, record.annotations)
        if entry.started:
            where, limit = self._table.sandbox_dir(entry), self.log_limit
            info.update(await started_info(self._runtime, entry, where, limit, verbose=verbose))
            info.update(await self._net.status_info(entry, verbose=verbose))
        info.update(self._times.status_info(entry))
        info.update(ending_info(entry))
        return sandbox_pb.ControllerStatusResponse(
            sandbox_id=record.sandbox_id,
            pid=pid,
            state=(SandboxState.READY if ready else SandboxState.NOTREADY).value,
            info=info,
            created_at=record.created_at,
            exited_at=exited_at or GO_ZERO_TIME,
        )

    async def shutdown(
        self, message: sandbox_pb.ControllerShutdownRequest
    ) -> sandbox_pb.ControllerShutdownResponse:
        """Kill and delete its members, then its task and container; forget it (Waits answered)."""
        entry = await self._lookup(message.sandbox_id)
        record = entry.record
        async with entry.lock:
            if entry.removed:
                raise not_found(f"sandbox {go_quote(record.sandbox_id)} does not exist")
            await self._end.shutdown(entry)
        return sandbox_pb.ControllerShutdownResponse()

    async def metrics(
        self, message: sandbox_pb.ControllerMetricsRequest
    ) -> sandbox_pb.ControllerMetricsResponse:
        """The task's cgroup statistics and CPU limit, a :class:`~sandboxclient.SandboxMetrics`."""
        entry = await self._lookup(message.sandbox_id)
        return await metrics_answer(self._runtime, entry)

    async def update(
        self, message: sandbox_pb.ControllerUpdateRequest
    ) -> sandbox_pb.ControllerUpdateResponse:
        """Store new sandbox fields (``labels[.k]``, ``extensions[.k]``, ``spec``, ``runtime``).

        No fields means all four. A new spec or runtime applies to a Start that has not
        happened yet: once one has (or while it runs) changing them is refused
        (FAILED_PRECONDITION).
        """
        sandbox, sandbox_id = update_target(message)
        entry = await self._lookup(sandbox_id)
        record = entry.record
        updated = updated_sandbox(record.sandbox, message, sandbox)
        check_sandbox(updated, "container")
        check_spec(
            decode_spec(updated.spec),
            has_rootfs_mounts=bool(record.rootfs),
            netns_path=record.netns_path,
            annotations=record.annotations,
            sandbox_id=sandbox_id,
        )
        self.handlers.check_sandbox(
            updated, netns_path=record.netns_path, annotations=record.annotations
        )
        self._net.check_sandbox(decode_spec(updated.spec), record.annotations, record.netns_path)
        if entry.started or entry.lock.locked():
            refuse_change_once_started(record.sandbox, updated, sandbox_id)
        entry.record.sandbox = updated
        self._table.save(entry)
        return sandbox_pb.ControllerUpdateResponse()

    async def aclose(self) -> None:
        """Kill every sandbox still running and wait (bounded) for it; without a state
        directory also delete every sandbox's containers, and the private directory.

        Waits still pending are answered; later calls answer UNAVAILABLE. Idempotent.
        """
        if self._closed and not self._detached and not self._watch.watching and not self._cut:
            return
        self._closed = True
        self._cut = True  # until the Starts are done: a close cancelled meanwhile is redone
        await self._starts.close()  # first, while all they use is open (it cuts them if cancelled)
        self._cut = False
        await self._times.aclose()
        if not self._detached:
            await shielded(self._watch.close(delete=self._table.state_dir is None))
            if self._table.state_dir is None:  # the sandboxes are gone: so are their blocks
                self._users.pool.retain(set())
        await shielded(self._net.close(teardown=not self._detached and not self._table.state_dir))
        self._watch.cancel()
        await self._watch.stopped()
        await self._users.aclose()
        await self._runtime.aclose()
        await self._logs.aclose()
        self._table.let_go()

    def detach(self) -> None:
        """Let go of every sandbox without stopping it, cutting an ending under way short (the
        next sandboxer finishes it), and of the state directory; later calls answer UNAVAILABLE.
        ``aclose()`` then only closes connections. Needs a state directory. Idempotent."""
        if self._table.state_dir is None:
            raise RuntimeError("detach() needs a state directory")
        self._closed = self._detached = True
        self._watch.detached = True
        self._times.cancel()
        self._watch.cancel()
        self._logs.close()
        self._table.let_go()
