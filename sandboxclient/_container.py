"""containerd's containers store: the container records."""

from __future__ import annotations

from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._convert import container_from_pb
from ._models import Container
from ._pb import containers_pb

__all__ = ("ContainerStore",)


class ContainerStore:
    """The container records of one namespace."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def create(
        self, record: containers_pb.Container, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Container:
        """Store a new container record and return it as stored."""
        resp = await self._connection.call(
            self._connection.stub(containers_pb.ContainersStub).create,
            containers_pb.CreateContainerRequest(container=record),
            timeout,
        )
        return container_from_pb(resp.container or record)
