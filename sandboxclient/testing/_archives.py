"""OCI image-layout archives in and out of the stand-in's content store.

:func:`read_archive` takes a spooled archive a client sent (plain or gzip tar) as hostile
input: only ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>`` are read (other
members are skipped, as containerd's importer skips what it does not know), every blob is
checked against its name's digest as it is stored (one that does not match is not stored,
so what needs it is then not found, as on containerd), and sizes and member counts are
bounded.
A Docker archive without ``index.json`` is refused: the stand-in imports OCI archives only.
:func:`write_archive` writes an export: the blobs asked for, ``oci-layout``, ``index.json``
naming each image and Docker's ``manifest.json`` for the single-platform ones, as
containerd's exporter does. Both block: run them in a thread.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ._contentstore import BlobStore

__all__ = ("MAX_ARCHIVE", "ExportImage", "read_archive", "write_archive")

MAX_ARCHIVE: Final = 4 * 1024**3
"""The largest archive (uncompressed) the stand-in takes."""
MAX_INDEX: Final = 4 * 1024 * 1024
_MAX_MEMBERS: Final = 100_000
_BLOB: Final = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"


def _unknown(message: str) -> GRPCError:
    # containerd answers UNKNOWN for what its archive reader refuses.
    return GRPCError(Status.UNKNOWN, message)


def read_archive(
    spool: IO[bytes], blobs: BlobStore, namespace: str, stop: threading.Event | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Store the blobs of the archive in ``spool`` for ``namespace``; returns its
    ``index.json`` and the digests newly stored (for the caller to drop on failure). Stops
    (CANCELLED) at the next member once ``stop`` is set."""
    spool.seek(0)
    gzipped = spool.read(2) == b"\x1f\x8b"
    spool.seek(0)
    added: list[str] = []
    try:
        index = _read_members(spool, gzipped, blobs, namespace, added, stop)
    except BaseException:
        for digest in added:
            blobs.delete(namespace, digest)
        raise
    if index is None:
        for digest in added:
            blobs.delete(namespace, digest)
        raise GRPCError(
            Status.INVALID_ARGUMENT,
            "the archive has no index.json: the stand-in imports OCI image-layout archives "
            "only (a Docker archive is taken by containerd, not by the stand-in)",
        )
    try:
        parsed = json.loads(index)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("manifests"), list):
        for digest in added:
            blobs.delete(namespace, digest)
        raise GRPCError(Status.INVALID_ARGUMENT, "index.json is not an OCI index: invalid argument")
    return parsed, added


class _Bounded:
    """The archive's uncompressed stream, refused past :data:`MAX_ARCHIVE` bytes (a gzip
    bomb, or members declared far larger than what was sent compressed)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self._count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._count += len(data)
        if self._count > self._limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"the archive holds more than the stand-in's {self._limit} bytes uncompressed",
            )
        return data


def _read_members(
    spool: IO[bytes],
    gzipped: bool,
    blobs: BlobStore,
    namespace: str,
    added: list[str],
    stop: threading.Event | None,
) -> bytes | None:
    index: bytes | None = None
    try:
        raw: IO[bytes] = gzip.GzipFile(fileobj=spool, mode="rb") if gzipped else spool  # type: ignore[assignment]
        bounded = _Bounded(raw, MAX_ARCHIVE)
        with tarfile.open(fileobj=bounded, mode="r|") as tar:  # type: ignore[call-overload]
            for count, member in enumerate(tar):
                if stop is not None and stop.is_set():
                    raise GRPCError(Status.CANCELLED, "the import was cancelled")
                if count >= _MAX_MEMBERS:
                    raise _unknown(f"archive has more than {_MAX_MEMBERS} members")
                name = member.name.removeprefix("./")
                blob = _BLOB.fullmatch(name)
                if name == "index.json":
                    if not member.isreg() or member.size > MAX_INDEX:
                        raise _unknown("index.json is not a file of at most 4 MiB")
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    index = extracted.read()
                elif blob is not None:
                    if not member.isreg():
                        raise _unknown(f"{name} is not a regular file")
                    digest = "sha256:" + blob.group(1)
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    if not blobs.has(namespace, digest):
                        try:
                            blobs.put(namespace, digest, extracted, member.size)
                        except GRPCError:
                            continue  # not what its name says: as if absent, as containerd
                        added.append(digest)
    except tarfile.ReadError as exc:
        text = str(exc)
        if "unexpected end" in text or "truncated" in text or "EOF" in text:
            raise _unknown(f"unexpected EOF: {text}") from None
        raise _unknown(f"archive/tar: invalid tar header ({text})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise _unknown(f"unexpected EOF: {exc}") from None
    return index


@dataclass(frozen=True)
class ExportImage:
    """One image of an export: its name, target, and what of it goes in the archive."""

    name: str
    media_type: str
    digest: str
    size: int
    blobs: Sequence[str] = ()
    config: str = ""
    """The config's digest when the export holds one platform's manifest (Docker's
    ``manifest.json`` then names it), else empty."""
    layers: Sequence[str] = field(default_factory=tuple)


def _familiar(name: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes] | bytes, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o444, 0
    if isinstance(data, bytes):
        data = io.BytesIO(data)
    tar.addfile(info, data)


def write_archive(out: IO[bytes], images: Sequence[ExportImage], blobs: BlobStore) -> None:
    """Write the OCI archive of ``images`` to ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        written: set[str] = set()
        for image in images:
            for digest in image.blobs:
                if digest in written:
                    continue
                written.add(digest)
                path = blobs.path(digest)
                with open(path, "rb") as blob:
                    size = blob.seek(0, 2)
                    blob.seek(0)
                    _add(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}", blob, size)
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 30)
        index = {
            "schemaVersion": 2,
            "mediaType": _OCI_INDEX,
            "manifests": [
                {
                    "mediaType": i.media_type,
                    "digest": i.digest,
                    "size": i.size,
                    "annotations": {
                        "io.containerd.image.name": i.name,
                        "org.opencontainers.image.ref.name": i.name.rpartition(":")[2]
                        if ":" in i.name.rpartition("/")[2]
                        else "latest",
                    },
                }
                for i in images
            ],
        }
        data = json.dumps(index, separators=(",", ":")).encode()
        _add(tar, "index.json", data, len(data))
        docker = [
            {
                "Config": f"blobs/sha256/{i.config.removeprefix('sha256:')}",
                "RepoTags": [_familiar(i.name)],
                "Layers": [f"blobs/sha256/{d.removeprefix('sha256:')}" for d in i.layers],
            }
            for i in images
            if i.config
        ]
        if docker:
            data = json.dumps(docker, separators=(",", ":")).encode()
            _add(tar, "manifest.json", data, len(data))
