"""A server of image records and content blobs, answering whatever the test put in it: for
the tests of what the client does with content it reads (hostile blobs included)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from grpclib import GRPCError, Status
from grpclib.const import Handler

from sandboxclient._serve._server import UnixServer
from sandboxclient._wire._pb import DescriptorPb, content_pb, images_pb

__all__ = ("ContentServer", "blob_entry", "json_blob")

CHUNK = 1 << 20


def json_blob(value: Any) -> bytes:
    """``value`` as compact, sorted JSON bytes."""
    return json.dumps(value, sort_keys=True).encode()


def blob_entry(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    """An OCI descriptor of ``blob``, with ``extra`` keys (``platform=...``)."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(blob), **extra}


class _Images(images_pb.ImagesBase):
    def __init__(self, store: ContentServer) -> None:
        self._store = store

    def __mapping__(self) -> dict[str, Handler]:
        return super().__mapping__()

    async def get(self, message: images_pb.GetImageRequest) -> images_pb.GetImageResponse:
        image = self._store.images.get(message.name)
        if image is None:
            raise GRPCError(Status.NOT_FOUND, f'image "{message.name}": not found')
        return images_pb.GetImageResponse(image=image)


class _Content(content_pb.ContentBase):
    def __init__(self, store: ContentServer) -> None:
        self._store = store

    def __mapping__(self) -> dict[str, Handler]:
        return super().__mapping__()

    async def read(
        self, message: content_pb.ReadContentRequest
    ) -> AsyncIterator[content_pb.ReadContentResponse]:
        self._store.reads.append(message.digest)
        blob = self._store.blobs.get(message.digest)
        if blob is None:
            raise GRPCError(Status.NOT_FOUND, f"content digest {message.digest}: not found")
        for offset in range(0, len(blob), CHUNK):
            yield content_pb.ReadContentResponse(offset=offset, data=blob[offset : offset + CHUNK])


class ContentServer:
    """Images.Get and Content.Read over :attr:`images` and :attr:`blobs` (by digest, which
    need not match), on a unix socket; :attr:`reads` lists the digests read."""

    def __init__(self, directory: Path) -> None:
        self.address = str(directory / "content.sock")
        self.images: dict[str, images_pb.Image] = {}
        self.blobs: dict[str, bytes] = {}
        self.reads: list[str] = []
        self._server = UnixServer([_Images(self), _Content(self)])

    def add(self, blob: bytes, *, digest: str | None = None) -> str:
        """Store ``blob`` (under ``digest``, by default its own) and return the digest."""
        digest = digest or "sha256:" + hashlib.sha256(blob).hexdigest()
        self.blobs[digest] = blob
        return digest

    def name(self, name: str, media_type: str, digest: str, size: int) -> None:
        """Record image ``name`` with this target."""
        target = DescriptorPb(media_type=media_type, digest=digest, size=size)
        self.images[name] = images_pb.Image(name=name, target=target)

    async def __aenter__(self) -> ContentServer:
        await self._server.start_unix(self.address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.shutdown()
