"""An isolated sandbox's container and task, made and unmade through containerd.

The sandboxer is a client of containerd like any other: this library's own ``Client``, one
per namespace, on containerd's socket. A sandbox is a container whose id is the sandbox's, in
the caller's namespace, under ``io.containerd.runc.v2``, labelled as the sandboxer's
(:data:`OWNER_LABEL`), and its task: runc runs it in the namespaces, root, cgroup and
security settings of its spec, and its shim keeps it (and its exit status) whatever becomes
of the sandboxer. Containers created with ``sandbox=<id>`` have their tasks sent by
containerd to that task's shim: the sandbox's members.

Errors come back as the gRPC errors containerd's controllers answer: UNAVAILABLE (saying so)
when containerd cannot be reached, FAILED_PRECONDITION for a Start that runc refused, with
runc's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

from grpclib.exceptions import GRPCError

from .._client import Client
from .._container import Container
from .._facts._golang import go_quote
from .._models import AnyValue, ContainerInfo, ExitStatus, Mount
from .._plumbing._connection import Connection, run_to_end
from .._plumbing._container_store import ContainerStore
from .._process_models import ProcessStatus
from .._sandbox_metrics import SandboxMetrics
from .._serve._refusals import already_exists, failed_precondition, to_grpc, unavailable
from .._task import Task
from ..errors import (
    AlreadyExistsError,
    ContainerdError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
)
from ._cgroup2 import SandboxCgroups
from ._output import ClientStreams, task_streams
from ._reap import delete_exited
from ._stages import mark

__all__ = ("OWNER_LABEL", "RUNC", "PodRuntime")

RUNC: Final = "io.containerd.runc.v2"
"""The runtime every isolated sandbox runs under."""

OWNER_LABEL: Final = "io.sandboxclient.sandboxer/sandbox"
"""The label (valued with the sandbox's id) that marks a container as a sandbox's own."""

_CLEANUP_TIMEOUT: Final = 30.0
_log = logging.getLogger("sandboxclient.sandboxer")
_T = TypeVar("_T")


async def shielded(work: Awaitable[_T]) -> _T:
    """Run ``work`` to its end however often the caller is cancelled (then re-raise that)."""
    return await run_to_end(asyncio.ensure_future(work))


class PodRuntime:
    """containerd, as the isolating sandboxer uses it: one Client per namespace."""

    def __init__(
        self, address: str, *, timeout: float = 30.0, cgroups: SandboxCgroups | None = None
    ) -> None:
        self.address = address
        self._timeout = timeout
        self.cgroups = cgroups
        """The sandboxes' parent cgroups on cgroup v2 (see :mod:`._cgroup2`); None: none."""
        self._clients: dict[str, Client] = {}
        self._records: dict[str, tuple[Connection, ContainerStore]] = {}
        """Per namespace, a connection whose container records are read for deleting them
        (:meth:`ContainerStore.list_brief`), beside the namespace's Client."""
        self._launched: dict[tuple[str, str], Task] = {}
        """The task each :meth:`launch` started, for the first :meth:`wait` on it: the
        sandbox's watch then waits at once, without loading it again (Containers.Get,
        Tasks.Get), which is what hears a first command's quick exit sooner."""
        self._closed = False

    def _check_open(self) -> None:
        # A connection made once aclose() has taken the tables would never be closed.
        if self._closed:
            raise unavailable("the sandbox controller is closed")

    def client(self, namespace: str) -> Client:
        """The Client of ``namespace`` (made on first use; it connects on its first call).
        Once :meth:`aclose` has run, UNAVAILABLE."""
        found = self._clients.get(namespace)
        if found is None:
            self._check_open()
            found = self._clients[namespace] = Client(
                self.address, namespace=namespace, timeout=self._timeout
            )
        return found

    def _records_of(self, namespace: str) -> tuple[Connection, ContainerStore]:
        found = self._records.get(namespace)
        if found is None:
            self._check_open()
            connection = Connection(self.address, namespace=namespace, timeout=self._timeout)
            found = self._records[namespace] = (connection, ContainerStore(connection))
        return found

    async def _brief_records(self, namespace: str) -> list[ContainerInfo]:
        """Every container record of ``namespace``, read for deleting (one Containers.List)."""
        return await self._records_of(namespace)[1].list_brief()

    def _unreachable(self, exc: ContainerdError) -> GRPCError:
        return unavailable(f"the sandboxer cannot reach containerd ({exc})")

    def _answer(self, exc: ContainerdError) -> GRPCError:
        if isinstance(exc, UnavailableError):
            return self._unreachable(exc)
        return to_grpc(exc)

    async def launch(
        self,
        namespace: str,
        sandbox_id: str,
        spec: dict[str, Any],
        rootfs: Sequence[Mount],
        output: ClientStreams | str,
        runtime_options: AnyValue | None = None,
        before_start: Callable[[int], Awaitable[None]] | None = None,
    ) -> int:
        """Create the sandbox's container (with ``runtime_options``, runc's) and task, its
        output to ``output`` (the client's FIFOs, or a log FIFO's path), start it; its pid.
        ``before_start`` is given the created task's pid before its process runs (its
        namespaces exist then: the network is set up in them); it marks its own stages.

        On cgroup v2 the sandbox's parent cgroup is made, with its limits, once its
        container is (:meth:`._cgroup2.SandboxCgroups.prepare`). Whatever fails, the task,
        container and parent cgroup made are removed before the error is raised, even if
        the caller is cancelled; that deletion may fail too (containerd gone meanwhile), so
        a caller that must know nothing is left asks :meth:`remove`.
        """
        client = self.client(namespace)
        try:
            container = await client.new_container(
                sandbox_id,
                spec=spec,
                labels={OWNER_LABEL: sandbox_id},
                runtime=RUNC,
                runtime_options=runtime_options,
            )
        except AlreadyExistsError:
            raise already_exists(
                f"container {go_quote(sandbox_id)} (the sandbox needs its id for its own "
                f"container) in namespace {go_quote(namespace)}"
            ) from None
        except UnavailableError as exc:
            raise self._unreachable(exc) from None
        except ContainerdError as exc:
            raise self._start_failed(sandbox_id, exc) from None
        mark("containerd: Containers.Create")
        try:
            if self.cgroups is not None and self.cgroups.prepare(namespace, sandbox_id, spec):
                mark("cgroup v2: the sandbox's parent cgroup and its limits")
            streams = task_streams(output)  # the client's FIFOs, or the log's
            task = await container.new_task(**streams, rootfs=list(rootfs) or None)
            mark("containerd: Tasks.Create (shim, runc create)")
            if before_start is not None:
                await before_start(task.pid)
            pid = await task.start()
            mark("containerd: Tasks.Start (runc start)")
            self._launched[(namespace, sandbox_id)] = task
            return pid
        except BaseException as exc:
            await shielded(self._undo(container))
            if self.cgroups is not None:  # one still populated stays noted, for remove()
                self.cgroups.remove(namespace, sandbox_id)
            if isinstance(exc, UnavailableError):
                raise self._unreachable(exc) from None
            if isinstance(exc, ContainerdError):
                raise self._start_failed(sandbox_id, exc) from None
            raise

    def _start_failed(self, sandbox_id: str, exc: ContainerdError) -> GRPCError:
        return failed_precondition(f"failed to start sandbox {go_quote(sandbox_id)}: {exc}")

    async def _undo(self, container: Container) -> None:
        with contextlib.suppress(ContainerdError):  # the caller checks with remove()
            await container.delete(force=True, timeout=self._timeout or _CLEANUP_TIMEOUT)

    async def _own_container(self, namespace: str, sandbox_id: str) -> Container | None:
        """The sandbox's container, if there is one and it is the sandboxer's."""
        try:
            container = await self.client(namespace).load_container(sandbox_id)
        except NotFoundError:
            return None
        except ContainerdError as exc:
            raise self._answer(exc) from None
        if container.metadata.labels.get(OWNER_LABEL) != sandbox_id:
            return None
        return container

    async def _task(self, namespace: str, sandbox_id: str) -> Task | None:
        container = await self._own_container(namespace, sandbox_id)
        if container is None:
            return None
        try:
            return await container.task()
        except NotFoundError:
            return None
        except ContainerdError as exc:
            raise self._answer(exc) from None

    async def status(self, namespace: str, sandbox_id: str) -> ProcessStatus | None:
        """The sandbox task's status, or None when it has no task (any more)."""
        task = await self._task(namespace, sandbox_id)
        if task is None:
            return None
        try:
            return await task.status()
        except NotFoundError:
            return None
        except ContainerdError as exc:
            raise self._answer(exc) from None

    async def wait(self, namespace: str, sandbox_id: str) -> ExitStatus | None:
        """Wait for the sandbox task's exit; None when it has no task."""
        task = self._launched.pop((namespace, sandbox_id), None)
        if task is None:
            task = await self._task(namespace, sandbox_id)
        if task is None:
            return None
        return await task.wait_exit()

    async def kill(self, namespace: str, sandbox_id: str, signum: int, *, all: bool) -> None:
        """Signal the sandbox's task (``all``: every process of it); a task that has
        stopped, or that is gone, is fine."""
        task = await self._task(namespace, sandbox_id)
        if task is None:
            return
        try:
            await task.send_signal(signum, all_processes=all)
        except (NotFoundError, FailedPreconditionError):
            pass
        except ContainerdError as exc:
            raise self._answer(exc) from None

    async def cleared(self, namespace: str, sandbox_id: str) -> bool:
        """Whether the sandbox's containers are provably gone (removed now if need be,
        shielded from cancellation); a failure to remove them is logged."""
        try:
            await shielded(self.remove(namespace, sandbox_id))
        except GRPCError as exc:
            _log.warning(
                "sandbox %s: a failed Start may have left its container: %s",
                sandbox_id,
                exc.message,
            )
            return False
        return True

    async def containers(self, namespace: str) -> list[ContainerInfo]:
        """Every container record of ``namespace`` (one Containers.List), read for what
        deleting them needs (``_wire._brief``)."""
        try:
            return await self._brief_records(namespace)
        except ContainerdError as exc:
            raise self._answer(exc) from None

    async def remove(
        self,
        namespace: str,
        sandbox_id: str,
        *,
        found: Sequence[ContainerInfo] | None = None,
        exited: bool = False,
    ) -> None:
        """Delete the sandbox's members (killing their tasks; all at once), then its own task
        and container, then its parent cgroup on v2; what is gone already is fine. ``found``:
        the namespace's container records, read already (by :meth:`containers`); ``exited``:
        whether its own task was heard to exit (then deleted without a Tasks.Get first)."""
        self._launched.pop((namespace, sandbox_id), None)
        client = self.client(namespace)
        try:
            if found is None:  # the members, and its own container's record
                found = await self._brief_records(namespace)
                mark("containerd: Containers.List")
            members = [c for c in found if c.sandbox_id == sandbox_id and c.id != sandbox_id]
            await _all_of(_deleted(client.container_handle(c).delete(force=True)) for c in members)
            own = next((c for c in found if c.id == sandbox_id), None)
            if own is not None and own.labels.get(OWNER_LABEL) == sandbox_id:
                handle = client.container_handle(own)
                if exited:
                    await _deleted(delete_exited(*self._records_of(namespace), handle))
                else:
                    await _deleted(handle.delete(force=True))
                mark(f"containerd: {'' if exited else 'Tasks.Get, '}Tasks.Delete (runc delete, "
                     "the shim's exit), Containers.Delete")  # fmt: skip
            if self.cgroups is not None and self.cgroups.remove(namespace, sandbox_id):
                mark("cgroup v2: the sandbox's parent cgroup removed")
        except ContainerdError as exc:
            raise self._answer(exc) from None

    async def spec(self, namespace: str, sandbox_id: str) -> dict[str, Any] | None:
        """The spec of the sandbox's container, as it was made; None without one."""
        container = await self._own_container(namespace, sandbox_id)
        return None if container is None else container.metadata.spec

    async def metrics(self, namespace: str, sandbox_id: str) -> SandboxMetrics | None:
        """The task's cgroup statistics as a :class:`SandboxMetrics`; None without a task.

        A sample the client cannot decode is answered as the client's InternalError, INTERNAL.
        """
        task = await self._task(namespace, sandbox_id)
        if task is None:
            return None
        try:
            sample = await task.metrics()
        except NotFoundError:
            return None
        except ContainerdError as exc:
            raise self._answer(exc) from None
        return sample

    async def stop(self, namespace: str, sandbox_id: str) -> None:
        """SIGKILL every process of the sandbox's task (the end of :meth:`kill`'s grace)."""
        await self.kill(namespace, sandbox_id, signal.SIGKILL, all=True)

    async def aclose(self) -> None:
        """Close every Client and connection (their waits end), all of them even if one
        fails (the first failure raised, the others logged); later calls that need a new one
        answer UNAVAILABLE (the controller lets every Start end first: ``._podstarts``)."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        records, self._records = list(self._records.values()), {}
        closing = [client.aclose() for client in clients]
        closing += [connection.aclose() for connection, _ in records]
        await _all_of(closing, "a connection to containerd failed to close either: %r")


async def _deleted(work: Awaitable[None]) -> None:
    """``work``, a deletion: what is gone already is fine."""
    with contextlib.suppress(NotFoundError):
        await work


async def _all_of(
    works: Iterable[Awaitable[None]], said: str = "a sandbox's member was not deleted either: %r"
) -> None:
    """Run ``works`` at once and wait for every one of them; then raise the first failure
    (the others logged with ``said``, so none goes unsaid)."""
    done = await asyncio.gather(*works, return_exceptions=True)
    failures = [result for result in done if isinstance(result, BaseException)]
    for other in failures[1:]:
        _log.warning(said, other)
    if failures:
        raise failures[0]
