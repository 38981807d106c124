"""The stand-in's Transfer service: image import and export, no registry.

An import (``ImageImportStream`` to ``ImageStore``) reads the archive the client sends on
its stream into a spool in the stand-in's directory (at most :data:`~._archives.MAX_ARCHIVE`
bytes), stores its blobs (see :mod:`._archives`), names each image of its index as
containerd's image store does (the ``io.containerd.image.name`` annotation; else
``org.opencontainers.image.ref.name``, a tag put after the import's prefix; else
``prefix@digest``), writes the records and unpacks each for the platforms asked into the
stand-in's snapshotter (a committed snapshot per layer, named by its chain id, each layer
applied as hostile input, see :mod:`._layers`, and checked against its diff id). Progress
goes to the progress stream as containerd's: ``Importing``, ``saved`` for each image,
``Completed import``. An export (``ImageStore`` to ``ImageExportStream``) sends the OCI
archive of the images named, for the platforms asked (this host's by default) or all.

A pull or a push (an ``OCIRegistry`` source or destination) is UNIMPLEMENTED, saying why:
the stand-in has no registry client. A failed import leaves no record, snapshot or blob it
made; the spool goes with the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import betterproto2
from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._golang import go_quote
from .._image_models import Descriptor
from .._imageops._content import INDEX_TYPES, ContentStore
from .._imageops._platforms import host_platform, platform_matches
from .._models import Platform
from .._plumbing._rootfs import chain_id
from .._serve._refusals import invalid_argument, not_found
from .._serve._server import current_namespace
from .._wire import _pb
from .._wire._pb import AnyPb, DescriptorPb, EmptyPb, PlatformPb, images_pb
from ..errors import ContainerdError, NotFoundError
from ._archives import MAX_ARCHIVE, ExportImage, read_archive, write_archive
from ._collector import Collector
from ._contentstore import BlobStore, NamespaceBlobs
from ._exchange import Exchange
from ._imageservice import ImageRecords
from ._layers import LayerError, apply_layer
from ._services import Binder
from ._snapshots import SNAPSHOTTER, SnapshotTable
from ._streams import OpenStream, StreamTable

__all__ = ("NO_REGISTRY", "TransferService")

NO_REGISTRY = (
    "the stand-in FakeContainerd has no registry client: it cannot pull or push; import "
    "an archive instead (Client.import_image, or sandboxclient.testing's userland_archive)"
)
_PREFIX = "containerd.types.transfer."


def _parse(value: AnyPb | None, what: str) -> tuple[str, Any]:
    if value is None:
        raise invalid_argument(f"{what} must be set")
    name = value.type_url.removeprefix("type.googleapis.com/")
    classes: dict[str, type[betterproto2.Message]] = {
        "ImageImportStream": _pb.transfer_types_pb.ImageImportStream,
        "ImageExportStream": _pb.transfer_types_pb.ImageExportStream,
        "ImageStore": _pb.transfer_types_pb.ImageStore,
        "OCIRegistry": _pb.transfer_types_pb.OciRegistry,
    }
    kind = name.removeprefix(_PREFIX)
    cls = classes.get(kind) if name.startswith(_PREFIX) else None
    if cls is None:
        raise GRPCError(
            Status.UNIMPLEMENTED, f"unsupported {what} type {go_quote(name)}: not implemented"
        )
    try:
        return kind, cls.parse(value.value)
    except Exception:
        raise invalid_argument(f"undecodable {name}") from None


def _platform(pb: PlatformPb | None) -> Platform:
    if pb is None:
        return host_platform()
    return Platform(pb.os, pb.architecture, pb.variant, pb.os_version)


def _descriptor_pb(d: Descriptor) -> DescriptorPb:
    return DescriptorPb(media_type=d.media_type, digest=d.digest, size=d.size)


def _progress(event: str, name: str = "", desc: Descriptor | None = None) -> AnyPb:
    message = _pb.transfer_types_pb.Progress(
        event=event, name=name, desc=_descriptor_pb(desc) if desc else None
    )
    return AnyPb(type_url=_PREFIX + "Progress", value=bytes(message))


def _image_names(annotations: dict[str, str], digest: str, store: Any) -> list[str]:
    """The names containerd's image store gives an imported index entry."""
    names: list[str] = []
    for ref in store.extra_references:
        if not ref.is_prefix:
            continue
        named = annotations.get("io.containerd.image.name", "")
        tag = annotations.get("org.opencontainers.image.ref.name", "")
        if not named and tag:
            named = tag if any(c in tag for c in ":/@") else f"{ref.name}:{tag}"
        if named:
            names.append(named)
            if ref.add_digest and not ref.skip_named_digest:
                names.append(f"{ref.name}@{digest}")
        elif ref.add_digest:
            names.append(f"{ref.name}@{digest}")
    if store.name:
        names.append(store.name)
    names += [r.name for r in store.extra_references if not r.is_prefix and r.name]
    return list(dict.fromkeys(names))


class TransferService(_pb.transfer_pb.TransferBase):
    """containerd's Transfer service for imports and exports (see the module)."""

    def __init__(
        self,
        *,
        directory: str,
        streams: StreamTable,
        blobs: BlobStore,
        images: ImageRecords,
        snapshots: SnapshotTable,
        events: Exchange,
        bind: Binder,
        collector: Collector,
    ) -> None:
        self._collector = collector
        self._directory = directory
        self._streams = streams
        self._blobs = blobs
        self._images = images
        self._snapshots = snapshots
        self._events = events
        self._bind = bind

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def transfer(self, message: Any) -> EmptyPb:
        """Transfer: an import or an export; UNIMPLEMENTED for a registry."""
        namespace = current_namespace()
        source_kind, source = _parse(message.source, "source")
        dest_kind, dest = _parse(message.destination, "destination")
        if "OCIRegistry" in (source_kind, dest_kind):
            raise GRPCError(Status.UNIMPLEMENTED, NO_REGISTRY)
        progress_id = message.options.progress_stream if message.options else ""
        progress = self._streams.take(namespace, progress_id) if progress_id else None
        try:
            if (source_kind, dest_kind) == ("ImageImportStream", "ImageStore"):
                with self._collector.held(namespace):
                    await self._import(namespace, source, dest, progress)
            elif (source_kind, dest_kind) == ("ImageStore", "ImageExportStream"):
                await self._export(namespace, source, dest)
            else:
                raise GRPCError(
                    Status.UNIMPLEMENTED,
                    f"transfer from {source_kind} to {dest_kind} is not supported: not implemented",
                )
        finally:
            if progress is not None:
                progress.finish()
        return EmptyPb()

    # -- import ---------------------------------------------------------------------------

    async def _import(
        self, namespace: str, source: Any, store: Any, progress: OpenStream | None
    ) -> None:
        # As containerd: an unpack into a snapshotter it has not configured is skipped, and
        # an import whose unpacks are all skipped is refused.
        unpacks = [u for u in store.unpacks if u.snapshotter in ("", SNAPSHOTTER)]
        if store.unpacks and not unpacks:
            raise invalid_argument("unable to initialize unpacker: no unpack platforms defined")
        stream = self._streams.take(namespace, source.stream)
        try:
            if progress is not None:
                await progress.send(_progress("Importing"))
            with tempfile.TemporaryFile(dir=self._directory) as spool:
                await _receive(stream, lambda chunk: asyncio.to_thread(spool.write, chunk))
                index, added = await self._snapshots.workers.run(
                    lambda stop: read_archive(spool, self._blobs, namespace, stop)
                )
        finally:
            stream.finish()
        made: list[str] = []
        try:
            pending, saved = self._named(namespace, index, store)
            # Unpacked before any record is written, as containerd unpacks while it fetches.
            for name, target in saved:
                for unpack in unpacks:
                    await self._unpack(namespace, name, target, _platform(unpack.platform), made)
            self._write(namespace, pending)
        except BaseException:
            removed: list[str] = []
            for key in reversed(made):
                with contextlib.suppress(GRPCError):
                    removed.append(self._snapshots.remove(namespace, key))
            for digest in added:
                with contextlib.suppress(GRPCError):
                    self._blobs.delete(namespace, digest)
            await self._snapshots.remove_files(*removed)
            raise
        for name, target in saved:
            stored = self._images.of(namespace).get(name)
            if stored is not None:
                created = stored.created_at == stored.updated_at
                topic = "/images/create" if created else "/images/update"
                event = (images_pb.ImageCreate if created else images_pb.ImageUpdate)(
                    name=name, labels=dict(stored.labels)
                )
                self._events.publish(topic, event)
            if progress is not None:
                await progress.send(_progress("saved", name, target))
        if progress is not None:
            await progress.send(_progress("Completed import"))

    def _named(
        self, namespace: str, index: dict[str, Any], store: Any
    ) -> tuple[list[images_pb.Image], list[tuple[str, Descriptor]]]:
        """The records an import writes, and each name with its target."""
        saved: list[tuple[str, Descriptor]] = []
        pending: list[images_pb.Image] = []
        for entry in index["manifests"]:
            if not isinstance(entry, dict):
                raise invalid_argument("index.json has a descriptor that is not an object")
            digest, size = entry.get("digest"), entry.get("size")
            media_type = entry.get("mediaType", "")
            annotations = entry.get("annotations") or {}
            if (
                not isinstance(digest, str)
                or type(size) is not int
                or not isinstance(media_type, str)
                or not isinstance(annotations, dict)
            ):
                raise invalid_argument("index.json has a descriptor without digest and size")
            if not self._blobs.has(namespace, digest):
                raise not_found(f"content digest {digest}")
            target = Descriptor(media_type, digest, size)
            for name in _image_names(
                {str(k): str(v) for k, v in annotations.items()}, digest, store
            ):
                pending.append(
                    images_pb.Image(
                        name=name,
                        labels=dict(store.labels),
                        target=DescriptorPb(media_type=media_type, digest=digest, size=size),
                    )
                )
                saved.append((name, target))
        return pending, saved

    def _write(self, namespace: str, pending: list[images_pb.Image]) -> None:
        records = self._images.of(namespace)
        for image in pending:
            previous = records.get(image.name)
            stored = self._images.add(namespace, image)
            if previous is not None:
                stored.created_at = previous.created_at

    async def _unpack(
        self,
        namespace: str,
        name: str,
        target: Descriptor,
        platform: Platform,
        made: list[str],
    ) -> None:
        reader = ContentStore(source=NamespaceBlobs(self._blobs, namespace))
        manifest = target
        try:
            if target.media_type in INDEX_TYPES:
                try:
                    _, manifest = await reader.manifest_for(name, target, platform)
                except NotFoundError:
                    return  # nothing for this platform: nothing to unpack
            _, layers, diff_ids = await reader.parts(name, manifest)
        except NotFoundError as exc:
            raise GRPCError(Status.NOT_FOUND, exc.message) from None
        except ContainerdError as exc:
            raise invalid_argument(exc.message) from None
        parent = ""
        for at, layer in enumerate(layers):
            chain = chain_id(diff_ids[: at + 1])
            if chain in self._snapshots.keys(namespace):
                parent = chain
                continue
            if not self._blobs.has(namespace, layer.digest):
                raise not_found(f"content digest {layer.digest}")
            key = f"extract-{secrets.token_hex(8)} {chain}"
            path = self._blobs.path(layer.digest)
            expected = diff_ids[at]
            await self._snapshots.create(
                namespace, key, parent, {}, _pb.snapshots_pb.Kind.ACTIVE, _applier(path, expected)
            )
            try:
                self._snapshots.commit(namespace, chain, key, {})
            except BaseException:
                await self._snapshots.remove_files(self._snapshots.remove(namespace, key))
                raise
            made.append(chain)
            parent = chain

    # -- export ---------------------------------------------------------------------------

    async def _export(self, namespace: str, store: Any, dest: Any) -> None:
        names = [store.name, *(r.name for r in store.extra_references if not r.is_prefix)]
        names = [n for n in names if n]
        records = self._images.of(namespace)
        reader = ContentStore(source=NamespaceBlobs(self._blobs, namespace))
        wanted = [_platform(p) for p in dest.platforms]
        if not wanted and not dest.all_platforms:
            wanted = [host_platform()]
        images: list[ExportImage] = []
        for name in names:
            record = records.get(name)
            if record is None or record.target is None:
                raise not_found(f"image {go_quote(name)}")
            t = record.target
            target = Descriptor(t.media_type, t.digest, t.size)
            try:
                images.append(await _export_image(reader, name, target, wanted))
            except ContainerdError as exc:
                status = Status.NOT_FOUND if isinstance(exc, NotFoundError) else Status.UNKNOWN
                raise GRPCError(status, exc.message) from None
        for image in images:
            for digest in image.blobs:
                if not self._blobs.has(namespace, digest):
                    raise not_found(f"content digest {digest}")
        stream = self._streams.take(namespace, dest.stream)
        try:
            with tempfile.TemporaryFile(dir=self._directory) as spool:
                await self._snapshots.workers.run(
                    lambda stop: write_archive(spool, images, self._blobs)
                )
                spool.seek(0)
                await stream.write_bytes(lambda size: asyncio.to_thread(spool.read, size))
        finally:
            stream.finish()


async def _export_image(
    reader: ContentStore, name: str, target: Descriptor, wanted: list[Platform]
) -> ExportImage:
    """What of image ``name`` an export holds: for an index, the index and the manifests
    of the platforms wanted (all when none is named)."""
    blobs: list[str] = [target.digest]
    if target.media_type not in INDEX_TYPES:
        config, layers, _ = await reader.parts(name, target)
        blobs += [config.digest, *(d.digest for d in layers)]
        return ExportImage(
            name,
            target.media_type,
            target.digest,
            target.size,
            blobs,
            config.digest,
            [d.digest for d in layers],
        )
    for manifest, platform in await reader.children(name, target):
        if wanted and (platform is None or not any(platform_matches(platform, w) for w in wanted)):
            continue
        config, layers, _ = await reader.parts(name, manifest)
        blobs += [manifest.digest, config.digest, *(d.digest for d in layers)]
    return ExportImage(name, target.media_type, target.digest, target.size, blobs)


def _applier(path: str, expected: str) -> Callable[[str, threading.Event], None]:
    def fill(root: str, stop: threading.Event) -> None:
        try:
            with open(path, "rb") as layer:
                got = apply_layer(root, layer, stop)
        except LayerError as exc:
            raise invalid_argument(f"failed to extract layer: {exc.message}") from None
        if got != expected:
            raise GRPCError(
                Status.FAILED_PRECONDITION,
                f"failed to extract layer: diff id {got} is not {expected}, the config's: "
                "failed precondition",
            )

    return fill


async def _receive(stream: OpenStream, write: Callable[[bytes], Awaitable[object]]) -> None:
    async def sink(chunk: bytes) -> None:
        await write(chunk)

    try:
        await stream.read_bytes(sink, MAX_ARCHIVE)
    except GRPCError:
        raise
    except Exception as exc:  # the client reset the stream, or the spool's disk is full
        raise GRPCError(Status.CANCELLED, f"the import stream ended: {exc}") from None
