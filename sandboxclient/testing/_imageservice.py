"""The stand-in's Images service: image records per namespace, answered as containerd does.

An image it lists is what a client created (``Images.Create``, ``Client.tag_image``) or
imported (see the Transfer service's module), or what a test put there
(:meth:`ImageRecords.add`); a Delete runs the garbage collector, if given. Messages, codes
and the ``/images/*`` events are containerd 2.1.9's (checked side by side in
``tests/client/test_images.py``). A Create without a target is refused and counted as a
request that would crash containerd 2.1.9.
"""

from __future__ import annotations

import dataclasses

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._serve._refusals import already_exists, not_found
from .._serve._server import current_namespace
from .._wire._pb import EmptyPb, images_pb
from ._exchange import Exchange
from ._filters import Adaptor, map_field, matches, parse_filters
from ._records import Records
from ._services import Binder, Collect

__all__ = ("ImageRecords", "ImagesService")


@dataclasses.dataclass
class ImageRecords:
    """The image records of every namespace."""

    by_namespace: dict[str, dict[str, images_pb.Image]] = dataclasses.field(default_factory=dict)

    written: set[str] = dataclasses.field(default_factory=set)
    """The namespaces an image was ever written in (and that were not deleted since)."""

    def of(self, namespace: str) -> dict[str, images_pb.Image]:
        """``namespace``'s records by name."""
        return self.by_namespace.setdefault(namespace, {})

    def drop_namespace(self, namespace: str) -> None:
        """Forget ``namespace``'s records (its bucket deleted)."""
        self.by_namespace.pop(namespace, None)
        self.written.discard(namespace)

    def add(self, namespace: str, image: images_pb.Image) -> images_pb.Image:
        """Write ``image`` (times set now) into ``namespace``, replacing one of its name."""
        now = utcnow()
        stored = images_pb.Image(
            name=image.name,
            labels=dict(image.labels),
            target=image.target,
            created_at=now,
            updated_at=now,
        )
        self.of(namespace)[image.name] = stored
        self.written.add(namespace)
        return stored


def _adaptor(record: images_pb.Image) -> Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if not path:
            return "", False
        head, target = path[0], record.target
        if head == "name":
            return record.name, bool(record.name)
        if head == "labels":
            return map_field(path[1:], record.labels)
        if head == "target" and target is not None and len(path) > 1:
            if path[1] == "digest":
                return target.digest, bool(target.digest)
            if path[1] == "mediatype":
                return target.media_type, bool(target.media_type)
        return "", False

    return field


class ImagesService(images_pb.ImagesBase):
    """containerd's Images service over :class:`ImageRecords`; events go to ``events``."""

    def __init__(
        self,
        images: ImageRecords,
        records: Records,
        bind: Binder,
        events: Exchange,
        collect: Collect | None = None,
    ) -> None:
        self._collect = collect
        self._images = images
        self._records = records
        self._bind = bind
        self._events = events

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    def _get(self, name: str) -> images_pb.Image:
        found = self._images.of(current_namespace()).get(name)
        if found is None:
            raise not_found(f"image {go_quote(name)}")
        return found

    async def get(self, message: images_pb.GetImageRequest) -> images_pb.GetImageResponse:
        """Images.Get: one record."""
        return images_pb.GetImageResponse(image=self._get(message.name))

    async def list(self, message: images_pb.ListImagesRequest) -> images_pb.ListImagesResponse:
        """Images.List: the records that pass the filters, by name."""
        filters = parse_filters(message.filters)
        records = self._images.of(current_namespace())
        return images_pb.ListImagesResponse(
            images=[records[n] for n in sorted(records) if matches(filters, _adaptor(records[n]))]
        )

    async def create(self, message: images_pb.CreateImageRequest) -> images_pb.CreateImageResponse:
        """Images.Create: a new record (the daemon's times)."""
        image = message.image
        if image is None or image.target is None:
            raise self._records.crash("image.target")
        if not image.name:
            raise GRPCError(Status.INVALID_ARGUMENT, "Image.Name required")
        namespace = current_namespace()
        if image.name in self._images.of(namespace):
            raise already_exists(f"image {go_quote(image.name)}")
        stored = self._images.add(namespace, image)
        self._events.publish(
            "/images/create", images_pb.ImageCreate(name=stored.name, labels=dict(stored.labels))
        )
        return images_pb.CreateImageResponse(image=stored)

    async def update(self, message: images_pb.UpdateImageRequest) -> images_pb.UpdateImageResponse:
        """Images.Update: the labels and target of an existing record (no field mask: both)."""
        image = message.image
        if image is None:
            raise self._records.crash("image")
        current = self._get(image.name)
        paths = list(message.update_mask.paths) if message.update_mask is not None else []
        if not paths or any(p == "labels" or p.startswith("labels.") for p in paths):
            current.labels = dict(image.labels)
        if (not paths or "target" in paths) and image.target is not None:
            current.target = image.target
        current.updated_at = utcnow()
        self._events.publish(
            "/images/update", images_pb.ImageUpdate(name=current.name, labels=dict(current.labels))
        )
        return images_pb.UpdateImageResponse(image=current)

    async def delete(self, message: images_pb.DeleteImageRequest) -> EmptyPb:
        """Images.Delete: forget a record."""
        self._get(message.name)
        del self._images.of(current_namespace())[message.name]
        self._events.publish("/images/delete", images_pb.ImageDelete(name=message.name))
        if self._collect is not None:
            await self._collect(current_namespace())
        return EmptyPb()
