"""The stand-in's metadata store: sandbox and container records, per namespace.

It validates and refuses as containerd 2.1.9's bolt-backed stores do, messages included, and
keeps their quirks: empty label values are dropped, extensions only ever gain keys, an unset
spec leaves the stored one, and some not-found messages differ before a namespace's first
record. Requests that would crash that daemon are refused and counted instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._facts._validation import identifier_problem, label_size_problem
from .._serve._fields import SANDBOX_FIELDS, FieldPaths, copy_message, required, required_sandbox
from .._serve._refusals import already_exists, invalid_argument, must_be_set, not_found
from .._serve._server import current_namespace
from .._wire._pb import AnyPb, SandboxPb, containers_pb, sandbox_pb
from ._filters import Adaptor, map_field, matches, parse_filters

__all__ = ("Records",)

_T = TypeVar("_T")

_LABEL_KEY_SHOWN: Final = 64
# The stores set a key named but missing from the new record to Go's zero value: an empty
# label (which the write then drops) or an empty extension (which is kept).
_ZERO_VALUES: Final = {"labels": str, "extensions": AnyPb}
_SANDBOX_FIELDS: Final = dataclasses.replace(SANDBOX_FIELDS, absent=_ZERO_VALUES)
_CONTAINER_FIELDS: Final = FieldPaths(
    fields={
        "labels": "labels",
        "spec": "spec",
        "extensions": "extensions",
        "image": "image",
        "snapshotkey": "snapshot_key",
    },
    maps=frozenset({"labels", "extensions"}),
    default=("labels", "spec", "extensions", "image", "snapshotkey"),
    absent=_ZERO_VALUES,
)


def _write_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """What containerd's bolt store keeps of a label map: empty values are dropped, and a
    non-empty value under an empty key fails the write (UNKNOWN, as bolt's error is
    untyped)."""
    kept: dict[str, str] = {}
    for key, value in labels.items():
        if not value:
            continue
        if not key:
            raise _unknown(f"failed to set label {go_quote(key)}={go_quote(value)}: key required")
        kept[key] = value
    return kept


def _unknown(message: str) -> GRPCError:
    return GRPCError(Status.UNKNOWN, message)


def _prefixed(error: GRPCError, prefix: str) -> GRPCError:
    return GRPCError(error.status, f"{prefix}{error.message}")


@dataclass
class _Namespace:
    # None until the namespace's bucket is first written, as in containerd's bolt store:
    # some not-found messages differ before that.
    sandboxes: dict[str, SandboxPb] | None = None
    containers: dict[str, containers_pb.Container] | None = None


class Records:
    """The stand-in's metadata store, per namespace.

    The request methods read the namespace of the request being handled
    (:func:`~sandboxclient._serve._server.current_namespace`) and raise the ``GRPCError``
    containerd would answer.
    """

    def __init__(self) -> None:
        self._namespaces: dict[str, _Namespace] = {}
        self.crash_requests = 0
        """How many requests were refused that would have crashed containerd 2.1.9."""

    def require_sandbox(self, sandbox: SandboxPb | None) -> SandboxPb:
        """A request's sandbox, refused and counted when it or its runtime is unset.

        containerd 2.1.9 dereferences both and dies (SIGSEGV) where this is called.
        """
        return self._crash_checked(required_sandbox, sandbox)

    def require_container(
        self, container: containers_pb.Container | None
    ) -> containers_pb.Container:
        """A request's container, refused and counted when it is unset (a crash too)."""
        return self._crash_checked(lambda c: required(c, "container"), container)

    def crash(self, field: str) -> GRPCError:
        """Count a request that would crash containerd 2.1.9 (or its runc shim) because it
        leaves ``field`` unset, and return its refusal."""
        self.crash_requests += 1
        return must_be_set(field)

    def _crash_checked(self, check: Callable[[_T | None], _T], value: _T | None) -> _T:
        try:
            return check(value)
        except GRPCError:
            self.crash_requests += 1
            raise

    def _ns(self, namespace: str) -> _Namespace:
        return self._namespaces.setdefault(namespace, _Namespace())

    def written_namespaces(self) -> set[str]:
        """The namespaces a sandbox or container record was ever written in (and that
        were not deleted since)."""
        return {
            name
            for name, ns in self._namespaces.items()
            if ns.sandboxes is not None or ns.containers is not None
        }

    def drop_namespace(self, namespace: str) -> None:
        """Forget ``namespace``'s records (its bucket deleted)."""
        self._namespaces.pop(namespace, None)

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandbox records in ``namespace``, sorted."""
        return sorted(self._ns(namespace).sandboxes or {})

    def container_ids(self, namespace: str) -> list[str]:
        """The ids of the container records in ``namespace``, sorted."""
        return sorted(self._ns(namespace).containers or {})

    # sandbox store

    def sandbox_create(self, request: sandbox_pb.StoreCreateRequest) -> SandboxPb:
        """Store.Create: validate and write a new record; the stored copy, times set."""
        namespace = current_namespace()
        record = copy_message(self.require_sandbox(request.sandbox))
        record.created_at = record.updated_at = utcnow()
        problem = identifier_problem(record.sandbox_id)
        if problem is not None:
            raise invalid_argument(f"failed to validate sandbox: invalid sandbox ID: {problem}")
        bucket = self._ns(namespace).sandboxes or {}
        if record.sandbox_id in bucket:
            raise already_exists(
                f"write error: sandbox bucket {go_quote(record.sandbox_id)} already exists"
            )
        try:
            record.labels = _write_labels(record.labels)
            if "" in record.extensions:
                raise _unknown("key required")
        except GRPCError as exc:
            raise _prefixed(exc, "write error: ") from None
        bucket[record.sandbox_id] = record
        self._ns(namespace).sandboxes = bucket
        return copy_message(record)

    def _sandbox_bucket(self, namespace: str) -> dict[str, SandboxPb]:
        bucket = self._ns(namespace).sandboxes
        if bucket is None:
            raise not_found("no sandbox buckets")
        return bucket

    def _sandbox(self, namespace: str, sandbox_id: str) -> SandboxPb:
        record = self._sandbox_bucket(namespace).get(sandbox_id)
        if record is None:
            raise not_found(f"bucket {go_quote(sandbox_id)} not found")
        return record

    def sandbox_get(self, request: sandbox_pb.StoreGetRequest) -> SandboxPb:
        """Store.Get: a copy of one record."""
        return copy_message(self._sandbox(current_namespace(), request.sandbox_id))

    def sandbox_list(self, request: sandbox_pb.StoreListRequest) -> list[SandboxPb]:
        """Store.List: copies of the records that pass the filters, by id."""
        namespace = current_namespace()
        filters = parse_filters(request.filters)
        bucket = self._ns(namespace).sandboxes or {}
        return [
            copy_message(bucket[k])
            for k in sorted(bucket)
            if matches(filters, _sandbox_adaptor(bucket[k]))
        ]

    def sandbox_delete(self, request: sandbox_pb.StoreDeleteRequest) -> None:
        """Store.Delete: forget one record."""
        bucket = self._sandbox_bucket(current_namespace())
        if bucket.pop(request.sandbox_id, None) is None:
            raise not_found(f"failed to delete sandbox {go_quote(request.sandbox_id)}")

    def sandbox_update(self, request: sandbox_pb.StoreUpdateRequest) -> SandboxPb:
        """Store.Update: rewrite the named fields; the answer shows what was asked for."""
        namespace = current_namespace()
        new = self.require_sandbox(request.sandbox)
        assert new.runtime is not None
        stored = self._sandbox(namespace, new.sandbox_id)
        if not request.fields:
            current_runtime = stored.runtime.name if stored.runtime is not None else ""
            if current_runtime != new.runtime.name:
                raise invalid_argument("sandbox.Runtime.Name field is immutable")
        updated = _SANDBOX_FIELDS.apply(
            stored, new, request.fields, f"sandbox {go_quote(new.sandbox_id)}"
        )
        updated.updated_at = utcnow()
        updated.labels = _write_labels(updated.labels)
        if "" in updated.extensions:
            raise _unknown("key required")
        # The bolt record is rewritten in place: extensions only ever gain keys, and an unset
        # spec or runtime option leaves the stored one. The answer shows what was asked for.
        kept = copy_message(updated)
        kept.extensions = {**stored.extensions, **updated.extensions}
        if kept.spec is None:
            kept.spec = stored.spec
        if kept.runtime is not None and kept.runtime.options is None and stored.runtime is not None:
            kept.runtime.options = stored.runtime.options
        self._sandbox_bucket(namespace)[new.sandbox_id] = kept
        return updated

    # containers store

    def container_create(
        self, request: containers_pb.CreateContainerRequest
    ) -> containers_pb.Container:
        """Containers.Create: validate and write a new record; the stored copy."""
        namespace = current_namespace()
        record = copy_message(self.require_container(request.container))
        _validate_container(record, "create container failed validation: ")
        bucket = self._ns(namespace).containers or {}
        if record.id in bucket:
            raise already_exists(f"container {go_quote(record.id)}")
        record.created_at = record.updated_at = utcnow()
        try:
            record.labels = _write_labels(record.labels)
        except GRPCError as exc:
            raise _prefixed(exc, f"failed to write container {go_quote(record.id)}: ") from None
        bucket[record.id] = record
        self._ns(namespace).containers = bucket
        return copy_message(record)

    def container_get(self, request: containers_pb.GetContainerRequest) -> containers_pb.Container:
        """Containers.Get: a copy of one record."""
        namespace = current_namespace()
        record = (self._ns(namespace).containers or {}).get(request.id)
        if record is None:
            raise not_found(f"container {go_quote(request.id)} in namespace {go_quote(namespace)}")
        return copy_message(record)

    def container_list(
        self, request: containers_pb.ListContainersRequest
    ) -> list[containers_pb.Container]:
        """Containers.List: copies of the records that pass the filters, by id."""
        namespace = current_namespace()
        filters = parse_filters(request.filters)
        bucket = self._ns(namespace).containers or {}
        return [
            copy_message(bucket[k])
            for k in sorted(bucket)
            if matches(filters, _container_adaptor(bucket[k]))
        ]

    def container_update(
        self, request: containers_pb.UpdateContainerRequest
    ) -> containers_pb.Container:
        """Containers.Update: rewrite the fields of the mask (all updatable ones without)."""
        new = self.require_container(request.container)
        if not new.id:
            raise GRPCError(Status.INVALID_ARGUMENT, "Container.ID required")
        namespace = current_namespace()
        bucket = self._ns(namespace).containers
        if bucket is None:
            raise not_found(
                f"cannot update container {go_quote(new.id)} in namespace {go_quote(namespace)}"
            )
        stored = bucket.get(new.id)
        if stored is None:
            raise not_found(f"container {go_quote(new.id)}")
        paths = request.update_mask.paths if request.update_mask is not None else []
        if not paths:
            if stored.snapshotter != new.snapshotter:
                raise invalid_argument("container.Snapshotter field is immutable")
            old_name = stored.runtime.name if stored.runtime is not None else ""
            new_name = new.runtime.name if new.runtime is not None else ""
            if old_name != new_name:
                raise invalid_argument("container.Runtime.Name field is immutable")
        updated = _CONTAINER_FIELDS.apply(stored, new, paths, go_quote(new.id))
        _validate_container(updated, "update failed validation: ")
        updated.updated_at = utcnow()
        try:
            updated.labels = _write_labels(updated.labels)
        except GRPCError as exc:
            raise _prefixed(exc, f"failed to write container {go_quote(new.id)}: ") from None
        kept = copy_message(updated)
        kept.extensions = {**stored.extensions, **updated.extensions}
        if kept.spec is None:
            kept.spec = stored.spec
        bucket[new.id] = kept
        return updated

    def container_delete(self, request: containers_pb.DeleteContainerRequest) -> None:
        """Containers.Delete: forget one record."""
        namespace = current_namespace()
        bucket = self._ns(namespace).containers
        if bucket is None:
            raise not_found(
                f"cannot delete container {go_quote(request.id)} in namespace {go_quote(namespace)}"
            )
        if bucket.pop(request.id, None) is None:
            raise not_found(f"container {request.id}")


def _validate_container(record: containers_pb.Container, prefix: str) -> None:
    problem = identifier_problem(record.id)
    if problem is not None:
        raise invalid_argument(f"{prefix}container.ID: {problem}")
    if "" in record.extensions:
        raise invalid_argument(f"{prefix}container.Extension keys must not be zero-length")
    for key, value in record.labels.items():
        # Only the size is checked here: an empty key fails at the write, or is dropped
        # there with its empty value.
        problem = label_size_problem(key, value)
        if problem is not None:
            shown = key.encode()[:_LABEL_KEY_SHOWN].decode(errors="replace")
            raise invalid_argument(f"{prefix}containers.Labels: {problem}, key: {shown}")
    if record.runtime is None or not record.runtime.name:
        raise invalid_argument(f"{prefix}container.Runtime.Name must be set")
    # containerd also checks for a spec, but its conversion from the request hands the
    # store a typed nil that passes the check: a container without a spec is accepted.
    if record.snapshot_key and not record.snapshotter:
        raise invalid_argument(
            f"{prefix}container.Snapshotter must be set if container.SnapshotKey is set"
        )


def _sandbox_adaptor(record: SandboxPb) -> Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "id":
            return record.sandbox_id, True
        if path[0] == "labels":
            return map_field(path[1:], record.labels)
        return "", False

    return field


def _container_adaptor(record: containers_pb.Container) -> Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "id":
            return record.id, bool(record.id)
        if head == "runtime":
            if len(path) > 1 and path[1] == "name":
                name = record.runtime.name if record.runtime is not None else ""
                return name, bool(name)
            return "", False
        if head == "image":
            return record.image, bool(record.image)
        if head == "labels":
            return map_field(path[1:], record.labels)
        return "", False

    return field
