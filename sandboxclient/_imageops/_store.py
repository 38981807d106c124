"""containerd's image store: the image records (Go's ``client.ImageService()``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping

from .._facts._golang import go_quote
from .._image_models import Image
from .._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from .._wire._images import image_from_pb, image_to_pb
from .._wire._pb import images_pb
from ..errors import NotFoundError
from ._content import ContentStore

__all__ = ("ImageStore",)


def checked_name(name: object, what: str = "name") -> str:
    """``name`` if it is a non-empty string, else ValueError naming ``what``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"image {what} must be a non-empty string")
    return name


class ImageStore:
    """List, read, tag and delete image records; every call in the connection's namespace."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._content = ContentStore(connection)

    def _image(self, pb: images_pb.Image) -> Image:
        return dataclasses.replace(image_from_pb(pb), content=self._content)

    def _stub(self) -> images_pb.ImagesStub:
        return self._connection.stub(images_pb.ImagesStub)

    async def list(self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[Image]:
        """The images matching any of ``filters`` (containerd's filter syntax:
        ``name==x``, ``labels.k==v``, ``target.mediatype~=...``), all of them without."""
        if not all(isinstance(f, str) for f in filters):
            raise TypeError("image filters must be strings")
        resp = await self._connection.call(
            self._stub().list,
            images_pb.ListImagesRequest(filters=list(filters)),
            timeout,
            idempotent=True,
        )
        return [self._image(pb) for pb in resp.images]

    async def get(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Image:
        """Image ``name``; NotFoundError if there is none."""
        checked_name(name)
        resp = await self._connection.call(
            self._stub().get, images_pb.GetImageRequest(name=name), timeout, idempotent=True
        )
        if resp.image is None:
            raise NotFoundError(f"image {go_quote(name)}: not found")
        return self._image(resp.image)

    @property
    def content(self) -> ContentStore:
        """What reads the images' content."""
        return self._content

    async def find(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Image | None:
        """Image ``name``, or None if there is none."""
        try:
            return await self.get(name, timeout=timeout)
        except NotFoundError:
            return None

    async def restore(self, name: str, before: Image | None) -> None:
        """Put record ``name`` back as it was (``before``; None: there was none), its
        content collected before the answer: the undoing of a failed pull, run to its end
        even if the caller is cancelled."""
        await self._connection.run_shielded(self._restore(name, before))

    async def _restore(self, name: str, before: Image | None) -> None:
        if before is None:
            with contextlib.suppress(NotFoundError):
                await self.delete(name, sync=True, timeout=30.0)
            return
        record = image_to_pb(name, before.target, before.labels)
        await self._connection.call(
            self._stub().update, images_pb.UpdateImageRequest(image=record), 30.0
        )

    async def delete(
        self, name: str, *, sync: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Delete image ``name``'s record (NotFoundError if there is none); with ``sync``
        the daemon also collects the content and snapshots nothing else keeps before it
        answers."""
        checked_name(name)
        await self._connection.call(
            self._stub().delete, images_pb.DeleteImageRequest(name=name, sync=sync), timeout
        )

    async def tag(
        self,
        name: str,
        new_name: str,
        *,
        labels: Mapping[str, str] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Image:
        """Record ``new_name`` for image ``name``'s target (with its labels, or ``labels``);
        AlreadyExistsError if ``new_name`` is taken."""
        checked_name(new_name, "new name")
        source = await self.get(name, timeout=timeout)
        record = image_to_pb(new_name, source.target, source.labels if labels is None else labels)
        resp = await self._connection.call(
            self._stub().create, images_pb.CreateImageRequest(image=record), timeout
        )
        assert resp.image is not None
        return self._image(resp.image)
