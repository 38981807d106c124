"""An in-process stand-in for containerd 2.x's sandbox Store, sandbox Controller,
Containers, Tasks, Events, Version and Introspection services, answering with the daemon's
gRPC codes and messages.

The parts: :mod:`._filters` (containerd's filter language), :mod:`._records` (the records
and their validation), :mod:`._services` (the sandbox and containers services),
:mod:`._tasks` (the Tasks service) over :mod:`._taskstate`, :mod:`._hostproc`,
:mod:`._stdio` and :mod:`._pump` (host processes and their streams), :mod:`._sandboxtasks`
(a started sandbox as a task), :mod:`._exchange` and :mod:`._eventservice` (the events),
:mod:`._taskevents` (the tasks' events),
:mod:`._introspection` (Version and Introspection), :mod:`._namespaces` (a namespace's
labels), :mod:`._releases` (the releases it can answer as); for images
:mod:`._imageservice`, :mod:`._contentstore`, :mod:`._leases`, :mod:`._snapshots`,
:mod:`._streams` and :mod:`._transferservice` (with :mod:`._archives` and :mod:`._layers`),
:mod:`._collector` (the garbage collector) and :mod:`._sandboxroot`;
:class:`FakeContainerd` puts them together and serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

from grpclib.const import Handler

from .._models import AnyValue
from .._plumbing._version import ContainerdVersion
from .._serve._calls import CallLog
from .._serve._server import UnixServer, bind_request, namespace_error
from ..events import EventPayload
from ..sandboxer import ProcessSandboxer, SandboxController
from ._collector import Collector
from ._contentstore import BlobStore, ContentService
from ._eventservice import EventsService
from ._exchange import DEFAULT_EVENT_BACKLOG, Exchange, payload_to_any, topic_problem
from ._imageservice import ImageRecords, ImagesService
from ._imagestate import ImageState
from ._introspection import IntrospectionService, VersionService
from ._leases import LeasesService, LeaseTable
from ._namespaces import NamespacesService
from ._records import Records
from ._releases import DEFAULT_RELEASE, emulated_release
from ._sandboxtasks import SandboxTasks
from ._services import ContainersService, ControllerRouter, StoreService
from ._snapshots import SnapshotsService, SnapshotTable
from ._streams import StreamingService, StreamTable
from ._taskevents import TaskEvents
from ._tasks import TasksService
from ._taskstate import TaskTable
from ._times import StandInTimes
from ._transferservice import TransferService
from ._workers import Workers

__all__ = ("FakeContainerd",)


class FakeContainerd:
    """containerd's sandbox Store, sandbox Controller, Containers, Tasks, Events, Version,
    Introspection, Images, Content, Leases, Snapshots, Transfer, Streaming and Namespaces
    (labels, List, Delete), in process.

    Serves them with grpclib on a unix socket (:attr:`address`) in a fresh temporary folder,
    or at ``path``. It answers as containerd release ``version``: a release line (``"2.0"``
    to ``"2.4"``, each as its newest release, 2.3.4 for ``"2.3"``) or a version
    (``"v2.2.4"``, answered as its line); by default ``"2.3"``, the newest line with a
    release. Its Version service reports that version (``2.3.4+sandboxclient.testing``) and
    its messages are that line's where lines differ (see the releases module of this
    package). Records live in memory, per namespace, and are validated and refused with
    the gRPC codes and messages containerd answers (seen on 2.1.9, read in the sources of
    the others). The requests that crash that
    daemon are refused with INVALID_ARGUMENT instead. Controller calls are forwarded to
    ``controller`` when their ``sandboxer`` is one of ``sandboxers``: by default a
    :class:`~sandboxclient.sandboxer.ProcessSandboxer` that runs each sandbox as a host
    process and is closed with the stand-in. It isolates nothing and, unlike ``--isolation
    none``, does not refuse what a spec asks beyond ``process.args``/``env``/``cwd``, so
    code written for the isolating sandboxer runs unchanged here: a stand-in for tests,
    never a boundary. Platform answers
    UNIMPLEMENTED, as containerd 2.1's controller service does.

    Images come in through an import (``Client.import_image`` of an OCI archive) and go out
    through an export; a pull or push is UNIMPLEMENTED (it has no registry client). Their
    content, leases and snapshots live in a private directory removed when it closes; its
    snapshotter answers to ``overlayfs`` and keeps each snapshot as a directory mounted as
    one ``bind``, which a task or sandbox rooted on it (``image=``) finds its program and
    working directory in (see the modules of this package for what is served and how).

    Tasks run as plain processes on this host, without any isolation (the host-process
    module of this package says what of the OCI spec is acted on), their
    streams opened and copied as containerd's runc shim does. With the default controller,
    a started sandbox's process is the task of a container with the sandbox's id (made if
    needed), as a pod's pause container is: ``Sandbox.run`` execs into it and the
    sandbox's containers can have tasks; they go when the sandbox stops and is shut down.
    With the default controller it keeps ``lifetime=`` and ``idle_timeout=`` too (see the
    times module of this package).

    The services publish the events containerd's publish for what they do (containers,
    tasks, the Controller's sandboxes; see their modules for what cannot be known here);
    those and the ones published (Publish, Forward, :meth:`publish`) go to Subscribe calls
    from every namespace, without replay. A subscriber that falls ``event_backlog`` events behind is
    dropped and its call ends with UNAVAILABLE (containerd queues for it without bound).
    Introspection lists its services and sandboxers. A route it does not serve is answered
    with UNIMPLEMENTED, as by containerd's gRPC server.

    Use it as an async context manager, or call :meth:`start` and :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        sandboxers: Iterable[str] = ("shim",),
        controller: SandboxController | None = None,
        path: str | None = None,
        event_backlog: int = DEFAULT_EVENT_BACKLOG,
        version: str | ContainerdVersion = DEFAULT_RELEASE,
    ) -> None:
        self._emulated = emulated_release(version)
        self._sandboxers = frozenset(sandboxers)
        self._owns_controller = controller is None
        self._controller: SandboxController = (
            controller if controller is not None else ProcessSandboxer(refuse_unenforced=False)
        )
        self._path = path
        self._tmpdir: str | None = None
        self._records = Records()
        self._images = ImageRecords()
        self._leases = LeaseTable()
        self._state_dir: str | None = None
        self._workers = Workers()
        self._blobs: BlobStore | None = None
        self._snapshots: SnapshotTable | None = None
        self._tasks = TaskTable()
        self._exchange = Exchange(event_backlog)
        self._sandbox_tasks = (
            SandboxTasks(self._records, self._tasks, self._controller)
            if self._owns_controller
            else None
        )
        self._times = StandInTimes(lambda: self.address) if self._owns_controller else None
        self._server: UnixServer | None = None
        self._socket_bound = False
        self._closed = False
        self._stalled = False
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._calls = CallLog()

    @property
    def address(self) -> str:
        """The path of the unix socket the stand-in listens on."""
        if self._path is None:
            raise RuntimeError("FakeContainerd is not started")
        return self._path

    @property
    def version(self) -> ContainerdVersion:
        """The containerd release the stand-in answers as (``2.3.4`` by default)."""
        return self._emulated.version

    @property
    def controller(self) -> SandboxController:
        """The controller Controller calls are forwarded to."""
        return self._controller

    @property
    def sandboxers(self) -> frozenset[str]:
        """The sandboxer names the controller answers to."""
        return self._sandboxers

    @property
    def stall(self) -> bool:
        """While True, every call waits before being handled (to test deadlines).

        Setting it back to False lets the waiting calls through.
        """
        return self._stalled

    @stall.setter
    def stall(self, value: bool) -> None:
        self._stalled = bool(value)
        if self._stalled:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    @property
    def late_shared_writer(self) -> bool:
        """While True, an exec's Start opens stderr's writer on the FIFO it shares with
        stdout (``stderr=STDOUT``) as late as containerd's runc shim may: once stdout's copy
        has ended and the event loop has gone round, failing Start as the shim does if the
        FIFO has no reader left (for processes that end at once; to test that a client does
        not lose stderr to that gap). False by default: writers open at once.
        """
        return self._tasks.late_shared_writer

    @late_shared_writer.setter
    def late_shared_writer(self, value: bool) -> None:
        self._tasks.late_shared_writer = bool(value)

    @property
    def crash_requests(self) -> int:
        """How many requests it refused that would have crashed containerd 2.1.9.

        A client must never send one; tests can assert this stays 0.
        """
        return self._records.crash_requests

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandbox store's records in ``namespace``, sorted."""
        return self._records.sandbox_ids(namespace)

    def container_ids(self, namespace: str) -> list[str]:
        """The ids of the container records in ``namespace``, sorted."""
        return self._records.container_ids(namespace)

    def image_names(self, namespace: str) -> list[str]:
        """The names of the image records in ``namespace``, sorted."""
        return sorted(self._images.of(namespace))

    def lease_ids(self, namespace: str) -> list[str]:
        """The ids of the leases in ``namespace``, sorted."""
        return self._leases.ids(namespace)

    def snapshot_keys(self, namespace: str) -> list[str]:
        """The keys (and committed names) of the snapshots in ``namespace``, sorted."""
        return self._snapshots.keys(namespace) if self._snapshots is not None else []

    def content_digests(self, namespace: str) -> list[str]:
        """The digests of the blobs ``namespace`` has in the content store, sorted."""
        return self._blobs.digests(namespace) if self._blobs is not None else []

    def task_ids(self, namespace: str) -> list[str]:
        """The container ids of the tasks in ``namespace``, sorted."""
        return [task.container_id for task in self._tasks.in_namespace(namespace)]

    @property
    def event_subscribers(self) -> int:
        """How many Subscribe calls are in place."""
        return self._exchange.subscribers

    async def wait_for_event_subscribers(self, count: int) -> None:
        """Return once exactly ``count`` Subscribe calls are in place."""
        await self._exchange.wait_for_subscribers(count)

    def publish(self, namespace: str, topic: str, event: EventPayload | AnyValue) -> None:
        """Publish an event as the daemon would: one the stand-in cannot know of itself (a
        ``/tasks/oom``, say: ``publish("default", "/tasks/oom", TaskOOM("c1"))``).

        ``event`` is one of the library's event records, or an ``AnyValue``. Raises
        ``ValueError`` for a namespace or topic containerd would refuse.
        """
        problem = topic_problem(topic)
        error = namespace_error(namespace)
        if error is not None or problem is not None:
            raise ValueError(error.message if error is not None else f"topic {topic!r}: {problem}")
        self._exchange.publish(topic, payload_to_any(event), namespace)

    def call_count(self, method: str) -> int:
        """How many calls of ``method`` have arrived so far (stalled ones included).

        ``method`` is the route's tail, ``"Controller/Wait"`` or ``"Store/Get"``, the method's
        name alone (``"Wait"``, which names it on every service), or the whole
        route (``"/containerd.services.sandbox.v1.Controller/Wait"``).
        """
        return self._calls.count(method)

    async def wait_for_call(self, method: str, count: int = 1) -> None:
        """Return once ``count`` calls of ``method`` (see :meth:`call_count`) have arrived.

        A call has arrived when the server has its request, before it is handled: the
        signal a test needs to act while the call is in flight.
        """
        await self._calls.wait_for(method, count)

    async def _arrive(self, route: str) -> None:
        self._calls.arrived(route)
        await self._unstalled.wait()

    def _bind(self, mapping: Mapping[str, Handler]) -> dict[str, Handler]:
        return {
            name: bind_request(
                handler, check_namespace=False, gate=functools.partial(self._arrive, name)
            )
            for name, handler in mapping.items()
        }

    async def start(self) -> Self:
        """Start serving; returns the stand-in itself."""
        if self._closed:
            raise RuntimeError("FakeContainerd is closed")
        if self._server is not None:
            raise RuntimeError("FakeContainerd is already started")
        if self._path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fake-containerd-")
            self._path = os.path.join(self._tmpdir, "containerd.sock")
        bind, exchange = self._bind, self._exchange
        task_events = TaskEvents(exchange, os.path.dirname(self._path))
        self._state_dir = state = tempfile.mkdtemp(prefix="fake-containerd-state-")
        blobs = self._blobs = BlobStore(state)
        snapshots = self._snapshots = SnapshotTable(state, self._leases, self._workers)
        streams = StreamTable()
        collector = Collector(blobs, snapshots, self._leases, self._images, self._records)
        collect = collector.collect
        server = UnixServer(
            [
                ContentService(blobs, bind),
                LeasesService(self._leases, bind, collect),
                SnapshotsService(snapshots, bind),
                StreamingService(streams, bind),
                TransferService(
                    directory=state,
                    streams=streams,
                    blobs=blobs,
                    images=self._images,
                    snapshots=snapshots,
                    events=exchange,
                    bind=bind,
                    collector=collector,
                ),
                StoreService(self._records, bind),
                ControllerRouter(
                    self._records,
                    bind,
                    self._controller,
                    self._sandboxers,
                    exchange,
                    self._sandbox_tasks,
                    wrap_start=self._emulated.start_wraps_errors,
                    times=self._times,
                    image_root=snapshots.root_of,
                ),
                ContainersService(self._records, bind, exchange, collect),
                ImagesService(self._images, self._records, bind, exchange, collect),
                NamespacesService(
                    self._records,
                    self._images,
                    bind,
                    exchange,
                    ImageState(blobs, snapshots, self._leases),
                ),
                TasksService(
                    self._records,
                    bind,
                    self._tasks,
                    task_events,
                    image_root=snapshots.root_of,
                ),
                EventsService(exchange, self._records, bind),
                VersionService(bind, self._emulated.reported),
                IntrospectionService(self._sandboxers, bind),
            ]
        )
        try:
            await server.start_unix(self._path)
        except BaseException:
            await self._release()
            raise
        self._socket_bound = True
        self._server = server
        return self

    async def aclose(self) -> None:
        """Stop serving, cancel the calls in progress, kill every task's processes (and
        close every stream held for them) and close an owned controller.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._unstalled.set()
        server, self._server = self._server, None
        try:
            if server is not None:
                await server.shutdown()
        finally:
            await self._release()

    async def _release(self) -> None:
        """End the tasks, close an owned controller, then remove the socket and folder this
        object made."""
        try:
            try:
                if self._times is not None:
                    await self._times.aclose()
                if self._sandbox_tasks is not None:
                    await self._sandbox_tasks.aclose()
            finally:
                await self._tasks.aclose()
        finally:
            try:
                if self._owns_controller:
                    await self._controller.aclose()
            finally:
                try:
                    await self._workers.aclose()  # no unpack still writes in the directory
                finally:
                    await self._workers.run(lambda stop: self._remove_files())  # off the loop

    def _remove_files(self) -> None:
        if self._path is not None and self._socket_bound:
            self._socket_bound = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
