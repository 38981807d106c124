"""The handle of one sandbox: containerd's ``client.Sandbox`` as coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from typing_extensions import Unpack

from ._container import Container
from ._controller import Controller
from ._creation._container_create import ContainerFactory, ContainerOptions, check_options
from ._creation._member_request import member_request
from ._creation._sandbox_image import remove_sandbox_root
from ._facts import _lifetime
from ._facts._clock import utcnow
from ._facts._golang import go_quote
from ._facts._network import SandboxNetwork, network_of
from ._facts._pidstart import running_start_time
from ._files import Files
from ._members._ending import members_removed
from ._members._joined import confirm_member
from ._models import (
    ContainerInfo,
    ExitStatus,
    Platform,
    SandboxInfo,
    SandboxStatus,
    StartResult,
)
from ._plumbing._connection import USE_CLIENT_DEFAULT, Timeout
from ._plumbing._options import checked_labels
from ._plumbing._sandbox_io import SandboxOutput
from ._plumbing._sandbox_record import record_update
from ._plumbing._sandbox_store import SandboxStore
from ._plumbing._stream_args import StreamArg
from ._plumbing._wait import ExitChannel
from ._process import Process
from ._process_models import CompletedProcess
from ._run import DEFAULT_MAX_OUTPUT
from ._sandbox_metrics import SandboxMetrics
from ._task import Task, run_in_task
from ._wire._convert import AnyLike
from .errors import NotFoundError

__all__ = ("Sandbox",)


class Sandbox:
    """A sandbox known to containerd, bound to the Client that made or loaded it.

    ``metadata`` is the store record as of creation, loading or the last ``update``;
    ``labels()`` reads them fresh from the store. Made with ``stdout=PIPE`` (and
    ``stderr=PIPE``), its process's output is :attr:`stdout` (:attr:`stderr`), as an
    ``asyncio.subprocess.Process``'s, from ``start()`` on (see ``_sandbox_io``).
    """

    __slots__ = (
        "_containers",
        "_controller",
        "_ended",
        "_info",
        "_members_removed",
        "_output",
        "_pid",
        "_pid_started",
        "_returncode",
        "_store",
    )

    def __init__(
        self,
        info: SandboxInfo,
        *,
        store: SandboxStore,
        controller: Controller,
        containers: ContainerFactory,
        pid: int | None = None,
        pid_started: int | None = None,
        output: SandboxOutput | None = None,
    ) -> None:
        self._info = info
        self._store = store
        self._controller = controller
        self._containers = containers
        self._pid = pid
        self._pid_started = pid_started
        """The start time of the pid ``start()`` or a ready load was answered (``_pidstart``)."""
        self._output = output
        self._returncode: int | None = None
        self._members_removed = False
        """Whether the Start through this handle was answered by a controller whose
        Shutdown deletes the sandbox's members itself (``_members._ending``)."""
        self._ended = False
        """Whether :meth:`shutdown` got past the controller's Shutdown: a repeat skips it."""

    def __repr__(self) -> str:
        return f"<Sandbox {self._info.id!r} sandboxer={self._info.sandboxer!r} pid={self._pid}>"

    @property
    def id(self) -> str:
        """The sandbox id."""
        return self._info.id

    @property
    def metadata(self) -> SandboxInfo:
        """The store record this handle holds."""
        return self._info

    @property
    def sandboxer(self) -> str:
        """The sandbox controller that runs this sandbox."""
        return self._info.sandboxer

    @property
    def controller(self) -> Controller:
        """The handle of that controller."""
        return self._controller

    @property
    def pid(self) -> int | None:
        """The sandbox's pid once started (or as its controller reported on load), else None."""
        return self._pid

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        """The process's stdout (and stderr with ``stderr=STDOUT``), when ``stdout=PIPE``."""
        return None if self._output is None else self._output.stdout

    @property
    def stderr(self) -> asyncio.StreamReader | None:
        """The process's stderr, when ``stderr=PIPE``."""
        return None if self._output is None else self._output.stderr

    @property
    def returncode(self) -> int | None:
        """The exit code once :meth:`wait_exit` learned it (or, with ``stdout=``, the
        watch ``start()`` began saw it), else None."""
        seen = None if self._output is None else self._output.exit
        if self._returncode is None and seen is not None and seen.error is None:
            return seen.returncode
        return self._returncode

    @property
    def files(self) -> Files:
        """Files in the sandbox, through execs into its own task (see :class:`Files`)."""
        return Files(self.spawn, f"sandbox {go_quote(self.id)}")

    async def start(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> StartResult:
        """Start the sandbox with its controller.

        With ``stdout=``/``stderr=`` the sandboxer must say it gave the output to the
        client, else FailedPreconditionError (the sandbox runs: shut it down).
        """
        start = functools.partial(self._controller.start, self.id, timeout=timeout)
        if self._output is None:
            result = await start()
        else:
            result = await self._output.start(
                start, self._controller.wait(self.id), sandbox_id=self.id, sandboxer=self.sandboxer
            )
        self._pid, self._pid_started = result.pid, running_start_time(result.pid)
        self._members_removed = members_removed(result.labels)
        return result

    async def stop(
        self, *, grace: float | None = None, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Stop the sandbox: the polite signal, then the kill after ``grace`` seconds.

        ``grace`` travels as containerd's ``timeout_secs`` (whole seconds, rounded up); None
        or 0 leaves it to the controller. ``timeout`` is the call's deadline, by default the
        Client's plus that grace, so the call outlives the grace it asks for.
        """
        await self._controller.stop(self.id, grace=grace, timeout=timeout)

    async def wait(self, *, timeout: float | None = None) -> ExitChannel:
        """Start waiting for the sandbox to exit; the channel is returned at once.

        The Client makes one Wait call per sandbox however many channels wait on it, and puts
        exactly one ``ExitStatus`` on each. Closing a channel ends that channel only.
        ``timeout`` bounds this channel's wait; by default it has no deadline.
        """
        return self._controller.wait(self.id, timeout=timeout)

    async def wait_exit(self, *, timeout: float | None = None) -> ExitStatus:
        """Wait for the exit and return its status: ``await (await wait())``; sets
        :attr:`returncode` when the status is the real one."""
        channel = await self.wait(timeout=timeout)
        try:
            status = await channel.get()
        finally:
            channel.close()
        if status.error is None:
            self._returncode = status.returncode
        return status

    async def shutdown(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Delete the sandbox's containers (killing their tasks), shut it down with its
        controller, remove its image's snapshot and lease (one made with ``image=``) and
        delete its store record; the output is read meanwhile and then to its writers' close
        (at most 1 MiB a stream past the readers' bound; 2 s after), and its FIFOs closed.
        Should the controller's Shutdown (or what comes before it) fail, the output is left
        as it was: the sandbox may still run; once it succeeded, the output is let go of even
        if removing the snapshot or the record then fails (raised; a repeat only removes them).

        A sandbox its controller or the store no longer knows is fine: shutdown is idempotent
        (Go's ``Sandbox.Shutdown`` is not; this is the handle's clean-up, which ``async with
        client.sandbox(...)`` runs). Any other error is raised.

        The members are found by reading every container record of the namespace (containerd
        filters on no ``sandbox`` field), unless this handle started the sandbox and its
        controller said then that its own Shutdown deletes them (the isolating sandboxer
        does): they are left to it, and looked for here only should it no longer know the
        sandbox.
        """
        if not self._ended:
            if self._output is None:
                await self._end(timeout)
            else:
                await self._output.finish(functools.partial(self._end, timeout))
            self._ended = True
        await self._forget(timeout)

    async def _end(self, timeout: Timeout) -> None:
        """Delete the members and shut the sandbox down with its controller."""
        if not self._members_removed:
            await self._containers.delete_members(self.id, timeout=timeout)
        try:
            await self._controller.shutdown(self.id, timeout=timeout)
        except NotFoundError:
            if self._members_removed:  # not its Shutdown that ran: what it would have done
                await self._containers.delete_members(self.id, timeout=timeout)

    async def _forget(self, timeout: Timeout) -> None:
        """Remove the image's root and the store record of a sandbox shut down."""
        labels = self._info.labels  # an image's root goes once its task is gone
        await remove_sandbox_root(self._containers.rootfs, self.id, labels, timeout=timeout)
        with contextlib.suppress(NotFoundError):
            await self._store.delete(self.id, timeout=timeout)

    async def labels(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> dict[str, str]:
        """The sandbox's labels, read fresh from the store."""
        info = await self._store.get(self.id, timeout=timeout)
        return dict(info.labels)

    async def set_labels(
        self, labels: Mapping[str, str], *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> dict[str, str]:
        """Set (or, with an empty value, remove) the labels given and keep all others.

        Only the paths ``labels.<key>`` are written, so two writers of different keys do
        not lose each other's change. Returns the labels as stored (read afresh, without a
        write, when ``labels`` is empty).
        """
        edits = checked_labels(labels, self.id)
        if not edits:
            # An empty field list would have the store rewrite the whole record.
            return await self.labels(timeout=timeout)
        info = await self.update(
            labels=edits, fields=[f"labels.{k}" for k in edits], timeout=timeout
        )
        return dict(info.labels)

    async def set_lifetime(
        self, seconds: float, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> datetime:
        """End the sandbox ``seconds`` from now instead of at its deadline (later or
        sooner, as e2b's ``set_timeout``; a sandbox made without ``lifetime=`` gets one);
        returns the new deadline, tz-aware, as its sandboxer enforces it.

        The sandboxer is told first (an Update); once its Status shows the deadline in
        force, the record's label is changed, so that other clients see it. TypeError or
        ValueError naming ``lifetime`` for a bad value; FailedPreconditionError (and no
        label changed) for a sandboxer that does not enforce deadlines.
        """
        label = _lifetime.deadline_text(
            utcnow() + timedelta(seconds=_lifetime.checked_seconds(seconds, "lifetime"))
        )
        status = await self._set_limit(_lifetime.DEADLINE_LABEL, label, timeout)
        assert status.deadline is not None  # enforced_limits checked it is there
        return status.deadline

    async def set_idle_timeout(
        self, seconds: float, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> float:
        """End the sandbox once no exec has run in it for ``seconds`` instead of its idle
        timeout (longer or shorter; a sandbox made without ``idle_timeout=`` gets one),
        counted from the last exec's end as before; returns the timeout in force (seconds),
        as its sandboxer shows it. Errors as :meth:`set_lifetime`, naming ``idle_timeout``.
        """
        label = repr(_lifetime.checked_seconds(seconds, "idle_timeout"))
        status = await self._set_limit(_lifetime.IDLE_TIMEOUT_LABEL, label, timeout)
        return float(status.info["idle_timeout"])

    async def _set_limit(self, key: str, label: str, timeout: Timeout) -> SandboxStatus:
        """Tell the sandboxer the time limit label ``key`` is ``label`` (an Update); once its
        Status shows it in force, change the record's label; that Status."""
        edits, fields = {key: label}, [f"labels.{key}"]
        draft = dataclasses.replace(self._info, labels=edits)
        await self._controller.update(draft, fields, timeout=timeout)
        status = await self.status(timeout=timeout)
        _lifetime.enforced_limits(self.id, status.info, edits, self.sandboxer)
        await self.update(labels=edits, fields=fields, timeout=timeout)
        return status

    async def status(
        self, *, verbose: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> SandboxStatus:
        """The sandbox's runtime state as its controller reports it."""
        return await self._controller.status(self.id, verbose=verbose, timeout=timeout)

    async def network(
        self, *, check: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> SandboxNetwork:
        """What the sandbox got of its network, from its controller's Status: its mode, its
        addresses and its published ports with their host ports (only the mode once it has
        stopped). An answer without it (a sandboxer that does not tell), or that does not
        parse, is an InternalError.

        With ``check``, the sandboxer also runs CNI's CHECK on a running sandbox's network
        (a verbose Status): its outcome is in ``.check`` (None when not given)."""
        status = await self.status(verbose=check, timeout=timeout)
        return network_of(status, check=check)

    async def platform(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Platform:
        """The platform the sandbox runs on."""
        return await self._controller.platform(self.id, timeout=timeout)

    async def metrics(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> SandboxMetrics:
        """One metrics sample from the controller, decoded (see :class:`SandboxMetrics`).

        A sample that carries nothing, or nothing this client decodes, is an InternalError
        naming its type.
        """
        return await self._controller.metrics(self.id, timeout=timeout)

    async def update(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        extensions: Mapping[str, AnyLike] | None = None,
        fields: Sequence[str] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> SandboxInfo:
        """Change the store record and return it as stored.

        Without ``fields``, the fields given (``labels``, ``extensions``) are replaced whole;
        with them, only those paths change (``labels.<key>``, ``extensions.<key>``, ...). With
        nothing to change (an empty ``fields``, or none of them given) nothing is written and
        the record held is returned.
        """
        draft, paths = record_update(self._info, labels, extensions, fields)
        if not paths:  # nothing to write
            return self._info
        self._info = await self._store.update(draft, paths, timeout=timeout)
        return self._info

    async def new_container(
        self,
        container_id: str,
        *,
        runtime: str | None = None,
        join_namespaces: bool = True,
        writable_root: bool = False,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        **options: Unpack[ContainerOptions],
    ) -> Container:
        """Create a container that belongs to this sandbox (see ``Client.new_container``).

        It runs under the sandbox's runtime unless told otherwise, and its task goes to the
        sandbox's shim. With ``join_namespaces`` (the default) it joins the network, IPC and
        UTS namespaces of the sandbox's process, as a pod's containers do; that needs the
        sandbox started (FailedPreconditionError otherwise). When that process runs in a user
        namespace of its own (the isolating sandboxer's default), the container joins it too,
        unless its spec has one of its own: its root is then idmapped to look root-owned
        inside (FailedPreconditionError, naming why, where it cannot be). Where its spec says
        nothing of them, it gets the default seccomp profile and a cgroup nested under the
        sandbox's, so that it counts against the sandbox's limits (see ``docs/security.md``).
        A member of a gVisor sandbox runs in the sandbox's gVisor kernel, under its runtime,
        with what runsc cannot give it refused by name (see ``docs/gvisor.md``). In a sandbox
        of the isolating sandboxer, which bounds its own writable root but cannot bound a
        member's, a member's ``image`` root is read-only (with a private ``/tmp``) and a spec
        with a writable root is refused, unless ``writable_root`` asks for it: it is then the
        snapshot's layer on containerd's disk, unbounded (see ``_members._root``). A
        container made while its sandbox shuts down is deleted and refused
        (FailedPreconditionError; see ``_members._ending``). A container that joins the
        sandbox's namespaces names its process (pid and start time) in its spec: should that
        pid name another process by the container's ``new_task``, the container is deleted
        and refused (FailedPreconditionError; see ``_members._joined``).
        """
        check_options(options)
        status = functools.partial(self.status, timeout=timeout)
        request = await member_request(
            container_id,
            self._info,
            store=self._containers.store,
            known_pid=self._pid,
            known_started=self._pid_started,
            status=status,
            runtime=runtime,
            join_namespaces=join_namespaces,
            writable_root=writable_root,
            options=options,
            timeout=timeout,
        )
        return await self._containers.create(
            request,
            timeout=timeout,
            confirm=lambda _: confirm_member(self.id, container_id, status, request.joined),
        )

    async def list_containers(
        self, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> list[ContainerInfo]:
        """The records of the containers that belong to this sandbox (the sandbox's own
        aside), as ``Client.list_containers`` gives records; ``Client.container_handle``
        makes a handle of one."""
        members = await self._containers.members(self.id, timeout=timeout)
        return [c.metadata for c in members if c.id != self.id]

    async def task(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Task:
        """The sandbox's own task: the task of the container whose id is the sandbox's.

        containerd's ``podsandbox`` controller makes one (its pause container), as does this
        project's sandboxer; NotFoundError, saying so, when this sandbox's controller made
        none.
        """
        return (await self._own_task(timeout))[1]

    async def _own_task(self, timeout: Timeout) -> tuple[Container, Task]:
        try:
            return await self._containers.load_with_task(self.id, timeout=timeout)
        except NotFoundError:
            raise NotFoundError(
                f"sandbox {go_quote(self.id)} has no task of its own to exec into: its controller "
                f"{go_quote(self.sandboxer)} made no container and task with the sandbox's id"
            ) from None

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
        """Run ``args`` in the sandbox (an exec into its own task) and return its output
        and exit code; see ``Task.run``. ``timeout`` covers finding the task too."""

        async def own_task() -> tuple[Task, Mapping[str, Any] | None]:
            container, task = await self._own_task(USE_CLIENT_DEFAULT)
            return task, container.metadata.spec  # just read: no second Containers.Get

        return await run_in_task(
            own_task,
            args,
            input=input,
            timeout=timeout,
            cwd=cwd,
            env=env,
            user=user,
            max_output=max_output,
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
        """Start ``args`` in the sandbox (an exec into its own task); see ``Task.spawn``."""
        task = await self.task(timeout=timeout)
        return await task.spawn(
            *args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            user=user,
            terminal=terminal,
            timeout=timeout,
        )
