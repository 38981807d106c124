"""Which containerd release's defaults a generated spec follows.

Read in containerd's tagged sources: the default Linux spec (``populateDefaultUnixSpec``)
is the same from 2.0 to 2.4 but for its ``ociVersion``, the version of the runtime-spec
module each release was built with: 1.2.0 for 2.0.x, 1.2.1 for 2.1.x and 2.2.0, 1.3.0
from 2.2.1 on (2.3 and 2.4 included).
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from .._plumbing._version import NEWEST_RELEASE, ContainerdVersion, release_or_version

__all__ = ("ContainerdRelease", "ReportedVersion", "oci_version_of", "spec_release")


@runtime_checkable
class ReportedVersion(Protocol):
    """What a daemon reports of itself, as ``Client.version()`` answers it."""

    @property
    def parsed(self) -> ContainerdVersion:
        """The version it reports."""
        ...


ContainerdRelease = str | ContainerdVersion | ReportedVersion
"""Whose defaults: a line (``"2.1"``), a version (``"v2.2.4"``, a ``ContainerdVersion``),
or the daemon's own answer (``await client.version()``)."""

_OCI_VERSIONS: Final = (
    (ContainerdVersion(2, 2, 1), "1.3.0"),
    (ContainerdVersion(2, 1, 0, "beta.0"), "1.2.1"),
    (ContainerdVersion(2, 0, 0), "1.2.0"),
)


def spec_release(containerd: ContainerdRelease | None) -> ContainerdVersion:
    """The release ``containerd`` names (None: the newest release this project knows).

    Raises:
        ValueError: not a release line or version, or older than 2.0 (no sandbox API).
    """
    if containerd is None:
        return NEWEST_RELEASE
    if isinstance(containerd, str | ContainerdVersion):
        version = release_or_version(containerd)
    elif isinstance(containerd, ReportedVersion):
        version = containerd.parsed
    else:
        raise TypeError(
            "generate_spec: containerd must be a release line, a version or a ServerVersion, "
            f"got {type(containerd).__name__}"
        )
    if version < _OCI_VERSIONS[-1][0]:
        raise ValueError(f"generate_spec: containerd {version} is older than 2.0")
    return version


def oci_version_of(release: ContainerdVersion) -> str:
    """The ``ociVersion`` containerd ``release`` writes into the specs it generates (a
    release newer than this project knows: the newest known's)."""
    return next(oci for since, oci in _OCI_VERSIONS if release >= since)
