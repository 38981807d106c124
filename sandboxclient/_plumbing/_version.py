"""containerd's version numbers, read the same way wherever behaviour depends on them.

The daemon's Version service and ``containerd --version`` report the version it was built
as: ``v2.3.4`` from a release build, ``2.3.4+unknown`` from a build without the release's
linker flags (Debian's among them), and a packager may leave its own mark
(``2.1.9~ds1``). :meth:`ContainerdVersion.parse` reads all of these into one record that
compares as release numbers do: ``2.4.0-beta.0 < 2.4.0 < 2.4.1``, whatever the prefix or
the build suffix.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Final

__all__ = (
    "KNOWN_LINES",
    "NEWEST_RELEASE",
    "RELEASES",
    "ContainerdVersion",
    "release_or_version",
)

_PATTERN: Final = re.compile(
    r"v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*))?"
    r"(?:[+~](?P<build>[0-9A-Za-z.~+-]+))?"
)
_MAX_TEXT: Final = 200


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class ContainerdVersion:
    """A containerd release number: ``major.minor.patch``, an optional pre-release
    (``beta.0``) and the build's own suffix (``unknown``, ``ds1``: kept, never compared).

    Ordered as semantic versions are: a pre-release comes before its release, and numeric
    pre-release parts compare as numbers.
    """

    major: int
    minor: int
    patch: int
    prerelease: str = ""
    build: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> ContainerdVersion:
        """Read a version as containerd reports it: ``v2.3.4``, ``2.1.9+unknown``,
        ``2.1.9~ds1``, ``v2.4.0-beta.0``.

        Raises:
            ValueError: ``text`` is not such a version (the message quotes it).
        """
        if not isinstance(text, str):
            raise ValueError(f"a containerd version is a string, not {type(text).__name__}")
        match = _PATTERN.fullmatch(text.strip()) if len(text) <= _MAX_TEXT else None
        if match is None:
            shown = text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."
            raise ValueError(
                f"not a containerd version: {shown!r} (expected major.minor.patch, "
                "as in 2.1.9, v2.3.4 or 2.4.0-beta.0)"
            )
        return cls(
            int(match["major"]),
            int(match["minor"]),
            int(match["patch"]),
            match["pre"] or "",
            match["build"] or "",
        )

    @property
    def release(self) -> tuple[int, int]:
        """The release line, ``(2, 3)`` for any 2.3.x: what containerd's behaviour follows."""
        return (self.major, self.minor)

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        """Whether this is release ``major.minor.patch`` or a later one (a pre-release of
        ``major.minor.patch`` itself counts as earlier)."""
        return self >= ContainerdVersion(major, minor, patch)

    def sort_key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        """What versions are ordered by: the numbers, then release after pre-release, then
        the pre-release's parts (numbers before words, numbers as numbers)."""
        parts = tuple(
            (0, int(part)) if part.isdigit() else (1, part)
            for part in self.prerelease.split(".")
            if self.prerelease
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, parts)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ContainerdVersion):
            return NotImplemented
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core


RELEASES: Final = {
    (2, 0): ContainerdVersion(2, 0, 11),
    (2, 1): ContainerdVersion(2, 1, 9),
    (2, 2): ContainerdVersion(2, 2, 7),
    (2, 3): ContainerdVersion(2, 3, 4),
    (2, 4): ContainerdVersion(2, 4, 0, "beta.0"),
}
"""The newest tag of each containerd line with the sandbox API that this project was
checked against (August 2026; 2.4 has a beta only)."""

NEWEST_RELEASE: Final = RELEASES[(2, 3)]
"""The newest of :data:`RELEASES` that is a release: what follows containerd's defaults
follows this one unless told which."""

KNOWN_LINES: Final = ", ".join(f"{major}.{minor}" for major, minor in RELEASES)


def release_or_version(value: str | ContainerdVersion) -> ContainerdVersion:
    """``value`` as a version: a release line (``"2.1"``, ``"v2.3"``) stands for its newest
    release in :data:`RELEASES`; anything else is read by :meth:`ContainerdVersion.parse`.

    Raises:
        ValueError: neither a known line nor a version (the message names it).
    """
    if isinstance(value, ContainerdVersion):
        return value
    if isinstance(value, str) and re.fullmatch(r"v?\d+\.\d+", value.strip()):
        major, _, minor = value.strip().removeprefix("v").partition(".")
        found = RELEASES.get((int(major), int(minor)))
        if found is None:
            raise ValueError(f"containerd {value!r} is not a release line (known: {KNOWN_LINES})")
        return found
    return ContainerdVersion.parse(value)
