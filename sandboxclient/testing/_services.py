"""The stand-in's gRPC services: sandbox Store, sandbox Controller and Containers.

Each is a thin layer over what its constructor is given: the records
(:class:`~._records.Records`), and for the Controller the controller calls are forwarded
to. ``bind`` wraps every handler before it is served (the stand-in's arrival count and
stall gate, see :func:`~sandboxclient._serve._server.bind_request`). The Containers service
publishes ``/containers/create|update|delete`` and the Controller ``/sandboxes/create``,
``/sandboxes/start`` and ``/sandboxes/exit`` (the last when a Wait call returns, for each
such call), as containerd's do; the sandbox Store publishes nothing, as containerd's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._golang import go_quote
from .._serve._server import current_namespace
from .._wire._pb import EmptyPb, MountPb, containers_pb, sandbox_pb
from .._wire._pb import event_payloads_pb as ev
from ..sandboxer import SandboxController
from ._exchange import Exchange
from ._records import Records
from ._sandboxroot import rooted_create
from ._times import StandInTimes

__all__ = (
    "Binder",
    "Collect",
    "ContainersService",
    "ControllerRouter",
    "SandboxHooks",
    "StoreService",
)

Binder = Callable[[Mapping[str, Handler]], dict[str, Handler]]
"""Wraps a service's handlers before they are served."""

Collect = Callable[[str], Awaitable[None]]
"""The garbage collector, run on a namespace after a deletion."""


class SandboxHooks(Protocol):
    """Told by the controller router when a sandbox has started and when it is gone."""

    async def started(self, sandbox_id: str, sandboxer: str, pid: int) -> None:
        """Sandbox ``sandbox_id`` started as process ``pid`` (in the request's namespace)."""

    async def shut_down(self, sandbox_id: str) -> None:
        """Sandbox ``sandbox_id`` was shut down."""

    def rooted(self, sandbox_id: str, root: str) -> None:
        """Sandbox ``sandbox_id`` (being created) is rooted on the snapshot at ``root``."""


class StoreService(sandbox_pb.StoreBase):
    """containerd's sandbox Store over :class:`~._records.Records`."""

    def __init__(self, records: Records, bind: Binder) -> None:
        self._records = records
        self._bind = bind

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def create(
        self, message: sandbox_pb.StoreCreateRequest
    ) -> sandbox_pb.StoreCreateResponse:
        """Store.Create: write a new record."""
        return sandbox_pb.StoreCreateResponse(sandbox=self._records.sandbox_create(message))

    async def update(
        self, message: sandbox_pb.StoreUpdateRequest
    ) -> sandbox_pb.StoreUpdateResponse:
        """Store.Update: rewrite the fields named."""
        return sandbox_pb.StoreUpdateResponse(sandbox=self._records.sandbox_update(message))

    async def delete(
        self, message: sandbox_pb.StoreDeleteRequest
    ) -> sandbox_pb.StoreDeleteResponse:
        """Store.Delete: forget a record."""
        self._records.sandbox_delete(message)
        return sandbox_pb.StoreDeleteResponse()

    async def list(self, message: sandbox_pb.StoreListRequest) -> sandbox_pb.StoreListResponse:
        """Store.List: the records that pass the filters."""
        return sandbox_pb.StoreListResponse(list=self._records.sandbox_list(message))

    async def get(self, message: sandbox_pb.StoreGetRequest) -> sandbox_pb.StoreGetResponse:
        """Store.Get: one record."""
        return sandbox_pb.StoreGetResponse(sandbox=self._records.sandbox_get(message))


class ControllerRouter(sandbox_pb.ControllerBase):
    """containerd's controller service: pick the controller by name, then forward.

    Calls whose ``sandboxer`` is one of ``sandboxers`` go to ``controller``; the requests
    that would crash containerd 2.1.9 are counted by ``records`` and refused. ``hooks``, if
    given, hear of each sandbox started and shut down. Events go to ``events``. With
    ``wrap_start`` (containerd 2.2 on), Start's errors are wrapped as containerd's are.
    """

    def __init__(
        self,
        records: Records,
        bind: Binder,
        controller: SandboxController,
        sandboxers: frozenset[str],
        events: Exchange,
        hooks: SandboxHooks | None = None,
        *,
        wrap_start: bool = False,
        times: StandInTimes | None = None,
        image_root: Callable[[list[MountPb]], str | None] | None = None,
    ) -> None:
        self._image_root = image_root
        self._records = records
        self._times = times
        self._wrap_start = wrap_start
        self._bind = bind
        self._controller = controller
        self._sandboxers = sandboxers
        self._events = events
        self._hooks = hooks

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    def _pick(self, sandboxer: str) -> SandboxController:
        if not sandboxer:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                "invalid argument: sandbox controller name can not be empty",
            )
        if sandboxer not in self._sandboxers:
            raise GRPCError(
                Status.NOT_FOUND, f"not found: failed to get sandbox controller by {sandboxer}"
            )
        return self._controller

    def _route(self, sandboxer: str) -> SandboxController:
        controller = self._pick(sandboxer)
        # The controller behind the name checks the namespace, as containerd's own do.
        current_namespace()
        return controller

    async def create(
        self, message: sandbox_pb.ControllerCreateRequest
    ) -> sandbox_pb.ControllerCreateResponse:
        """Controller.Create, refused first if it would crash containerd 2.1.9."""
        controller = self._pick(message.sandboxer)
        self._records.require_sandbox(message.sandbox)
        current_namespace()
        root = self._image_root(list(message.rootfs)) if self._image_root else None
        if root is not None and self._hooks is not None:
            # The stand-in's own controller runs host processes: the snapshot is their root.
            message = rooted_create(message, root)
        answer = await controller.create(message)
        if root is not None and self._hooks is not None:
            self._hooks.rooted(answer.sandbox_id or message.sandbox_id, root)
        if self._times is not None:
            self._times.created(current_namespace(), answer.sandbox_id, message.sandbox)
        self._events.publish("/sandboxes/create", ev.SandboxCreate(sandbox_id=message.sandbox_id))
        return answer

    async def start(
        self, message: sandbox_pb.ControllerStartRequest
    ) -> sandbox_pb.ControllerStartResponse:
        """Controller.Start, forwarded; the hooks hear of the sandbox's process."""
        try:
            controller = self._pick(message.sandboxer)
        except GRPCError as exc:
            context = f"failed to get sandbox controller for {go_quote(message.sandboxer)}"
            raise self._wrapped(exc, context) from exc
        try:
            current_namespace()
            answer = await controller.start(message)
        except GRPCError as exc:
            context = f"failed to start sandbox {go_quote(message.sandbox_id)}"
            raise self._wrapped(exc, context) from exc
        if self._hooks is not None:
            await self._hooks.started(message.sandbox_id, message.sandboxer, answer.pid)
        self._events.publish("/sandboxes/start", ev.SandboxStart(sandbox_id=message.sandbox_id))
        return answer

    def _wrapped(self, exc: GRPCError, context: str) -> GRPCError:
        """``exc``, or with ``wrap_start`` the same code and ``context: <its message>``."""
        if not self._wrap_start:
            return exc
        return GRPCError(exc.status, f"{context}: {exc.message or ''}", exc.details)

    async def platform(
        self, message: sandbox_pb.ControllerPlatformRequest
    ) -> sandbox_pb.ControllerPlatformResponse:
        """Controller.Platform: UNIMPLEMENTED, as containerd 2.1 answers it."""
        # containerd 2.1's controller service has no Platform method at all.
        raise GRPCError(Status.UNIMPLEMENTED, "method Platform not implemented")

    async def stop(
        self, message: sandbox_pb.ControllerStopRequest
    ) -> sandbox_pb.ControllerStopResponse:
        """Controller.Stop, forwarded."""
        return await self._route(message.sandboxer).stop(message)

    async def wait(
        self, message: sandbox_pb.ControllerWaitRequest
    ) -> sandbox_pb.ControllerWaitResponse:
        """Controller.Wait, forwarded; its answer is published as ``/sandboxes/exit``."""
        answer = await self._route(message.sandboxer).wait(message)
        if self._times is not None:
            answer.exit_status = self._times.exit_status(
                current_namespace(), message.sandbox_id, answer.exit_status
            )
        exited = ev.SandboxExit(
            sandbox_id=message.sandbox_id,
            exit_status=answer.exit_status,
            exited_at=answer.exited_at,
        )
        self._events.publish("/sandboxes/exit", exited)
        return answer

    async def status(
        self, message: sandbox_pb.ControllerStatusRequest
    ) -> sandbox_pb.ControllerStatusResponse:
        """Controller.Status, forwarded (with the deadline the stand-in keeps)."""
        answer = await self._route(message.sandboxer).status(message)
        if self._times is not None:
            answer.info.update(self._times.status_info(current_namespace(), message.sandbox_id))
        return answer

    async def shutdown(
        self, message: sandbox_pb.ControllerShutdownRequest
    ) -> sandbox_pb.ControllerShutdownResponse:
        """Controller.Shutdown, forwarded; the hooks hear of it."""
        answer = await self._route(message.sandboxer).shutdown(message)
        if self._times is not None:
            self._times.forget(current_namespace(), message.sandbox_id)
        if self._hooks is not None:
            await self._hooks.shut_down(message.sandbox_id)
        return answer

    async def metrics(
        self, message: sandbox_pb.ControllerMetricsRequest
    ) -> sandbox_pb.ControllerMetricsResponse:
        """Controller.Metrics, forwarded."""
        return await self._route(message.sandboxer).metrics(message)

    async def update(
        self, message: sandbox_pb.ControllerUpdateRequest
    ) -> sandbox_pb.ControllerUpdateResponse:
        """Controller.Update, refused first if it would crash containerd 2.1.9."""
        # containerd looks the controller up by the request's sandboxer as for every other
        # call (it only leaves the name out when it forwards Update to a proxy plugin), so an
        # Update without one is refused here too.
        controller = self._pick(message.sandboxer)
        if message.sandbox is None:
            raise GRPCError(Status.UNKNOWN, "sandbox can not be nil")
        self._records.require_sandbox(message.sandbox)
        namespace = current_namespace()
        answer = await controller.update(message)
        if self._times is not None:
            sandbox_id = message.sandbox_id or message.sandbox.sandbox_id
            self._times.updated(namespace, sandbox_id, message.sandbox, list(message.fields))
        return answer


class ContainersService(containers_pb.ContainersBase):
    """containerd's Containers service over :class:`~._records.Records`; events go to
    ``events``."""

    def __init__(
        self, records: Records, bind: Binder, events: Exchange, collect: Collect | None = None
    ) -> None:
        self._records = records
        self._bind = bind
        self._events = events
        self._collect = collect

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def get(
        self, message: containers_pb.GetContainerRequest
    ) -> containers_pb.GetContainerResponse:
        """Containers.Get: one record."""
        return containers_pb.GetContainerResponse(container=self._records.container_get(message))

    async def list(
        self, message: containers_pb.ListContainersRequest
    ) -> containers_pb.ListContainersResponse:
        """Containers.List: the records that pass the filters."""
        return containers_pb.ListContainersResponse(
            containers=self._records.container_list(message)
        )

    async def list_stream(
        self, message: containers_pb.ListContainersRequest
    ) -> AsyncIterator[containers_pb.ListContainerMessage]:
        """Containers.ListStream: the same records, one message each."""
        for record in self._records.container_list(message):
            yield containers_pb.ListContainerMessage(container=record)

    async def create(
        self, message: containers_pb.CreateContainerRequest
    ) -> containers_pb.CreateContainerResponse:
        """Containers.Create: write a new record."""
        record = self._records.container_create(message)
        runtime = record.runtime or containers_pb.ContainerRuntime()
        created = ev.ContainerCreate(
            id=record.id,
            image=record.image,
            runtime=ev.ContainerCreateRuntime(name=runtime.name, options=runtime.options),
        )
        self._events.publish("/containers/create", created)
        return containers_pb.CreateContainerResponse(container=record)

    async def update(
        self, message: containers_pb.UpdateContainerRequest
    ) -> containers_pb.UpdateContainerResponse:
        """Containers.Update: rewrite the fields of the mask."""
        record = self._records.container_update(message)
        updated = ev.ContainerUpdate(
            id=record.id,
            image=record.image,
            labels=dict(record.labels),
            snapshot_key=record.snapshot_key,
        )
        self._events.publish("/containers/update", updated)
        return containers_pb.UpdateContainerResponse(container=record)

    async def delete(self, message: containers_pb.DeleteContainerRequest) -> EmptyPb:
        """Containers.Delete: forget a record."""
        self._records.container_delete(message)
        self._events.publish("/containers/delete", ev.ContainerDelete(id=message.id))
        if self._collect is not None:
            await self._collect(current_namespace())
        return EmptyPb()
