"""What an archive import saved, read from its progress, the same on every containerd release.

The client imports with a name prefix that names the archive's unnamed images
``prefix@<digest>`` (Go's ``WithDigestRef``). containerd 2.3 and later also save the
archive's own index, the importer's top-level descriptor, under that prefix:
``prefix@<index digest>`` (its Transfer image store now stores a prefix reference that adds
a digest for a descriptor the archive does not name too). 2.2 and earlier skip it. That
record is no image of the archive's: the client sets it aside here and deletes it after the
import, so that an import gives the same images on every release.

The index is the first descriptor the importer stores, so on 2.3 and later its ``saved``
step comes first; it is recognised by its name (the prefix and its own digest) and its type
(an index) as well, and by an image saved after it (an archive always holds one), and never
on an earlier release, where the first saved step may be an unnamed image's
``prefix@<digest>``.
"""

from __future__ import annotations

from typing import Final

from .._image_models import PullProgress
from .._plumbing._version import ContainerdVersion

__all__ = ("SavedNames", "names_own_index")

_INDEX_TYPES: Final = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


def names_own_index(version: ContainerdVersion | None) -> bool:
    """Whether containerd ``version`` saves an imported archive's own index as an image
    (2.3 and later). An unknown version is taken not to: nothing is then set aside."""
    return version is not None and version.at_least(2, 3)


class SavedNames:
    """The names an import's ``saved`` steps report, in the daemon's order, but for the
    record of the archive's own index when the daemon makes one (``index_named``)."""

    def __init__(self, prefix: str, *, index_named: bool) -> None:
        self._names: list[str] = []
        self._candidate = ""
        self._prefix = prefix
        self._expect_index = index_named

    @property
    def names(self) -> list[str]:
        """The archive's images' names. A record set aside as the index's with no image
        saved after it was an image of the archive's after all (a release that names no
        index saved only it): it is then the one name."""
        return list(self._names) if self._names or not self._candidate else [self._candidate]

    @property
    def index(self) -> str:
        """The name of the record of the archive's own index, "" if there is none."""
        return self._candidate if self._names else ""

    def take(self, step: PullProgress) -> bool:
        """Note ``step``; False when it is the own index's ``saved`` step, which the caller
        then does not pass on."""
        if step.event != "saved" or not step.name:
            return True
        first, self._expect_index = self._expect_index, False
        desc = step.descriptor
        if (
            first
            and desc is not None
            and desc.media_type in _INDEX_TYPES
            and step.name == f"{self._prefix}@{desc.digest}"
        ):
            self._candidate = step.name
            return False
        if step.name not in self._names:
            self._names.append(step.name)
        return True
