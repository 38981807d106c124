"""A container's root filesystem from an image in containerd's image store.

The image's manifest (the one for this platform, if it is an index) and its config are read
from the content store and checked against their digests (by the images' content reader,
``_imageops._content``); the config's layer ``diff_ids``
give the chain id of the image's top snapshot, which must already be unpacked in the
snapshotter (``ctr images import`` unpacks into the default one). A writable snapshot is
prepared on it for the container, under a lease so that the garbage collector cannot take it
before the container record names it; the record then keeps it alive, and deleting the
container removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from .._facts._golang import go_quote
from .._facts._wirenames import LEASE_HEADER
from .._image_models import Descriptor
from .._imageops._content import ContentStore
from .._imageops._leases import delete_lease, expiring_lease
from .._models import Mount
from .._wire._convert import mount_from_pb
from .._wire._pb import images_pb, leases_pb, snapshots_pb
from ..errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from ._connection import Connection, Timeout

__all__ = ("DEFAULT_SNAPSHOTTER", "ImageConfig", "ImageRoot", "RootFS")

DEFAULT_SNAPSHOTTER = "overlayfs"
"""containerd's default snapshotter on Linux."""

_LEASE_EXPIRY = timedelta(hours=1)
_RESOLVED_KEPT = 64


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What an image says its process should be (its config's ``config``)."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @property
    def args(self) -> tuple[str, ...]:
        """The command the image runs: its entrypoint, then its cmd."""
        return self.entrypoint + self.cmd


@dataclass(frozen=True, slots=True)
class ImageRoot:
    """An image resolved for this platform: its top snapshot's chain id and its config."""

    name: str
    chain_id: str
    config: ImageConfig = field(default_factory=ImageConfig)


def chain_id(diff_ids: Sequence[str]) -> str:
    """The chain id of layers with these diff ids (the image spec's ``ChainID``)."""
    if not diff_ids:
        raise ValueError("an image without layers has no root filesystem")
    chain = diff_ids[0]
    for diff in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff}".encode()).hexdigest()
    return chain


class RootFS:
    """Images, content, snapshots and leases, as far as a container's root needs them."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # What an image's content says, by its target's digest (content is immutable and
        # checked against its digest when read): a name's new target is read afresh.
        self._resolved: dict[tuple[str, str, int], ImageRoot] = {}

    async def resolve(self, ref: str, *, timeout: Timeout) -> ImageRoot:
        """Read image ``ref``'s manifest and config; NotFoundError if it is not there."""
        try:
            resp = await self._connection.call(
                self._connection.stub(images_pb.ImagesStub).get,
                images_pb.GetImageRequest(name=ref),
                timeout,
                idempotent=True,
            )
        except NotFoundError:
            raise NotFoundError(
                f"image {go_quote(ref)} not found in namespace's image store"
            ) from None
        found = resp.image.target if resp.image is not None else None
        if found is None:
            raise NotFoundError(f"image {go_quote(ref)} has no target")
        key = (found.media_type, found.digest, found.size)
        known = self._resolved.get(key)
        if known is not None:
            return dataclasses.replace(known, name=ref)
        resolved = await self._resolve(ref, Descriptor(*key), timeout)
        if len(self._resolved) >= _RESOLVED_KEPT:
            self._resolved.pop(next(iter(self._resolved)))
        self._resolved[key] = resolved
        return resolved

    async def _resolve(self, ref: str, target: Descriptor, timeout: Timeout) -> ImageRoot:
        reader = ContentStore(self._connection, timeout=timeout)
        _, manifest = await reader.manifest_for(ref, target, None)
        config_desc, _, diff_ids = await reader.parts(ref, manifest)
        config = await reader.read_json(ref, config_desc)
        try:
            top = chain_id(diff_ids)
        except ValueError as exc:
            raise InvalidArgumentError(f"image {go_quote(ref)}: {exc}") from None
        return ImageRoot(ref, top, _image_config(config.get("config")))

    async def prepare(
        self,
        image: ImageRoot,
        key: str,
        snapshotter: str,
        *,
        labels: Mapping[str, str] | None = None,
        timeout: Timeout,
    ) -> str:
        """Prepare snapshot ``key`` (with ``labels``) on the image's top snapshot under a new
        lease; returns the lease id, which the caller deletes once a container record names
        the snapshot (the lease expires within the hour: a client that dies meanwhile
        leaves the snapshot to the garbage collector)."""
        snapshots = self._connection.stub(snapshots_pb.SnapshotsStub)
        lease = await self._lease(timeout)
        try:
            await self._connection.call(
                snapshots.prepare,
                snapshots_pb.PrepareSnapshotRequest(
                    snapshotter=snapshotter,
                    key=key,
                    parent=image.chain_id,
                    labels=dict(labels or {}),
                ),
                timeout,
                metadata={LEASE_HEADER: lease},
            )
        except BaseException as exc:
            await self._connection.run_shielded(self.release(lease))
            if isinstance(exc, NotFoundError):  # the parent: the image's top layer
                raise FailedPreconditionError(
                    f"image {go_quote(image.name)} is not unpacked for snapshotter "
                    f"{go_quote(snapshotter)}: "
                    "unpack it there first (ctr images import unpacks into the default one)"
                ) from exc
            raise
        return lease

    async def _lease(self, timeout: Timeout) -> str:
        return await expiring_lease(self._connection, "sandboxclient", _LEASE_EXPIRY, timeout)

    async def keep(
        self,
        lease: str,
        snapshotter: str,
        key: str,
        *,
        labels: Mapping[str, str],
        timeout: Timeout,
    ) -> None:
        """Create lease ``lease`` (with ``labels``, no expiry) holding snapshot ``key``: it
        keeps the snapshot, which no container record names, until the lease is deleted."""
        stub = self._connection.stub(leases_pb.LeasesStub)
        await self._connection.call(
            stub.create, leases_pb.CreateRequest(id=lease, labels=dict(labels)), timeout
        )
        resource = leases_pb.Resource(id=key, type=f"snapshots/{snapshotter}")
        await self._connection.call(
            stub.add_resource, leases_pb.AddResourceRequest(id=lease, resource=resource), timeout
        )

    async def release(self, lease: str) -> None:
        """Delete a lease (what it protected is then kept only by what names it)."""
        await delete_lease(self._connection, lease)

    async def mounts(self, snapshotter: str, key: str, *, timeout: Timeout) -> list[Mount]:
        """The mounts of snapshot ``key``, as a task's ``rootfs`` takes them."""
        resp = await self._connection.call(
            self._connection.stub(snapshots_pb.SnapshotsStub).mounts,
            snapshots_pb.MountsRequest(snapshotter=snapshotter, key=key),
            timeout,
            idempotent=True,
        )
        return [mount_from_pb(m) for m in resp.mounts]

    async def remove(self, snapshotter: str, key: str, *, timeout: Timeout) -> None:
        """Remove snapshot ``key``; one already gone is fine."""
        with contextlib.suppress(NotFoundError):
            await self._connection.call(
                self._connection.stub(snapshots_pb.SnapshotsStub).remove,
                snapshots_pb.RemoveSnapshotRequest(snapshotter=snapshotter, key=key),
                timeout,
            )


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return ()


def _image_config(raw: object) -> ImageConfig:
    if not isinstance(raw, Mapping):
        return ImageConfig()
    working_dir, user = raw.get("WorkingDir"), raw.get("User")
    return ImageConfig(
        env=_strings(raw.get("Env")),
        entrypoint=_strings(raw.get("Entrypoint")),
        cmd=_strings(raw.get("Cmd")),
        working_dir=working_dir if isinstance(working_dir, str) else "",
        user=user if isinstance(user, str) else "",
    )
