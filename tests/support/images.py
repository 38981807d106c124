"""Image records written straight through the Images service, for tests of the image store
on either backend (no content behind them)."""

from __future__ import annotations

from grpclib.client import Channel

from sandboxclient._wire._pb import DescriptorPb, images_pb
from sandboxclient._wirenames import NAMESPACE_HEADER
from tests.support.backends import Backend

__all__ = ("DIGEST", "MANIFEST", "seed")

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
