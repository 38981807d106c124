"""The stand-in's Leases service: leases per namespace and the resources they hold.

A lease is a record (id, labels, creation time) and a set of resources (``content``,
``ingests`` or ``snapshots/<snapshotter>``, as containerd 2.1.9 takes them). A call that
carries a ``containerd-lease`` header and makes a snapshot adds it to that lease, as
containerd does. Deleting a lease runs the stand-in's garbage collector, which also drops the
leases whose ``containerd.io/gc.expire`` time has passed (see its module).
Messages and codes are containerd 2.1.9's.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import time
from datetime import datetime
from typing import Final

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._facts._wirenames import LEASE_HEADER
from .._serve._refusals import already_exists, invalid_argument, not_found
from .._serve._server import current_metadata, current_namespace
from .._wire._pb import EmptyPb, leases_pb
from ._filters import Adaptor, map_field, matches, parse_filters
from ._services import Binder, Collect

__all__ = ("LEASE_HEADER", "LeaseTable", "LeasesService")

_MAX_LEASES: Final = 10_000
_MAX_RESOURCES: Final = 10_000
# containerd's identifiers: letters, digits, and ._- between them, 76 characters at most.
_MAX_ID: Final = 64 * 1024
_RESOURCE_TYPES: Final = ("content", "ingests")


@dataclasses.dataclass
class _Lease:
    id: str
    created_at: datetime
    labels: dict[str, str]
    resources: set[tuple[str, str]] = dataclasses.field(default_factory=set)

    def record(self) -> leases_pb.Lease:
        return leases_pb.Lease(id=self.id, created_at=self.created_at, labels=dict(self.labels))


def _lease_id(lease_id: str) -> str:
    """The id a Create makes a lease under: containerd 2.1.9 checks no lease id's form (any
    text is a bucket name) and makes one up for an empty id (``<nanoseconds>-<4 chars>``).
    The stand-in bounds it only to keep a hostile client's ids small."""
    if not lease_id:
        now = time.time_ns() % 1_000_000_000
        return f"{now}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"
    if len(lease_id.encode()) > _MAX_ID:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED, f"the stand-in takes lease ids of at most {_MAX_ID} bytes"
        )
    return lease_id


def _check_resource(resource: leases_pb.Resource | None) -> tuple[str, str]:
    if resource is None or not resource.id:
        raise invalid_argument("resource id must not be empty")
    kind = resource.type
    if kind not in _RESOURCE_TYPES:
        head, slash, snapshotter = kind.partition("/")
        if head != "snapshots" or not slash or not snapshotter or "/" in snapshotter:
            raise GRPCError(
                Status.UNIMPLEMENTED, f"unsupported resource type {kind}: not implemented"
            )
    return kind, resource.id


class LeaseTable:
    """The leases of every namespace."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, _Lease]] = {}

    def _of(self, namespace: str) -> dict[str, _Lease]:
        return self._by_namespace.setdefault(namespace, {})

    def namespaces(self) -> set[str]:
        """The namespaces that hold one or more."""
        return {ns for ns, held in self._by_namespace.items() if held}

    def ids(self, namespace: str) -> list[str]:
        """The ids of ``namespace``'s leases, sorted."""
        return sorted(self._by_namespace.get(namespace, {}))

    def create(self, namespace: str, lease_id: str, labels: dict[str, str]) -> _Lease:
        """A new lease; ALREADY_EXISTS if its id is taken."""
        lease_id = _lease_id(lease_id)
        leases = self._of(namespace)
        if lease_id in leases:
            raise already_exists(f"lease {go_quote(lease_id)}")
        if len(leases) >= _MAX_LEASES:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED, f"the stand-in keeps at most {_MAX_LEASES} leases"
            )
        lease = leases[lease_id] = _Lease(lease_id, utcnow(), dict(labels))
        return lease

    def get(self, namespace: str, lease_id: str) -> _Lease:
        """Lease ``lease_id``; NOT_FOUND as containerd words it for a resource call."""
        found = self._by_namespace.get(namespace, {}).get(lease_id)
        if found is None:
            raise not_found("lease does not exist")
        return found

    def delete(self, namespace: str, lease_id: str) -> None:
        """Drop lease ``lease_id``."""
        if self._by_namespace.get(namespace, {}).pop(lease_id, None) is None:
            raise not_found(f"lease {go_quote(lease_id)}")

    def add(self, namespace: str, lease_id: str, kind: str, resource_id: str) -> None:
        """Add a resource to lease ``lease_id``."""
        lease = self.get(namespace, lease_id)
        if len(lease.resources) >= _MAX_RESOURCES:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"the stand-in keeps at most {_MAX_RESOURCES} resources per lease",
            )
        lease.resources.add((kind, resource_id))

    def add_from_header(self, namespace: str, kind: str, resource_id: str) -> None:
        """Add a resource to the lease the request's ``containerd-lease`` header names."""
        lease_id = current_metadata().get(LEASE_HEADER)
        if lease_id:
            self.add(namespace, lease_id, kind, resource_id)

    def check_header(self, namespace: str) -> None:
        """NOT_FOUND if the request names a lease that does not exist."""
        lease_id = current_metadata().get(LEASE_HEADER)
        if lease_id:
            self.get(namespace, lease_id)

    def forget(self, namespace: str, kind: str, resource_id: str) -> None:
        """A resource is gone: no lease holds it any more."""
        for lease in self._by_namespace.get(namespace, {}).values():
            lease.resources.discard((kind, resource_id))

    def drop_namespace(self, namespace: str) -> None:
        """Forget every lease of ``namespace``."""
        self._by_namespace.pop(namespace, None)


def _adaptor(lease: leases_pb.Lease) -> Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if path == ("id",):
            return lease.id, bool(lease.id)
        if path[:1] == ("labels",):
            return map_field(path[1:], lease.labels)
        return "", False

    return field


class LeasesService(leases_pb.LeasesBase):
    """containerd's Leases service over a :class:`LeaseTable`."""

    def __init__(self, leases: LeaseTable, bind: Binder, collect: Collect | None = None) -> None:
        self._leases = leases
        self._bind = bind
        self._collect = collect

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def create(self, message: leases_pb.CreateRequest) -> leases_pb.CreateResponse:
        """Create: a new lease."""
        lease = self._leases.create(current_namespace(), message.id, dict(message.labels))
        return leases_pb.CreateResponse(lease=lease.record())

    async def delete(self, message: leases_pb.DeleteRequest) -> EmptyPb:
        """Delete: drop a lease, then collect what nothing else holds."""
        self._leases.delete(current_namespace(), message.id)
        if self._collect is not None:
            await self._collect(current_namespace())
        return EmptyPb()

    async def list(self, message: leases_pb.ListRequest) -> leases_pb.ListResponse:
        """List: the leases that pass the filters."""
        filters = parse_filters(message.filters)
        namespace = current_namespace()
        records = [self._leases.get(namespace, i).record() for i in self._leases.ids(namespace)]
        return leases_pb.ListResponse(leases=[r for r in records if matches(filters, _adaptor(r))])

    async def add_resource(self, message: leases_pb.AddResourceRequest) -> EmptyPb:
        """AddResource: the lease holds one more resource."""
        kind, resource_id = _check_resource(message.resource)
        self._leases.add(current_namespace(), message.id, kind, resource_id)
        return EmptyPb()

    async def delete_resource(self, message: leases_pb.DeleteResourceRequest) -> EmptyPb:
        """DeleteResource: the lease no longer holds a resource."""
        kind, resource_id = _check_resource(message.resource)
        self._leases.get(current_namespace(), message.id).resources.discard((kind, resource_id))
        return EmptyPb()

    async def list_resources(
        self, message: leases_pb.ListResourcesRequest
    ) -> leases_pb.ListResourcesResponse:
        """ListResources: what a lease holds."""
        lease = self._leases.get(current_namespace(), message.id)
        return leases_pb.ListResourcesResponse(
            resources=[leases_pb.Resource(id=i, type=k) for k, i in sorted(lease.resources)]
        )
