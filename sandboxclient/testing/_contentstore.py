"""The stand-in's content store and Content service: blobs on disk, seen per namespace.

Blobs live once in the stand-in's private directory (``blobs/sha256/<hex>``), written only
by an import after their digest was checked; each namespace sees the blobs written in it,
with labels and times of its own, as containerd's metadata store does. Info, Read, List,
Update and Delete are answered with containerd 2.1.9's codes and messages; Write, Status,
ListStatuses and Abort are UNIMPLEMENTED (content comes in through an import only). What no
image or lease references goes with the stand-in's garbage collector (its own module).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from typing import IO, Final

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._serve._refusals import invalid_argument, not_found
from .._serve._server import current_namespace
from .._wire._pb import EmptyPb, content_pb
from ..errors import NotFoundError
from ._filters import Adaptor, map_field, matches, parse_filters
from ._services import Binder

__all__ = ("READ_CHUNK", "BlobStore", "ContentService", "NamespaceBlobs", "check_digest")

READ_CHUNK: Final = 1 << 20
"""The most one Read answer carries, as containerd's (1 MiB)."""
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")


def check_digest(digest: str) -> None:
    """INVALID_ARGUMENT unless ``digest`` is a sha256 digest, as containerd parses them."""
    if not _DIGEST.fullmatch(digest):
        raise invalid_argument(f"invalid digest {go_quote(digest)}")


def _validated(digest: str) -> None:
    """INVALID_ARGUMENT worded as containerd 2.1.9's Info and Update word it."""
    if not _DIGEST.fullmatch(digest):
        raise GRPCError(Status.INVALID_ARGUMENT, f"{go_quote(digest)} failed validation")


@dataclasses.dataclass
class _Info:
    size: int
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str]


class BlobStore:
    """Blobs under ``root``; which of them each namespace has, with their labels."""

    def __init__(self, root: str) -> None:
        self._root = os.path.join(root, "blobs", "sha256")
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        self._seen: dict[str, dict[str, _Info]] = {}

    def path(self, digest: str) -> str:
        """Where blob ``digest`` is (whether or not it exists)."""
        return os.path.join(self._root, digest.removeprefix("sha256:"))

    def namespaces(self) -> set[str]:
        """The namespaces that hold one or more."""
        return {ns for ns, held in self._seen.items() if held}

    def has(self, namespace: str, digest: str) -> bool:
        """Whether ``namespace`` has blob ``digest``."""
        return digest in self._seen.get(namespace, {})

    def put(self, namespace: str, digest: str, source: IO[bytes], size: int) -> None:
        """Store ``size`` bytes of ``source`` as ``digest`` (checked) for ``namespace``."""
        check_digest(digest)
        final = self.path(digest)
        if not os.path.exists(final):
            # A name of its own: two imports may store the same blob at once.
            fd, partial = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(final))
            hasher = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb") as out:
                    left = size
                    while left > 0:
                        chunk = source.read(min(left, READ_CHUNK))
                        if not chunk:
                            break
                        hasher.update(chunk)
                        out.write(chunk)
                        left -= len(chunk)
                if left or "sha256:" + hasher.hexdigest() != digest:
                    raise GRPCError(
                        Status.FAILED_PRECONDITION,
                        f"unexpected commit digest sha256:{hasher.hexdigest()}, "
                        f"expected {digest}: failed precondition",
                    )
                os.replace(partial, final)
            except BaseException:
                # A source that fails midway (a corrupt archive, a full disk) leaves nothing.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise
        now = utcnow()
        seen = self._seen.setdefault(namespace, {})
        if digest not in seen:
            seen[digest] = _Info(size, now, now, {})

    def read(self, namespace: str, digest: str, limit: int) -> bytes:
        """Blob ``digest`` of ``namespace``, refused when larger than ``limit``."""
        info = self._info(namespace, digest)
        if info.size > limit:
            raise invalid_argument(f"content {digest} of {info.size} bytes is over {limit}")
        with open(self.path(digest), "rb") as blob:
            return blob.read(limit)

    def size(self, namespace: str, digest: str) -> int:
        """The size of blob ``digest`` of ``namespace``."""
        return self._info(namespace, digest).size

    def _info(self, namespace: str, digest: str) -> _Info:
        found = self._seen.get(namespace, {}).get(digest)
        if found is None:
            raise not_found(f"content digest {digest}")
        return found

    def info(self, namespace: str, digest: str) -> content_pb.Info:
        """The Info record of blob ``digest``."""
        found = self._info(namespace, digest)
        return content_pb.Info(
            digest=digest,
            size=found.size,
            created_at=found.created_at,
            updated_at=found.updated_at,
            labels=dict(found.labels),
        )

    def digests(self, namespace: str) -> list[str]:
        """The digests ``namespace`` has, sorted."""
        return sorted(self._seen.get(namespace, {}))

    def update_labels(self, namespace: str, digest: str, labels: dict[str, str]) -> None:
        """Replace the labels of blob ``digest``."""
        found = self._info(namespace, digest)
        found.labels = dict(labels)
        found.updated_at = utcnow()

    def delete(self, namespace: str, digest: str) -> None:
        """Forget blob ``digest`` for ``namespace``; the file goes once no namespace has it."""
        self._info(namespace, digest)
        del self._seen[namespace][digest]
        if not any(digest in seen for seen in self._seen.values()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(digest))

    def drop_namespace(self, namespace: str) -> None:
        """Forget every blob of ``namespace``."""
        for digest in self.digests(namespace):
            self.delete(namespace, digest)


class NamespaceBlobs:
    """The blobs of one namespace, as the images' content reader takes them."""

    def __init__(self, blobs: BlobStore, namespace: str) -> None:
        self._blobs = blobs
        self._namespace = namespace

    async def read_blob(self, digest: str, size: int) -> bytes:
        """Blob ``digest``, at most ``size`` + 1 bytes of it; NotFoundError if absent."""
        if not self._blobs.has(self._namespace, digest):
            raise NotFoundError(f"content digest {digest}: not found")
        return self._blobs.read(self._namespace, digest, size + 1)


def _adaptor(info: content_pb.Info) -> Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if path == ("digest",):
            return info.digest, True
        if path == ("size",):
            return str(info.size), True
        if path[:1] == ("labels",):
            return map_field(path[1:], info.labels)
        return "", False

    return field


class ContentService(content_pb.ContentBase):
    """containerd's Content service over a :class:`BlobStore` (reads and deletes)."""

    def __init__(self, blobs: BlobStore, bind: Binder) -> None:
        self._blobs = blobs
        self._bind = bind

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def info(self, message: content_pb.InfoRequest) -> content_pb.InfoResponse:
        """Info: one blob's record."""
        _validated(message.digest)
        return content_pb.InfoResponse(info=self._blobs.info(current_namespace(), message.digest))

    async def update(self, message: content_pb.UpdateRequest) -> content_pb.UpdateResponse:
        """Update: a blob's labels (the only field that can change)."""
        info = message.info
        if info is None:
            raise invalid_argument("info must be set")
        _validated(info.digest)
        namespace = current_namespace()
        paths = list(message.update_mask.paths) if message.update_mask is not None else []
        current = self._blobs.info(namespace, info.digest)
        labels = dict(current.labels)
        if not paths or "labels" in paths:
            labels = dict(info.labels)
        else:
            for path in paths:
                key = path.removeprefix("labels.")
                if key == path:
                    raise invalid_argument(
                        f"cannot update {go_quote(path)} field on content info "
                        f"{go_quote(info.digest)}"
                    )
                if key in info.labels:
                    labels[key] = info.labels[key]
                else:
                    labels.pop(key, None)
        self._blobs.update_labels(namespace, info.digest, labels)
        return content_pb.UpdateResponse(info=self._blobs.info(namespace, info.digest))

    async def list(
        self, message: content_pb.ListContentRequest
    ) -> AsyncIterator[content_pb.ListContentResponse]:
        """List: the blobs that pass the filters, in pages of 100."""
        filters = parse_filters(message.filters)
        namespace = current_namespace()
        infos = [self._blobs.info(namespace, d) for d in self._blobs.digests(namespace)]
        kept = [i for i in infos if matches(filters, _adaptor(i))]
        for at in range(0, len(kept), 100):
            yield content_pb.ListContentResponse(info=kept[at : at + 100])

    async def delete(self, message: content_pb.DeleteContentRequest) -> EmptyPb:
        """Delete: forget a blob."""
        check_digest(message.digest)
        self._blobs.delete(current_namespace(), message.digest)
        return EmptyPb()

    async def read(
        self, message: content_pb.ReadContentRequest
    ) -> AsyncIterator[content_pb.ReadContentResponse]:
        """Read: a blob from ``offset``, ``size`` bytes (0: to its end), in 1 MiB answers."""
        check_digest(message.digest)
        namespace = current_namespace()
        total = self._blobs.size(namespace, message.digest)
        if message.offset < 0 or message.size < 0 or message.offset > total:
            raise invalid_argument(
                f"read at offset {message.offset} of {message.size} bytes out of range"
            )
        end = total if message.size == 0 else min(total, message.offset + message.size)
        # Local reads of at most 1 MiB at a time, from the stand-in's own directory.
        with open(self._blobs.path(message.digest), "rb") as blob:  # noqa: ASYNC230
            blob.seek(message.offset)
            at = message.offset
            while at < end:
                chunk = blob.read(min(READ_CHUNK, end - at))
                if not chunk:
                    break
                yield content_pb.ReadContentResponse(offset=at, data=chunk)
                at += len(chunk)
