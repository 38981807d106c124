"""An image with a real userland, built offline (for tests and benchmarks of sandboxes on
images, which cannot pull one): the host's static busybox with a link for
every applet, an ``/etc/passwd`` and ``/etc/group`` that name a user ``app`` (1000) and a
group ``staff`` (50), and a config of the caller's, as an OCI archive that ``ctr images
import`` and ``Client.import_image`` take."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._serve._busybox import build_busybox_root, busybox_problem
from ._images import oci_archive
from ._locate import ContainerdUnavailable

__all__ = ("APP_GID", "APP_UID", "STAFF_GID", "tar_layer", "userland_archive")

APP_UID = 1000
APP_GID = 1000
STAFF_GID = 50

_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    f"app:x:{APP_UID}:{APP_GID}:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/:/bin/false\n"
)
_GROUP = f"root:x:0:\nstaff:x:{STAFF_GID}:app\napp:x:{APP_GID}:\nnogroup:x:65534:\n"


def _layer(ref: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        root = build_busybox_root(Path(tmp, "root"))
        (root / "etc" / "image").write_text(ref)  # a layer of each image's own
        (root / "etc" / "passwd").write_text(_PASSWD)
        (root / "etc" / "group").write_text(_GROUP)
        (root / "home" / "app").mkdir(parents=True)

        return tar_layer(root, {"home/app": (APP_UID, APP_GID)})


def tar_layer(root: Path, owners: Mapping[str, tuple[int, int]] | None = None) -> bytes:
    """An uncompressed layer of the tree at ``root``: every entry root's (uid and gid 0, or
    what ``owners`` gives its name), no owner names, mtime 0, names sorted."""
    given = owners or {}

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = given.get(info.name, (0, 0))
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(root)):
            tar.add(root / name, arcname=name, filter=owned)
    return out.getvalue()


def userland_archive(ref: str, config: Mapping[str, Any]) -> bytes:
    """An OCI archive of image ``ref`` for this host's platform: one gzip layer (the
    userland) and ``config`` as its config's ``config`` (Entrypoint, Cmd, Env, WorkingDir,
    User). Raises :class:`ContainerdUnavailable` when the host has no static busybox."""
    problem = busybox_problem()
    if problem is not None:
        raise ContainerdUnavailable(problem)
    return oci_archive(ref, _layer(ref), config)
