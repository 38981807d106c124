"""The stand-in's garbage collector: what nothing references any more goes, as containerd's.

Run in the namespace of a request that deleted something (an image, a lease, a container),
at once rather than on containerd's schedule. What is kept: the blobs an image's target
reaches (its indexes, manifests, configs and layers) and the snapshots its layers unpack to
(their chain ids); what a lease holds, unless its ``containerd.io/gc.expire`` time has passed
(the lease then goes first); the snapshot a container record names; and the parents of
every snapshot kept. Everything else of the namespace is removed: blobs, and snapshots
(children before parents). Content that cannot be read as an image collects nothing: a
collector that is not sure keeps everything; nor does a namespace an import is writing to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._image_models import Descriptor
from .._imageops._content import INDEX_TYPES, MAX_DEPTH, ContentStore
from .._plumbing._rootfs import chain_id
from .._wire._pb import containers_pb
from ..errors import ContainerdError
from ._contentstore import BlobStore, NamespaceBlobs
from ._imageservice import ImageRecords
from ._leases import LeaseTable
from ._records import Records
from ._snapshots import SNAPSHOTTER, SnapshotTable

__all__ = ("Collector",)

_EXPIRE = "containerd.io/gc.expire"
_SNAPSHOTS = f"snapshots/{SNAPSHOTTER}"


class _Unsure(Exception):
    """An image's content could not be walked: collect nothing."""


def _expired(labels: dict[str, str], now: datetime) -> bool:
    text = labels.get(_EXPIRE)
    if not text:
        return False
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when.tzinfo is not None and when <= now


class Collector:
    """Collects one namespace's unreferenced blobs and snapshots (see the module)."""

    def __init__(
        self,
        blobs: BlobStore,
        snapshots: SnapshotTable,
        leases: LeaseTable,
        images: ImageRecords,
        records: Records,
    ) -> None:
        self._blobs = blobs
        self._snapshots = snapshots
        self._leases = leases
        self._images = images
        self._records = records
        self._busy: dict[str, int] = {}

    @contextlib.contextmanager
    def held(self, namespace: str) -> Iterator[None]:
        """No collection in ``namespace`` meanwhile (an import writes content there that no
        image names yet; containerd holds it with the transfer's lease)."""
        self._busy[namespace] = self._busy.get(namespace, 0) + 1
        try:
            yield
        finally:
            self._busy[namespace] -= 1
            if not self._busy[namespace]:
                del self._busy[namespace]

    async def collect(self, namespace: str) -> None:
        """Remove what nothing references in ``namespace`` (call it inside its request)."""
        if namespace in self._busy:
            return
        now = utcnow()
        for lease_id in self._leases.ids(namespace):
            if _expired(self._leases.get(namespace, lease_id).labels, now):
                self._leases.delete(namespace, lease_id)
        blobs: set[str] = set()
        snapshots: set[str] = set()
        reader = ContentStore(source=NamespaceBlobs(self._blobs, namespace))
        try:
            for image in list(self._images.of(namespace).values()):
                if image.target is not None:
                    target = image.target
                    root = Descriptor(target.media_type, target.digest, target.size)
                    await self._walk(namespace, reader, image.name, root, (blobs, snapshots), 0)
        except _Unsure:
            return
        for lease_id in self._leases.ids(namespace):
            for kind, resource in self._leases.get(namespace, lease_id).resources:
                if kind == "content":
                    blobs.add(resource)
                elif kind == _SNAPSHOTS:
                    snapshots.add(resource)
        for record in self._records.container_list(containers_pb.ListContainersRequest()):
            if record.snapshotter == SNAPSHOTTER and record.snapshot_key:
                snapshots.add(record.snapshot_key)
        await self._snapshots.remove_files(*self._sweep(namespace, blobs, snapshots))

    async def _walk(
        self,
        namespace: str,
        reader: ContentStore,
        name: str,
        target: Descriptor,
        kept: tuple[set[str], set[str]],
        depth: int,
    ) -> None:
        blobs, snapshots = kept
        if target.digest in blobs or not self._blobs.has(namespace, target.digest):
            blobs.add(target.digest)
            return  # seen, or not there (a platform not imported): nothing below to keep
        blobs.add(target.digest)
        try:
            if target.media_type in INDEX_TYPES:
                if depth >= MAX_DEPTH:
                    raise _Unsure
                for child, _ in await reader.children(name, target):
                    await self._walk(namespace, reader, name, child, kept, depth + 1)
                return
            config, layers, diff_ids = await reader.parts(name, target)
        except ContainerdError:
            raise _Unsure from None
        blobs.add(config.digest)
        blobs.update(layer.digest for layer in layers)
        for at in range(1, len(diff_ids) + 1):
            with contextlib.suppress(ValueError):
                snapshots.add(chain_id(diff_ids[:at]))

    def _sweep(self, namespace: str, blobs: set[str], snapshots: set[str]) -> list[str]:
        """Remove what is not kept, at once; the directories of the snapshots removed."""
        removed: list[str] = []
        keys = set(self._snapshots.keys(namespace))
        kept = {k for k in snapshots if k in keys}
        queue = list(kept)
        while queue:  # the parents of what is kept are kept
            parent = self._snapshots.get(namespace, queue.pop()).parent
            if parent and parent in keys and parent not in kept:
                kept.add(parent)
                queue.append(parent)
        doomed = keys - kept
        while doomed:
            parents = {self._snapshots.get(namespace, k).parent for k in doomed}
            leaves = doomed - parents
            if not leaves:
                break
            for key in sorted(leaves):
                with contextlib.suppress(GRPCError):
                    removed.append(self._snapshots.remove(namespace, key))
            doomed -= leaves
        for digest in self._blobs.digests(namespace):
            if digest not in blobs:
                with contextlib.suppress(GRPCError):
                    self._blobs.delete(namespace, digest)
        return removed
