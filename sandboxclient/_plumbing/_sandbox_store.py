"""containerd's sandbox store: the records, as Go's ``client.SandboxStore()`` gives them."""

from __future__ import annotations

from collections.abc import Sequence

from .._facts._golang import go_quote
from .._members._ending import refuse_reserved
from .._models import SandboxInfo
from .._wire._convert import sandbox_from_pb, sandbox_to_pb
from .._wire._pb import sandbox_pb
from ..errors import NotFoundError
from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._options import checked_extension_key, checked_labels

__all__ = ("SandboxStore",)


class SandboxStore:
    """The sandbox records of one namespace: create, get, list, update, delete.

    These touch the records only; a sandbox's controller is told nothing (see ``Sandbox``).
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def _stub(self) -> sandbox_pb.StoreStub:
        return self._connection.stub(sandbox_pb.StoreStub)

    async def create(
        self, info: SandboxInfo, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> SandboxInfo:
        """Store a new record and return it as stored (with the daemon's times)."""
        record = sandbox_to_pb(_checked(info))
        created = await self._connection.call(
            self._stub().create, sandbox_pb.StoreCreateRequest(sandbox=record), timeout
        )
        return info if created.sandbox is None else sandbox_from_pb(created.sandbox)

    async def get(self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> SandboxInfo:
        """The record of ``sandbox_id``; NotFoundError if there is none."""
        if not sandbox_id:
            raise ValueError("sandbox ID must be specified")
        resp = await self._connection.call(
            self._stub().get,
            sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id),
            timeout,
            idempotent=True,
        )
        if resp.sandbox is None:
            raise NotFoundError(f"sandbox {go_quote(sandbox_id)} not found")
        return sandbox_from_pb(resp.sandbox)

    async def list(self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[SandboxInfo]:
        """The records matching any of ``filters`` (containerd's filter syntax), or all."""
        resp = await self._connection.call(
            self._stub().list,
            sandbox_pb.StoreListRequest(filters=list(filters)),
            timeout,
            idempotent=True,
        )
        return [sandbox_from_pb(record) for record in resp.list]

    async def update(
        self,
        info: SandboxInfo,
        fields: Sequence[str] = (),
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> SandboxInfo:
        """Write ``info`` back; only the field paths in ``fields`` if given (``labels.k``,
        ``extensions.k``, ``labels``, ``extensions``, ``runtime``, ``spec``)."""
        resp = await self._connection.call(
            self._stub().update,
            sandbox_pb.StoreUpdateRequest(
                sandbox=sandbox_to_pb(_checked(info)), fields=list(fields)
            ),
            timeout,
        )
        return info if resp.sandbox is None else sandbox_from_pb(resp.sandbox)

    async def delete(self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Remove the record; NotFoundError if there is none."""
        await self._connection.call(
            self._stub().delete, sandbox_pb.StoreDeleteRequest(sandbox_id=sandbox_id), timeout
        )


def _checked(info: SandboxInfo) -> SandboxInfo:
    """``info`` once its labels and extension keys are ones containerd would store (and
    none is a controller's own word: :func:`refuse_reserved`)."""
    checked_labels(info.labels, info.id)
    refuse_reserved(info.labels, info.id)
    for key in info.extensions:
        checked_extension_key(key, info.id)
    return info
