"""The stand-in's Namespaces service: a namespace's labels, as containerd keeps them.

What clients read there is a namespace's labels (containerd 2.2's Go client takes its
default sandboxer from ``containerd.io/defaults/sandboxer``, its default runtime from
``containerd.io/defaults/runtime``), so the stand-in serves Get, Create and Update with
containerd's answers: Get of a namespace never written answers its name and no labels;
Create validates the name and the labels and refuses one that exists (created, labelled,
or holding records); Update sets the ``labels.<key>`` paths it names (an empty value
removes the label), or with no paths replaces every label, answers an empty response as
containerd does, and refuses any other path. List answers every namespace that exists
(created, labelled, or written in; containerd ignores the request's filter, and so does
this) with its labels, in name order. Delete refuses, as containerd's metadata store does, a
namespace that still holds images or containers (FAILED_PRECONDITION ``namespace "x" must be
empty, but it still has images, containers``) and one that does not exist (NOT_FOUND
``namespace "x"``); sandbox records do not hold a namespace and go with it. Create, Update
and Delete publish ``/namespaces/create``, ``/namespaces/update`` and
``/namespaces/delete``.
"""

from __future__ import annotations

from collections.abc import Mapping

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._golang import go_quote
from .._facts._validation import identifier_problem, label_size_problem
from .._serve._refusals import already_exists, invalid_argument
from .._wire._pb import EmptyPb, namespaces_pb
from .._wire._pb import event_payloads_pb as ev
from ._exchange import Exchange
from ._imageservice import ImageRecords
from ._imagestate import ImageState
from ._records import Records
from ._services import Binder

__all__ = ("NamespacesService",)


class NamespacesService(namespaces_pb.NamespacesBase):
    """containerd's Namespaces service, for a namespace's labels; events go to ``events``."""

    def __init__(
        self,
        records: Records,
        images: ImageRecords,
        bind: Binder,
        events: Exchange,
        state: ImageState | None = None,
    ) -> None:
        self._records = records
        self._images = images
        self._state = state
        self._bind = bind
        self._events = events
        self._labels: dict[str, dict[str, str]] = {}

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    def _names(self) -> set[str]:
        held = self._state.namespaces() if self._state is not None else set()
        return set(self._labels) | self._records.written_namespaces() | self._images.written | held

    def _exists(self, name: str) -> bool:
        return name in self._names()

    async def list(
        self, message: namespaces_pb.ListNamespacesRequest
    ) -> namespaces_pb.ListNamespacesResponse:
        """List: every namespace, with its labels (the filter is not read, as containerd's)."""
        return namespaces_pb.ListNamespacesResponse(
            namespaces=[
                namespaces_pb.Namespace(name=name, labels=dict(self._labels.get(name, {})))
                for name in sorted(self._names())
            ]
        )

    async def delete(self, message: namespaces_pb.DeleteNamespaceRequest) -> EmptyPb:
        """Delete: an empty namespace, with its labels and sandbox records."""
        name = message.name
        blobs, snapshotters = self._state.held(name) if self._state else ([], [])
        held = [
            kind
            for kind, found in (
                ("images", self._images.of(name)),
                ("blobs", blobs),
                ("containers", self._records.container_ids(name)),
            )
            if found
        ]
        held += [f"snapshots on {go_quote(s)} snapshotter" for s in snapshotters]
        if held:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"namespace {go_quote(name)} must be empty, but it still has "
                f"{', '.join(held)}: failed precondition",
            )
        if not self._exists(name):
            raise GRPCError(Status.NOT_FOUND, f"namespace {go_quote(name)}: not found")
        self._labels.pop(name, None)
        self._records.drop_namespace(name)
        self._images.drop_namespace(name)
        if self._state is not None:
            self._state.drop(name)
        self._events.publish("/namespaces/delete", ev.NamespaceDelete(name=name), name)
        return EmptyPb()

    async def get(
        self, message: namespaces_pb.GetNamespaceRequest
    ) -> namespaces_pb.GetNamespaceResponse:
        """Get: the namespace's labels (none for one never written)."""
        labels = dict(self._labels.get(message.name, {}))
        return namespaces_pb.GetNamespaceResponse(
            namespace=namespaces_pb.Namespace(name=message.name, labels=labels)
        )

    async def create(
        self, message: namespaces_pb.CreateNamespaceRequest
    ) -> namespaces_pb.CreateNamespaceResponse:
        """Create: a new namespace with its labels."""
        namespace = message.namespace or namespaces_pb.Namespace()
        problem = identifier_problem(namespace.name)
        if problem is not None:
            raise invalid_argument(problem)
        _check_labels(namespace.labels)
        if self._exists(namespace.name):
            raise already_exists(f"namespace {go_quote(namespace.name)}")
        self._labels[namespace.name] = {k: v for k, v in namespace.labels.items() if v}
        created = ev.NamespaceCreate(name=namespace.name, labels=dict(namespace.labels))
        self._events.publish("/namespaces/create", created, namespace.name)
        return namespaces_pb.CreateNamespaceResponse(namespace=namespace)

    async def update(
        self, message: namespaces_pb.UpdateNamespaceRequest
    ) -> namespaces_pb.UpdateNamespaceResponse:
        """Update: set the labels the mask names, or replace them all."""
        namespace = message.namespace or namespaces_pb.Namespace()
        paths = list(message.update_mask.paths) if message.update_mask is not None else []
        for path in paths:
            if not path.startswith("labels."):
                raise GRPCError(Status.INVALID_ARGUMENT, f"cannot update {go_quote(path)} field")
        changes = (
            {
                p.removeprefix("labels."): namespace.labels.get(p.removeprefix("labels."), "")
                for p in paths
            }
            if paths
            else dict(namespace.labels)
        )
        _check_labels(changes)
        labels = self._labels.setdefault(namespace.name, {})
        if not paths:
            labels.clear()
        for key, value in changes.items():
            if value:
                labels[key] = value
            else:
                labels.pop(key, None)
        updated = ev.NamespaceUpdate(name=namespace.name, labels=dict(namespace.labels))
        self._events.publish("/namespaces/update", updated, namespace.name)
        return namespaces_pb.UpdateNamespaceResponse()


def _check_labels(labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        problem = label_size_problem(key, value)
        if problem is not None:
            raise invalid_argument(f"namespace.Labels: {problem}")
        if not key:  # passes containerd's check, then fails in its store, untyped
            raise GRPCError(Status.UNKNOWN, "key required")
