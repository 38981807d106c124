"""Trees in and out of a sandbox as tar streams, the host's side of ``upload`` and ``download``.

``tar_chunks`` makes an uncompressed tar of a local tree piece by piece (headers from
:mod:`tarfile`, each file's bytes read in chunks), so an upload holds one chunk at a time.

``extract_checked`` takes an archive a sandbox made, spooled to a host file, and treats it as
hostile (cf. CVE-2019-14271 and CVE-2018-15664 in ``docker cp``): every member is checked
before anything is written, stricter than tarfile's ``data`` filter (PEP 706), which the
extraction uses too. Refused, with :class:`UnsafeArchiveError` naming the member: an
absolute path, a ``..`` component, a name with a control character (a newline), a path
outside the one top-level name asked for, a path through a symbolic link of the archive, a
link whose target leaves the tree or is absolute, a hard link to anything but an earlier
file of the archive, a device node, FIFO or other special file, a sparse member, and a
stream that is not an uncompressed tar archive (nothing is decompressed, by a tool the
sandbox chose or any other). More than ``max_entries`` members or ``max_bytes`` of file data
(as declared, so a 100 GiB file is refused before any of it is written) is a
ResourceExhaustedError. The tree is extracted into a fresh directory inside the destination
and renamed into place only once whole: a refusal or failure leaves nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import PathExistsError, ResourceExhaustedError, UnsafeArchiveError

__all__ = ("extract_checked", "tar_chunks")

_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 16


def tar_chunks(local_path: Path) -> Iterator[bytes]:
    """The tar stream of ``local_path`` (a file or a whole tree), its top entry named after
    it; owners are left out (the sandbox's tar makes files its user's)."""
    base = local_path.name
    # A TarFile of its own only for gettarinfo (which tracks hard links): nothing is added.
    with tarfile.open(fileobj=io.BytesIO(), mode="w", format=tarfile.GNU_FORMAT) as maker:
        for path, arcname in _walk(local_path, base):
            info = maker.gettarinfo(str(path), arcname)
            if info is None:  # a socket: nothing a tar carries
                continue
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            yield info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
            if info.isreg():
                yield from _contents(path, info.size)
    yield b"\0" * (2 * _BLOCK)


def _walk(top: Path, base: str) -> Iterator[tuple[Path, str]]:
    yield top, base
    if top.is_dir() and not top.is_symlink():
        for root, dirs, files in os.walk(top):
            dirs.sort()
            rel = os.path.relpath(root, top)
            for name in sorted(dirs) + sorted(files):
                arc = base if rel == "." else posixpath.join(base, rel)
                yield Path(root, name), posixpath.join(arc, name)


def _contents(path: Path, size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of the file, padded to a block (a file that changed size
    meanwhile is cut or padded with zeros: the header has gone already)."""
    left = size
    with open(path, "rb") as f:
        while left:
            chunk = f.read(min(_CHUNK, left)) or b"\0" * min(_CHUNK, left)
            left -= len(chunk)
            yield chunk
    if size % _BLOCK:
        yield b"\0" * (_BLOCK - size % _BLOCK)


def _refuse(member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"the sandbox's archive was refused at member {member!r}: {why}", member=member
    )


def _parts(name: str) -> list[str]:
    """The components of a member's name, refused unless plainly relative."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise _refuse(name, "a name with a control character (a newline, say)")
    parts = name.split("/")
    while len(parts) > 1 and parts[-1] in ("", "."):
        parts.pop()  # tar writes a directory as "name/"
    if name.startswith("/") or parts == [""]:
        raise _refuse(name, "an absolute or empty path")
    if ".." in parts or "" in parts or "." in parts:
        raise _refuse(name, "a path with '..', '.' or an empty component")
    return parts


def _checked_members(
    archive: tarfile.TarFile, top: str, max_bytes: int, max_entries: int
) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    files: set[str] = set()
    links: set[str] = set()
    total = 0
    for member in archive:
        if len(members) >= max_entries:
            raise ResourceExhaustedError(
                f"the sandbox's archive has more than {max_entries} entries (max_entries)"
            )
        name = member.name
        parts = _parts(name)
        if parts[0] != top:
            raise _refuse(name, f"a path outside {top!r}, the one name asked for")
        clean = "/".join(parts)
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                raise _refuse(name, "a path through a symbolic link of the archive")
        if member.sparse is not None:
            raise _refuse(name, "a sparse file")
        if member.issym():
            target = member.linkname
            if not target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
                raise _refuse(name, "a symbolic link with an empty target or a control character")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(clean), target))
            if target.startswith("/") or not (resolved == top or resolved.startswith(top + "/")):
                raise _refuse(name, f"a symbolic link out of the tree (to {target!r})")
            links.add(clean)
        elif member.islnk():
            target = "/".join(_parts(member.linkname))
            if target not in files:
                raise _refuse(name, f"a hard link to {member.linkname!r}, no earlier file")
            member.linkname = target
        elif member.isreg():
            total += member.size
            if total > max_bytes:
                raise ResourceExhaustedError(
                    f"the sandbox's archive holds more than {max_bytes} bytes (max_bytes) "
                    f"by member {name!r}"
                )
            files.add(clean)
        elif not member.isdir():
            raise _refuse(name, "a device node, FIFO or other special file")
        member.name = clean
        members.append(member)
    return members


def extract_checked(
    spool: IO[bytes], dest: Path, top: str, *, max_bytes: int, max_entries: int
) -> Path:
    """Check every member of the archive in the file ``spool``, then extract it as ``dest/top``;
    returns that path. Blocking: run it in a thread."""
    final = dest / top
    if os.path.lexists(final):
        raise PathExistsError(
            f"{str(final)!r} exists already: a download does not merge into it",
            path=str(final),
        )
    try:
        spool.seek(0)
        archive = tarfile.open(fileobj=spool, mode="r:")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(
            f"what the sandbox sent is not an uncompressed tar archive: {exc}"
        ) from exc
    with archive:
        try:
            members = _checked_members(archive, top, max_bytes, max_entries)
        except tarfile.TarError as exc:
            raise UnsafeArchiveError(f"the sandbox's archive is malformed: {exc}") from exc
        if not members:
            raise UnsafeArchiveError("the sandbox's archive is empty")
        staging = Path(tempfile.mkdtemp(prefix=".sandboxclient-download-", dir=dest))
        try:
            archive.extractall(staging, members=members, filter="data")
            os.rename(staging / top, final)
        except tarfile.FilterError as exc:
            raise _refuse(exc.tarinfo.name, str(exc)) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(staging)
    return final
