"""Archives built or altered for tests of imports: a tar of given members, an archive with
some files' contents replaced, the digest its index names first."""

from __future__ import annotations

import io
import json
import tarfile

__all__ = ("rewritten", "tar_of", "top_digest")


def tar_of(*members: tuple[str, bytes, bytes, str]) -> bytes:
    """An uncompressed tar of ``(name, type, data, link target)`` members, mode 0755."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, 0o755
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


def rewritten(archive: bytes, edit: dict[str, bytes]) -> bytes:
    """``archive`` with the files ``edit`` names given other contents (same names)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in source:
            data = source.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            data = edit.get(member.name, data)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return out.getvalue()


def top_digest(archive: bytes) -> str:
    """The digest of the first descriptor an OCI archive's ``index.json`` lists."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        index = tar.extractfile("index.json")
        assert index is not None
        return str(json.loads(index.read())["manifests"][0]["digest"])
