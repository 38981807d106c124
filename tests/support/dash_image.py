"""An image whose ``/bin/sh`` is the host's dash, not busybox: busybox's shell runs its own
applets whatever ``PATH`` says, so only a sandbox with another shell finds a ``tar`` of the
test's along ``PATH`` and runs it, on the real daemon as on the stand-in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandboxclient._serve._busybox import build_busybox_root, busybox_problem
from sandboxclient.testing._images import oci_archive
from sandboxclient.testing._userland import tar_layer

__all__ = ("DASH", "dash_archive", "dash_problem")

DASH = Path("/bin/dash")


def dash_problem() -> str | None:
    """Why no dash image can be built on this host, or ``None``."""
    if not DASH.is_file() or not os.access(DASH, os.X_OK):
        return f"no {DASH} on this host (install the dash package)"
    if shutil.which("ldd") is None:
        return "no ldd on this host to name dash's libraries"
    return busybox_problem()


def _libraries() -> list[Path]:
    """The absolute paths ``ldd`` names for dash (the vDSO has none)."""
    out = subprocess.run(
        ["ldd", str(DASH)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [Path(found) for found in re.findall(r"(/\S+) \(0x", out)]


def _layer() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        root = build_busybox_root(Path(tmp, "root"))
        (root / "bin" / "sh").unlink()
        shutil.copyfile(DASH, root / "bin" / "sh")
        (root / "bin" / "sh").chmod(0o755)
        for library in _libraries():
            inside = root / library.relative_to("/")
            inside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(library.resolve(), inside)
            inside.chmod(0o755)

        return tar_layer(root)


def dash_archive(ref: str, config: Mapping[str, Any]) -> bytes:
    """An OCI archive of image ``ref``: busybox with every applet, but dash (and the
    libraries it loads, at their host paths) as ``/bin/sh``; ``config`` as its config.
    Raises :class:`RuntimeError` naming what is missing when :func:`dash_problem` says so."""
    problem = dash_problem()
    if problem is not None:
        raise RuntimeError(problem)
    return oci_archive(ref, _layer(), config)
