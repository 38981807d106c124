"""The handle of one container, as Go's ``client.Container``: its record, and its task."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ._creation._create import may_have_landed
from ._facts._golang import go_quote
from ._files import Files
from ._io import ProcessIO
from ._members._joined import joined_process, refuse_unjoined
from ._members._userns import rootfs_bind
from ._models import ContainerInfo, Mount
from ._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._plumbing._container_store import ContainerStore
from ._plumbing._rootfs import RootFS
from ._plumbing._stream_args import StreamArg, plan_io
from ._plumbing._wait import WaitRegistry
from ._process import Process
from ._process_models import ProcessStatus, TaskState
from ._task import Task
from ._wire._convert import mount_to_pb, process_status_from_pb
from ._wire._pb import tasks_pb
from .errors import (
    ContainerdError,
    FailedPreconditionError,
    NotFoundError,
)

__all__ = ("Container", "task_status")


async def task_status(connection: Connection, container_id: str, timeout: Timeout) -> ProcessStatus:
    """Container ``container_id``'s task as it is (one Tasks.Get); NotFoundError if none."""
    resp = await connection.call(
        connection.stub(tasks_pb.TasksStub).get,
        tasks_pb.GetRequest(container_id=container_id),
        timeout,
        idempotent=True,
    )
    if resp.process is None:
        raise NotFoundError(f"container {go_quote(container_id)} has no task")
    return process_status_from_pb(resp.process)


class Container:
    """A container known to containerd, bound to the Client that made or loaded it.

    ``metadata`` is the record as of creation or loading (``info()`` reads it afresh).
    """

    def __init__(
        self,
        connection: Connection,
        waits: WaitRegistry,
        store: ContainerStore,
        rootfs: RootFS,
        info: ContainerInfo,
    ) -> None:
        self._connection = connection
        self._waits = waits
        self._store = store
        self._rootfs = rootfs
        self._info = info

    def __repr__(self) -> str:
        sandbox = f" sandbox={self._info.sandbox_id!r}" if self._info.sandbox_id else ""
        return f"<Container {self._info.id!r}{sandbox}>"

    @property
    def id(self) -> str:
        """The container id."""
        return self._info.id

    @property
    def metadata(self) -> ContainerInfo:
        """The record this handle holds."""
        return self._info

    @property
    def sandbox_id(self) -> str:
        """The sandbox the container belongs to ("" for none)."""
        return self._info.sandbox_id

    async def info(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> ContainerInfo:
        """The record, read afresh (and kept as ``metadata``)."""
        self._info = await self._store.get(self.id, timeout=timeout)
        return self._info

    async def labels(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> dict[str, str]:
        """The labels, read afresh."""
        return dict((await self.info(timeout=timeout)).labels)

    async def set_labels(
        self, labels: Mapping[str, str], *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> dict[str, str]:
        """Set (or, with an empty value, remove) the labels given and keep all others.

        Only their field paths (``labels.<key>``) are written, so concurrent writers of
        other keys keep their changes. Returns the labels as stored (read afresh, without a
        write, when ``labels`` is empty).
        """
        self._info = await self._store.set_labels(self.id, dict(labels), timeout=timeout)
        return dict(self._info.labels)

    async def spec(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> dict[str, Any] | None:
        """The OCI runtime spec, read afresh (yours to change), or None if it has none."""
        return (await self.info(timeout=timeout)).spec

    async def _spec_now(self) -> Mapping[str, Any] | None:
        return await self.spec()

    def _task(self, io: ProcessIO | None = None, pid: int = 0) -> Task:
        return Task(self._connection, self._waits, self.id, spec=self._spec_now, io=io, pid=pid)

    async def new_task(
        self,
        *,
        stdin: StreamArg = None,
        stdout: StreamArg = None,
        stderr: StreamArg = None,
        terminal: bool = False,
        rootfs: Sequence[Mount] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Task:
        """Create the container's task (not started; ``await task.start()``).

        The streams are what ``asyncio.create_subprocess_exec`` takes (``PIPE``,
        ``DEVNULL``, ``STDOUT`` for stderr, None) or, for stdout and stderr, a log file;
        ``terminal=True`` gives the process a pty (its spec must say
        ``process.terminal``, as ``oci.with_tty()`` does). ``rootfs`` (Go's
        ``WithRootFS``) gives the mounts the shim makes the task's root filesystem of, in
        place of the container's snapshot or its spec's ``root.path``: the spec's
        ``root.path`` must then be relative (``"rootfs"``, the bundle's directory).
        """
        plan = plan_io(stdin, stdout, stderr, terminal=terminal)
        info = self._info
        spec = info.spec or {}
        if bool((spec.get("process") or {}).get("terminal")) != terminal:
            raise ValueError(
                f"container {go_quote(self.id)}: terminal={terminal} but its spec's "
                "process.terminal says otherwise (oci.with_tty() sets it)"
            )
        mounts: list[Mount] = []
        if rootfs is not None:
            mounts = list(rootfs)
            if not mounts or not all(isinstance(m, Mount) for m in mounts):
                raise TypeError("rootfs must be a non-empty sequence of Mount")
        elif info.snapshotter and info.snapshot_key:
            mounts = await self._rootfs.mounts(info.snapshotter, info.snapshot_key, timeout=timeout)
        elif (bind := rootfs_bind(spec)) is not None:
            mounts = bind  # a member's host directory, idmapped for its user namespace
        else:
            root = str((spec.get("root") or {}).get("path") or "")
            if not os.path.isabs(root):
                raise ValueError(
                    f"container {go_quote(self.id)} has no root filesystem: it has no snapshot and "
                    f"its spec's root.path {go_quote(str(root))} is not an absolute directory"
                )
        joined = joined_process(spec, self.id)  # the sandbox process it joins, if any
        await refuse_unjoined(joined, self.id, info.sandbox_id, self._undo)
        io = await ProcessIO.open(plan, self.id)
        try:
            resp = await self._connection.call(
                self._connection.stub(tasks_pb.TasksStub).create,
                tasks_pb.CreateTaskRequest(
                    container_id=self.id,
                    rootfs=[mount_to_pb(m) for m in mounts],
                    stdin=io.stdin_path,
                    stdout=io.stdout_path,
                    stderr=io.stderr_path,
                    terminal=terminal,
                ),
                timeout,
            )
        except BaseException as exc:
            io.close()
            if may_have_landed(exc):
                await self._connection.run_shielded(self._forget_task())
            raise
        try:  # runc has opened the namespaces' paths: they were that process's if it lived on
            await refuse_unjoined(joined, self.id, info.sandbox_id, self._undo)
        except BaseException:
            io.close()
            raise
        await io.shim_attached()  # the shim has its ends now: remove the FIFOs
        return self._task(io, resp.pid)

    async def _undo(self) -> None:
        """Delete this container, its task with it, as clean-up that runs to its end."""
        await self._connection.run_shielded(self.delete(force=True, timeout=10.0))

    async def _forget_task(self) -> None:
        with contextlib.suppress(ContainerdError):
            await self._connection.call(
                self._connection.stub(tasks_pb.TasksStub).delete,
                tasks_pb.DeleteTaskRequest(container_id=self.id),
                10.0,
            )

    @property
    def files(self) -> Files:
        """Files in the container, through execs into its running task (see :class:`Files`)."""

        async def spawn(*args: str, **options: Any) -> Process:
            try:
                task = await self.task()
            except NotFoundError as exc:
                raise NotFoundError(
                    f"container {go_quote(self.id)} has no task: its files are reached by an "
                    "exec into its running task"
                ) from exc
            return await task.spawn(*args, **options)

        return Files(spawn, f"container {go_quote(self.id)}")

    async def task(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Task:
        """The container's task as it is (made by any client); NotFoundError if none.

        Its streams are not reachable from here: a task's FIFOs belong to the client that
        made it and are gone from the file system once its shim holds them.
        """
        return self._task(pid=(await task_status(self._connection, self.id, timeout)).pid)

    async def delete(self, *, force: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Delete the container record and its snapshot.

        A container with a task is refused (FailedPreconditionError) unless ``force=True``,
        which kills and deletes the task first. Not idempotent, as Go's ``Container.Delete``
        is not: a container already gone raises NotFoundError.
        """
        try:
            status = await task_status(self._connection, self.id, timeout)
        except NotFoundError:
            status = None
        if status is not None:
            if not force:
                raise FailedPreconditionError(
                    f"container {go_quote(self.id)} has a task: delete it first, or pass force=True"
                )
            # A task the Get found stopped is deleted at once: no kill, no second look, unless
            # the delete finds a live one (another's, made since): that one is killed first.
            task = self._task(pid=status.pid)
            with contextlib.suppress(NotFoundError):
                if status.state is not TaskState.STOPPED:
                    await task.delete(force=True, timeout=timeout)
                else:
                    try:
                        await task.delete(timeout=timeout)
                    except FailedPreconditionError:
                        await task.delete(force=True, timeout=timeout)
        await self._store.delete(self.id, timeout=timeout)
        info = self._info
        if info.snapshotter and info.snapshot_key:
            await self._rootfs.remove(info.snapshotter, info.snapshot_key, timeout=timeout)
