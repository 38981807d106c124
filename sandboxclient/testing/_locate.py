"""Finding a containerd (>= 2.0) to run: ``$CONTAINERD_BIN``, then ``PATH``.

``CONTAINERD_BIN`` names the directory that holds ``containerd``, ``containerd-shim-runc-v2``
and ``ctr`` (or the containerd binary in it); a checkout of this project's ``make test`` sets
it to the private bin dir ``make containerd`` lays out. ``runc`` may be there or on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from .._plumbing._version import ContainerdVersion

__all__ = (
    "MIN_VERSION",
    "REQUIRE_ENV",
    "ContainerdUnavailable",
    "checked_version",
    "containerd_required",
    "containerd_version",
    "find_containerd_bin_dir",
    "find_tool",
    "locate_containerd",
)

MIN_VERSION: Final = (2, 0)
"""Oldest containerd with the sandbox API."""

REQUIRE_ENV: Final = "SANDBOXCLIENT_REQUIRE_CONTAINERD"
"""Set to ``1`` to make a missing containerd fail the real-daemon tests instead of skipping."""

_INSTALL: Final = (
    "install containerd >= 2.0 with containerd-shim-runc-v2, ctr and runc, or set "
    "CONTAINERD_BIN to the directory that holds them"
)


class ContainerdUnavailable(RuntimeError):
    """No usable containerd >= 2.0 (or what it needs) on this machine."""


def containerd_required() -> bool:
    """Whether ``SANDBOXCLIENT_REQUIRE_CONTAINERD=1`` asks for failures instead of skips."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def containerd_version(binary: Path) -> ContainerdVersion:
    """The version that ``binary --version`` reports (``2.1.9+unknown``, ``v2.3.4``)."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ContainerdUnavailable(f"{binary} --version failed: {exc}; {_INSTALL}") from exc
    # "containerd github.com/containerd/containerd/v2 2.1.9+unknown <revision>"
    for word in out.split()[1:]:
        try:
            return ContainerdVersion.parse(word)
        except ValueError:
            continue
    raise ContainerdUnavailable(
        f"cannot read a version from {binary} --version ({out!r}); {_INSTALL}"
    )


def find_containerd_bin_dir() -> Path:
    """Find the directory with ``containerd``, ``containerd-shim-runc-v2`` and ``ctr``.

    Looks at ``$CONTAINERD_BIN`` (a directory, or a containerd binary in one), then ``PATH``.
    The containerd found must be at least 2.0.

    Raises:
        ContainerdUnavailable: nothing usable was found; the message says what to do.
    """
    return locate_containerd()[0]


def checked_version(bin_dir: Path, source: str) -> ContainerdVersion:
    """The version of ``bin_dir``'s containerd (found through ``source``), if >= 2.0.

    Raises:
        ContainerdUnavailable: it does not run, or is older.
    """
    version = containerd_version(bin_dir / "containerd")
    if version.release < MIN_VERSION:
        raise ContainerdUnavailable(
            f"containerd {version} from {source} has no sandbox API: {_INSTALL}"
        )
    return version


def locate_containerd() -> tuple[Path, ContainerdVersion]:
    """:func:`find_containerd_bin_dir` and the version of the containerd found there."""
    env = os.environ.get("CONTAINERD_BIN", "")
    if env:
        path = Path(env)
        bin_dir = path if path.is_dir() else path.parent
        source = f"CONTAINERD_BIN={env}"
        if not path.exists():
            raise ContainerdUnavailable(f"{source}: no such file or directory; {_INSTALL}")
        if not os.access(bin_dir / "containerd", os.X_OK):
            raise ContainerdUnavailable(
                f"{source}: no executable containerd in {bin_dir}; {_INSTALL}"
            )
    else:
        found = shutil.which("containerd")
        if found is None:
            raise ContainerdUnavailable(f"no containerd on PATH: {_INSTALL}")
        bin_dir, source = Path(found).parent, f"PATH ({found})"
    return bin_dir, checked_version(bin_dir, source)


def find_tool(bin_dir: Path, name: str) -> str | None:
    """Resolve ``name`` the way the daemon will: ``bin_dir`` first, then ``PATH``."""
    return shutil.which(name, path=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
