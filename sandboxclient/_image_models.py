"""The immutable records of images: what the image store holds and what a transfer reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

__all__ = ("Descriptor", "Image", "PullProgress")

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: the blob a digest names, its media type and size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Image:
    """An image record of containerd's image store: a name bound to a target descriptor
    (a manifest or an index) in the content store."""

    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    created_at: datetime | None = None
    """When the record was made (tz-aware UTC)."""
    updated_at: datetime | None = None
    """When the record last changed (tz-aware UTC)."""


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
