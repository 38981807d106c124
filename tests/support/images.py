"""Image records written straight through the Images service, for tests of the image store
on either backend (no content behind them)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from grpclib.client import Channel

from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._serve._busybox import BUSYBOX
from sandboxclient._wire._pb import DescriptorPb, images_pb
from tests.support.backends import Backend

__all__ = ("DIGEST", "MANIFEST", "multi_platform_archive", "seed")

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "ab" * 32


async def seed(backend: Backend, name: str, labels: dict[str, str] | None = None) -> None:
    """Write image record ``name`` (a 123-byte manifest of digest :data:`DIGEST`)."""
    channel = Channel(path=backend.address)
    try:
        stub = images_pb.ImagesStub(channel, metadata={NAMESPACE_HEADER: backend.namespace})
        target = DescriptorPb(media_type=MANIFEST, digest=DIGEST, size=123)
        record = images_pb.Image(name=name, target=target, labels=labels or {})
        await stub.create(images_pb.CreateImageRequest(image=record))
    finally:
        channel.close()


def _busybox_layer() -> bytes:
    """An uncompressed layer: the static busybox as /bin/busybox and /bin/sh."""
    busybox = BUSYBOX.resolve().read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for applet in ("sh", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
    return out.getvalue()


def _blob_entry(media_type: str, blob: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def multi_platform_archive(name: str, architectures: list[str]) -> bytes:
    """An OCI archive whose index names one image with a manifest per architecture (linux),
    each a config of its own over the same busybox layer (uncompressed for the first
    architecture, gzip for the others)."""
    layer = _busybox_layer()
    blobs: dict[str, bytes] = {}
    manifests = []
    for position, arch in enumerate(architectures):
        packed = layer if position == 0 else gzip.compress(layer, mtime=0)
        layer_type = "application/vnd.oci.image.layer.v1.tar" + ("" if position == 0 else "+gzip")
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Entrypoint": ["/bin/sleep", "infinity"], "Env": ["PATH=/bin"]},
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
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": _blob_entry("application/vnd.oci.image.config.v1+json", config),
                "layers": [_blob_entry(layer_type, packed)],
            },
            sort_keys=True,
        ).encode()
        for blob in (packed, config, manifest):
            blobs[hashlib.sha256(blob).hexdigest()] = blob
        entry = _blob_entry("application/vnd.oci.image.manifest.v1+json", manifest)
        manifests.append({**entry, "platform": {"architecture": arch, "os": "linux"}})
    image_index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        },
        sort_keys=True,
    ).encode()
    blobs[hashlib.sha256(image_index).hexdigest()] = image_index
    top = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    **_blob_entry("application/vnd.oci.image.index.v1+json", image_index),
                    "annotations": {"org.opencontainers.image.ref.name": name},
                }
            ],
        }
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", top)]
        files += [(f"blobs/sha256/{digest}", blob) for digest, blob in blobs.items()]
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
