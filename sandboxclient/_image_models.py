"""The immutable records of images: what the image store holds and what a transfer reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from ._models import Platform

__all__ = ("Descriptor", "Image", "ImageConfig", "ImageContent", "PullProgress")

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: the blob a digest names, its media type and size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What an image's config says its containers run with (the OCI image config's
    ``config``), and the platform it was built for."""

    platform: Platform
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    """``"80/tcp"``-style keys, sorted."""
    volumes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    stop_signal: str = ""

    @property
    def args(self) -> tuple[str, ...]:
        """The command the image runs: its entrypoint, then its cmd."""
        return self.entrypoint + self.cmd


class ImageContent(Protocol):
    """What reads an image's content for :class:`Image`'s methods (the client's content
    store); records made by hand have none."""

    async def platforms(self, image: Image) -> tuple[Platform, ...]:
        """The platforms ``image`` has content for."""
        ...

    async def size(self, image: Image, platform: Platform | None) -> int:
        """The bytes of ``image``'s content for ``platform``."""
        ...

    async def config(self, image: Image, platform: Platform | None) -> ImageConfig:
        """``image``'s config for ``platform``."""
        ...


@dataclass(frozen=True, slots=True)
class Image:
    """An image record of containerd's image store: a name bound to a target descriptor
    (a manifest or an index) in the content store.

    The records a Client returns read their content through it (:meth:`platforms`,
    :meth:`size`, :meth:`config`); a record made by hand has no client to read with.
    """

    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    created_at: datetime | None = None
    """When the record was made (tz-aware UTC)."""
    updated_at: datetime | None = None
    """When the record last changed (tz-aware UTC)."""
    content: ImageContent | None = field(default=None, repr=False, compare=False, kw_only=True)
    """What reads the image's content: the Client that returned the record, or None."""

    def _reader(self) -> ImageContent:
        if self.content is None:
            raise ValueError(
                f"image record {self.name!r} has no content reader: "
                "get it from a Client (get_image, list_images, pull)"
            )
        return self.content

    async def platforms(self) -> tuple[Platform, ...]:
        """The platforms the image has a manifest for, as its index lists them (one for
        a single-platform image, read from its config), in the index's order. Entries
        for attestations (``unknown/unknown``) are left out, as containerd does."""
        return await self._reader().platforms(self)

    async def size(self, platform: Platform | None = None) -> int:
        """The bytes the image's content takes for ``platform`` (default: this host's):
        its index, the manifest, config and layers (compressed, as stored), as Go's
        ``Image.Size``. NotFoundError if the platform's content is not in the store."""
        return await self._reader().size(self, platform)

    async def config(self, platform: Platform | None = None) -> ImageConfig:
        """The image's config for ``platform`` (default: this host's): entrypoint, cmd,
        env, working directory, user, exposed ports. NotFoundError if the index has no
        such platform or its content is not in the store."""
        return await self._reader().config(self, platform)


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One step of a transfer (a pull, push, import or export), as the daemon reports it.

    ``event`` is containerd's word for the step (``"downloading"``, ``"complete"``,
    ``"saved"``, ``"Completed import"``, ...); ``name`` what it is about (a layer's or an
    image's name, possibly empty); ``progress`` the bytes done of ``total`` (both 0 where
    the step has no size); ``descriptor`` the blob concerned, when the daemon says.
    """

    event: str
    name: str = ""
    parents: tuple[str, ...] = ()
    progress: int = 0
    total: int = 0
    descriptor: Descriptor | None = None
