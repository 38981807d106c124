"""containerd's containers store: the container records, as Go's ``ContainerService()``."""

from __future__ import annotations

import builtins

from .._facts._golang import go_quote
from .._models import ContainerInfo
from .._wire._brief import LIST_ROUTE, ListContainersBriefResponse, brief_records
from .._wire._convert import container_from_pb, container_to_pb
from .._wire._pb import FieldMaskPb, containers_pb
from ..errors import NotFoundError
from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._options import checked_extension_key, checked_labels

__all__ = ("ContainerStore",)


class ContainerStore:
    """The container records of one namespace."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def _stub(self) -> containers_pb.ContainersStub:
        return self._connection.stub(containers_pb.ContainersStub)

    async def create(
        self, info: ContainerInfo, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> ContainerInfo:
        """Store a new container record and return it as stored."""
        checked_labels(info.labels, info.id)
        for key in info.extensions:
            checked_extension_key(key, info.id)
        record = container_to_pb(info)
        resp = await self._connection.call(
            self._stub().create, containers_pb.CreateContainerRequest(container=record), timeout
        )
        return container_from_pb(resp.container or record)

    async def get(
        self, container_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> ContainerInfo:
        """The record of ``container_id``; NotFoundError if there is none."""
        if not container_id:
            raise ValueError("container ID must be specified")
        resp = await self._connection.call(
            self._stub().get,
            containers_pb.GetContainerRequest(id=container_id),
            timeout,
            idempotent=True,
        )
        if resp.container is None:
            raise NotFoundError(f"container {go_quote(container_id)} not found")
        return container_from_pb(resp.container)

    async def list(
        self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> list[ContainerInfo]:
        """The records matching any of ``filters`` (``id``, ``image``, ``runtime.name``,
        ``labels.k``), or all."""
        resp = await self._connection.call(
            self._stub().list,
            containers_pb.ListContainersRequest(filters=list(filters)),
            timeout,
            idempotent=True,
        )
        return [container_from_pb(c) for c in resp.containers]

    async def list_brief(
        self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> builtins.list[ContainerInfo]:
        """As :meth:`list`, each record read for what deleting it needs only: its id,
        sandbox, labels, image and snapshot (``_wire._brief``)."""
        resp = await self._connection.call(
            self._connection.route(LIST_ROUTE, ListContainersBriefResponse),
            containers_pb.ListContainersRequest(filters=list(filters)),
            timeout,
            idempotent=True,
        )
        return brief_records(resp)

    async def set_labels(
        self,
        container_id: str,
        labels: dict[str, str],
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> ContainerInfo:
        """Set (an empty value: remove) only the labels given, as field paths ``labels.k``.

        With none given the record is read, not written: an empty update mask would have
        containerd rewrite the whole record, which it refuses.
        """
        checked_labels(labels, container_id)
        if not labels:
            return await self.get(container_id, timeout=timeout)
        kept = {k: v for k, v in labels.items() if v}
        resp = await self._connection.call(
            self._stub().update,
            containers_pb.UpdateContainerRequest(
                container=containers_pb.Container(id=container_id, labels=kept),
                update_mask=FieldMaskPb(paths=[f"labels.{key}" for key in labels]),
            ),
            timeout,
        )
        if resp.container is None:
            raise NotFoundError(f"container {go_quote(container_id)} not found")
        return container_from_pb(resp.container)

    async def delete(self, container_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Remove the record (only the record); NotFoundError if there is none."""
        await self._connection.call(
            self._stub().delete, containers_pb.DeleteContainerRequest(id=container_id), timeout
        )
