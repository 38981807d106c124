"""An offline stand-in for the CRI pause image, built from the host's static busybox.

containerd's podsandbox controller needs its sandbox image (``registry.k8s.io/pause:3.10``
by default in 2.1, ``3.10.2`` in 2.3) in the ``k8s.io`` namespace; tests cannot pull
it, so :func:`build_pause_archive` builds an OCI image-layout archive that ``ctr images
import`` takes, from ``/bin/busybox`` (Debian's ``busybox-static``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from .._facts._golang import go_arch
from .._serve._busybox import BUSYBOX, build_busybox_root
from .._serve._busybox import busybox_problem as _busybox_problem
from ._locate import ContainerdUnavailable

__all__ = ("build_pause_archive", "busybox_problem", "busybox_rootfs", "oci_archive")

_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"


def busybox_problem() -> str | None:
    """Why the pause image cannot be built here, or None when it can."""
    problem = _busybox_problem()
    if problem is None:
        return None
    return f"{problem}, which the offline pause image is built from"


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime = 0
    return info


def _pause_layer() -> bytes:
    """Uncompressed layer: a static busybox and the directories runc mounts over."""
    busybox = BUSYBOX.resolve().read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            tar.addfile(_tar_info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        info = _tar_info("bin/busybox", tarfile.REGTYPE, 0o755, len(busybox))
        tar.addfile(info, io.BytesIO(busybox))
        for applet in ("sh", "sleep"):
            tar.addfile(_tar_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
    return out.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def build_pause_archive(ref: str) -> bytes:
    """Build, offline, an OCI image-layout tar of a busybox image that sleeps forever.

    It stands in for the CRI pause image: the podsandbox controller only needs a process that
    stays up. The index carries ``org.opencontainers.image.ref.name`` so ``ctr images import``
    names the image ``ref``.
    """
    problem = busybox_problem()
    if problem is not None:
        raise ContainerdUnavailable(problem)
    config = {"Entrypoint": ["/bin/sleep", "infinity"], "Env": ["PATH=/bin"], "WorkingDir": "/"}
    return oci_archive(ref, _pause_layer(), config)


def oci_archive(ref: str, layer: bytes, config: Mapping[str, Any]) -> bytes:
    """An OCI image-layout tar of image ``ref`` for this host's platform: one layer
    (``layer``, an uncompressed tar, stored gzipped) and ``config`` as its config's
    ``config`` (Entrypoint, Cmd, Env, WorkingDir, User), named ``ref`` by its index."""
    arch, _ = go_arch()
    layer_gz = gzip.compress(layer, mtime=0)
    config_blob = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": dict(config),
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
            },
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": _OCI_MANIFEST,
            "config": _descriptor(_OCI_CONFIG, config_blob),
            "layers": [_descriptor(_OCI_LAYER_GZIP, layer_gz)],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": _OCI_INDEX,
            "manifests": [
                {
                    **_descriptor(_OCI_MANIFEST, manifest),
                    "annotations": {"org.opencontainers.image.ref.name": ref},
                    "platform": {"architecture": arch, "os": "linux"},
                }
            ],
        },
        sort_keys=True,
    ).encode()
    files: list[tuple[str, bytes]] = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", index),
    ]
    files += [
        (f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
        for blob in (config_blob, manifest, layer_gz)
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(d, tarfile.DIRTYPE, 0o755))
        for name, data in files:
            tar.addfile(_tar_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return out.getvalue()


def busybox_rootfs(path: str | Path) -> Path:
    """Fill directory ``path`` with a minimal root filesystem: the static busybox, a link
    for each of its applets in ``bin``, and an ``/etc/passwd`` with root and nobody.

    What tests (and users' own tests) run containers on when they have no image. Raises
    :class:`ContainerdUnavailable` when the host has no static busybox.
    """
    problem = _busybox_problem()
    if problem is not None:
        raise ContainerdUnavailable(problem)
    return build_busybox_root(path)
