"""The containerd releases the stand-in can answer as, and where their answers differ.

Read in each release line's tagged sources (the newest tag of each, August 2026):

- 2.0 (2.0.11) and 2.1 (2.1.9): the sandbox controller service answers a Controller call
  with the controller's own error (``not found: failed to get sandbox controller by
  bogus``, ``sandbox "x" does not exist: not found``).
- 2.2 (2.2.7), 2.3 (2.3.4) and 2.4 (2.4.0-beta.0): Controller.Start alone wraps them: a
  failed lookup of the controller in ``failed to get sandbox controller for "bogus": ``,
  and whatever the controller answers in ``failed to start sandbox "x": `` (the gRPC code
  is kept). Every other Controller call, and the other services the stand-in serves,
  answer alike on every line.

What the stand-in does not emulate: the patch releases that publish sandbox events under a
topic without a leading ``/`` (2.0.0-2.0.8, 2.1.0-2.1.7, 2.2.0-2.2.3: Create, Start and
Wait then fail with INVALID_ARGUMENT after doing their work), and the controllers a
daemon of each line ships (the stand-in forwards to its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._plumbing._version import KNOWN_LINES, RELEASES, ContainerdVersion, release_or_version

__all__ = ("DEFAULT_RELEASE", "RELEASES", "Release", "emulated_release")

# RELEASES (the version each line is answered as) lives with the version numbers.

DEFAULT_RELEASE: Final = "2.3"
"""The release the stand-in answers as unless told: the newest line with a release
(2.4 has a beta only)."""

STAND_IN_BUILD: Final = "sandboxclient.testing"
"""The build suffix of the stand-in's Version answer (``2.3.4+sandboxclient.testing``)."""


@dataclass(frozen=True, slots=True)
class Release:
    """A containerd release the stand-in answers as: its version, and its ways."""

    version: ContainerdVersion

    @property
    def reported(self) -> str:
        """What the Version service answers: the version, marked as the stand-in's."""
        return f"{self.version}+{STAND_IN_BUILD}"

    @property
    def start_wraps_errors(self) -> bool:
        """Whether Controller.Start wraps its errors (2.2 on)."""
        return self.version.at_least(2, 2)


def emulated_release(version: str | ContainerdVersion) -> Release:
    """The release to answer as: a line (``"2.1"``: its newest release) or a version
    (``"v2.2.4"``, a :class:`~sandboxclient.ContainerdVersion`; answered as its line).

    Raises:
        ValueError: not a version, or of a line the stand-in does not know (the message
            lists those it does).
    """
    parsed = release_or_version(version)
    if parsed.release not in RELEASES:
        raise ValueError(
            f"the stand-in cannot answer as containerd {parsed} (known: {KNOWN_LINES})"
        )
    return Release(parsed)
