"""What the stand-in holds of images besides their records, per namespace: blobs,
snapshots and leases, as the Namespaces service sees them (a namespace holding any of them
exists; one holding blobs or snapshots is not empty, as containerd 2.1.9 words it)."""

from __future__ import annotations

from ._contentstore import BlobStore
from ._leases import LeaseTable
from ._snapshots import SNAPSHOTTER, SnapshotTable

__all__ = ("ImageState",)


class ImageState:
    """The stand-in's blobs, snapshots and leases, by namespace."""

    def __init__(self, blobs: BlobStore, snapshots: SnapshotTable, leases: LeaseTable) -> None:
        self._blobs = blobs
        self._snapshots = snapshots
        self._leases = leases

    def namespaces(self) -> set[str]:
        """The namespaces holding a blob, a snapshot or a lease."""
        return self._blobs.namespaces() | self._snapshots.namespaces() | self._leases.namespaces()

    def held(self, namespace: str) -> tuple[list[str], list[str]]:
        """The blobs of ``namespace`` and the snapshotters holding snapshots of it."""
        snapshotters = [SNAPSHOTTER] if self._snapshots.keys(namespace) else []
        return self._blobs.digests(namespace), snapshotters

    def drop(self, namespace: str) -> None:
        """``namespace`` is deleted: forget its leases (it holds no blob or snapshot)."""
        self._leases.drop_namespace(namespace)
