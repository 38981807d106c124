"""``new_sandbox``'s ``disk=``: the size of an image sandbox's writable root layer.

A sandbox rooted on an image (``image=``) writes into a layer of its own over the image's;
the isolating sandboxer keeps that layer on a tmpfs of a bounded size, counted in the
sandbox's memory (see ``docs/security.md``, "Image roots"), so a full root answers
``ENOSPC`` inside and never fills the host's disk. ``disk`` is that size in bytes, an int
or a size such as ``"256Mi"`` (one parser with ``memory=``, :mod:`._sizes`), carried to the
sandboxer in the spec's annotation :data:`DISK_ANNOTATION`; without it the sandboxer's
``--default-disk`` holds. Since the layer lives in the sandbox's memory, the sandboxer
refuses one larger than the sandbox's memory limit.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from ._sizes import checked_size

__all__ = ("DISK_ANNOTATION", "MIN_DISK", "checked_disk", "with_disk")

DISK_ANNOTATION: Final = "io.sandboxclient.disk"
"""The spec annotation giving the bytes of the sandbox's writable root layer (decimal)."""

MIN_DISK: Final = 2**20
"""The smallest writable root layer a sandbox may ask for (1 MiB)."""


def checked_disk(disk: object, what: str = "disk=") -> int:
    """Bytes from ``disk`` (``what`` names it in errors): an int of at least
    :data:`MIN_DISK`, or a size string (see :mod:`._sizes`). TypeError or ValueError."""
    at_least = f"at least {MIN_DISK} bytes (1Mi)"
    return checked_size(disk, what, example="256Mi", least=MIN_DISK, at_least=at_least)


def with_disk(spec: Mapping[str, Any] | None, disk: int | str | None) -> Mapping[str, Any] | None:
    """``spec`` (a copy, or a new spec) asking for a writable root layer of ``disk`` bytes
    in its annotation; ``spec`` itself when ``disk`` is None. TypeError or ValueError naming
    ``disk=``, also when the spec's annotation asks for another size."""
    if disk is None:
        return spec
    size = checked_disk(disk)
    result: dict[str, Any] = copy.deepcopy(dict(spec)) if spec is not None else {}
    annotations = result.get("annotations")
    if annotations is None:
        annotations = result["annotations"] = {}
    if not isinstance(annotations, dict):
        raise TypeError(f"spec annotations must be a mapping, got {type(annotations).__name__}")
    given = annotations.get(DISK_ANNOTATION)
    if given is not None and given != str(size):
        raise ValueError(
            f"disk={disk!r} but the spec's annotation {DISK_ANNOTATION} is {given!r}: "
            "give one of them"
        )
    annotations[DISK_ANNOTATION] = str(size)
    return result
