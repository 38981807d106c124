"""What ``files.list`` and ``files.stat`` return, and the strict parser of what the sandbox
sends for them.

The sandbox's shell prints, for each entry, one line of three numbers (``stat -c '%f %s %Y'``:
the raw mode in hex, the size, the mtime in seconds) and then the path and, for a symbolic
link, its target, each ended by a NUL byte. A path cannot hold a NUL, so names with newlines or
any other bytes come through whole; the numbers line is checked field by field. Everything is
the sandbox's word: anything that does not fit the format is an ``InternalError`` naming the
offset, never a partial answer.
"""

from __future__ import annotations

import enum
import re
import stat as _stat
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import InternalError

__all__ = ("FileInfo", "FileType", "parse_entries")


class FileType(enum.Enum):
    """The kind of a file in a sandbox."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"
    CHAR_DEVICE = "char_device"
    BLOCK_DEVICE = "block_device"


_TYPES = {
    _stat.S_IFREG: FileType.FILE,
    _stat.S_IFDIR: FileType.DIRECTORY,
    _stat.S_IFLNK: FileType.SYMLINK,
    _stat.S_IFIFO: FileType.FIFO,
    _stat.S_IFSOCK: FileType.SOCKET,
    _stat.S_IFCHR: FileType.CHAR_DEVICE,
    _stat.S_IFBLK: FileType.BLOCK_DEVICE,
}


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One file in a sandbox, as ``lstat`` sees it (a link is reported, not followed).

    Paths are ``str`` decoded as ``os.fsdecode`` does (UTF-8, other bytes kept as surrogate
    escapes, so ``os.fsencode(path)`` gives the bytes back).
    """

    name: str
    """The last component of ``path``."""
    path: str
    """The absolute path in the sandbox."""
    type: FileType
    size: int
    """In bytes (a link's: the length of its target)."""
    mode: int
    """Permission bits and setuid/setgid/sticky (``st_mode & 0o7777``)."""
    mtime: datetime
    """The last modification, tz-aware (UTC), to the second."""
    link_target: str | None = None
    """A symbolic link's target, as stored (None for anything else)."""


_NUMBERS = re.compile(rb"([0-9a-f]{1,8}) ([0-9]{1,20}) (-?[0-9]{1,12})\n")
_MTIME_RANGE = (-62135596800, 253402300799)  # what datetime can hold: years 1 to 9999


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _bad(offset: int, why: str) -> InternalError:
    return InternalError(f"the sandbox's file listing is malformed at byte {offset}: {why}")


def parse_entries(data: bytes, *, under: str | None, limit: int) -> list[FileInfo]:
    """Parse the listing ``data``; each path must be ``under`` + "/" + more (or, with
    ``under`` None, any absolute path). More than ``limit`` entries is an InternalError."""
    entries: list[FileInfo] = []
    prefix = None if under is None else under.rstrip("/") + "/"
    pos = 0
    while pos < len(data):
        if len(entries) >= limit:
            raise _bad(pos, f"more than {limit} entries")
        match = _NUMBERS.match(data, pos)
        if match is None:
            raise _bad(pos, "expected '<hex mode> <size> <mtime>' and a newline")
        raw_mode, size, seconds = int(match[1], 16), int(match[2]), int(match[3])
        kind = _TYPES.get(_stat.S_IFMT(raw_mode))
        if kind is None or raw_mode >> 16:
            raise _bad(pos, f"mode {match[1].decode()} is no file type")
        if not _MTIME_RANGE[0] <= seconds <= _MTIME_RANGE[1]:
            raise _bad(pos, f"mtime {seconds} is out of range")
        pos = match.end()
        path, pos = _field(data, pos, "path")
        if not path.startswith("/") or (prefix is not None and not path.startswith(prefix)):
            raise _bad(pos, f"path {path!r} is not under {under!r}")
        name = path.rstrip("/").rsplit("/", 1)[-1] or "/"
        if name in (".", ".."):
            raise _bad(pos, f"path {path!r} ends in {name!r}")
        target = None
        if kind is FileType.SYMLINK:
            target, pos = _field(data, pos, "link target")
        entries.append(
            FileInfo(
                name=name,
                path=path,
                type=kind,
                size=size,
                mode=_stat.S_IMODE(raw_mode),
                mtime=datetime.fromtimestamp(seconds, UTC),
                link_target=target,
            )
        )
    return entries


def _field(data: bytes, pos: int, what: str) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise _bad(pos, f"the {what} has no NUL at its end")
    if end == pos and what == "path":
        raise _bad(pos, "an empty path")
    return _decode(data[pos:end]), end + 1
