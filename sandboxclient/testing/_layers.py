"""Image layers applied to a directory, as hostile input: the stand-in's unpacker.

A layer (a tar, plain or gzip) is applied on a directory the stand-in owns, with OCI
whiteouts (``.wh.<name>`` removes a name of the layers below, ``.wh..wh..opq`` empties a
directory of them). Nothing is ever written or removed outside that directory: every member
is reached component by component from a descriptor of the directory, never through a
symbolic link (``O_NOFOLLOW`` at each step), so a layer cannot reach out through a link of
its own or of the layers below; a name that is absolute, holds ``..`` or a control
character, or passes through a symbolic link is refused, and so are a whiteout of ``.`` or
``..`` and a hard link to anything but a file already in the tree. Links are made as they
are written (an absolute target is only ever read by what runs in the root). Device nodes
and FIFOs are skipped, as unprivileged containerd skips the nodes it cannot make; owners are
not set (the stand-in runs as whoever runs it), set-id bits are dropped, and directories
stay writable by their owner so that the stand-in can remove them. The uncompressed stream's
sha256 (the layer's diff id) is returned for the caller to check; a layer past
:data:`MAX_LAYER_BYTES` uncompressed or :data:`MAX_ENTRIES` members is refused. Errors are
:class:`LayerError`. Blocking: run it in a thread.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Iterator
from typing import IO, Final

__all__ = ("MAX_ENTRIES", "MAX_LAYER_BYTES", "LayerError", "apply_layer")

MAX_LAYER_BYTES: Final = 2 * 1024**3
"""The most a layer may hold uncompressed (a decompression bomb stops there)."""
MAX_ENTRIES: Final = 200_000
"""The most members a layer may have."""
_WHITEOUT: Final = ".wh."
_OPAQUE: Final = ".wh..wh..opq"
_CHUNK: Final = 1 << 20
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerError(Exception):
    """A layer was refused or could not be applied; ``message`` says which member and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Hashing:
    """A file object that hashes and counts what is read through it, up to a limit."""

    def __init__(self, raw: IO[bytes], limit: int, stop: threading.Event | None) -> None:
        self._raw = raw
        self._stop = stop
        self._limit = limit
        self.count = 0
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if self._stop is not None and self._stop.is_set():
            raise LayerError("the unpack was stopped: the call was cancelled")
        data = self._raw.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise LayerError(f"the layer holds more than {self._limit} bytes uncompressed")
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _parts(name: str) -> list[str]:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise LayerError(f"member {name!r}: a name with a control character")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in name.split("/"):
        raise LayerError(f"member {name!r}: an absolute path or one with '..'")
    return parts


@contextlib.contextmanager
def _walk(root_fd: int, parts: list[str], name: str) -> Iterator[int]:
    """A descriptor of directory ``parts`` under the root, made as needed; never through a
    symbolic link."""
    fds: list[int] = []
    at = root_fd
    try:
        for part in parts:
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=at)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=at)
                fd = os.open(part, _DIR_FLAGS, dir_fd=at)
            except (NotADirectoryError, OSError) as exc:
                raise LayerError(
                    f"member {name!r}: its path passes through {part!r}, which is not a "
                    f"directory (a symbolic link is never followed): {exc.strerror}"
                ) from None
            fds.append(fd)
            at = fd
        yield at
    finally:
        for fd in fds:
            os.close(fd)


def _remove(dir_fd: int, entry: str) -> None:
    """Remove ``entry`` of the directory, whatever it is; nothing if it is not there."""
    try:
        st = os.lstat(entry, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(entry, dir_fd=dir_fd)
    else:
        os.unlink(entry, dir_fd=dir_fd)


def _mode(member: tarfile.TarInfo) -> int:
    mode = member.mode & 0o1777  # no set-id bits
    return mode | 0o700 if member.isdir() else mode


def _write_file(dir_fd: int, entry: str, member: tarfile.TarInfo, data: IO[bytes]) -> None:
    _remove(dir_fd, entry)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(entry, flags, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out:
        left = member.size
        while left > 0:
            chunk = data.read(min(left, _CHUNK))
            if not chunk:
                raise LayerError(f"member {member.name!r}: the layer ends inside it")
            out.write(chunk)
            left -= len(chunk)
        os.fchmod(out.fileno(), _mode(member))


def _apply(root_fd: int, tar: tarfile.TarFile, written: set[str]) -> None:
    count = 0
    for member in tar:
        count += 1
        if count > MAX_ENTRIES:
            raise LayerError(f"the layer has more than {MAX_ENTRIES} members")
        parts = _parts(member.name)
        if not parts:
            continue  # the root itself
        *parents, entry = parts
        path = "/".join(parts)
        if member.sparse is not None:
            raise LayerError(f"member {member.name!r}: a sparse file")
        with _walk(root_fd, parents, member.name) as dir_fd:
            if entry == _OPAQUE:
                prefix = "/".join(parents)
                for child in os.listdir(dir_fd):
                    if (f"{prefix}/{child}" if prefix else child) not in written:
                        _remove(dir_fd, child)
                continue
            if entry.startswith(_WHITEOUT):
                hidden = entry[len(_WHITEOUT) :]
                if hidden in ("", ".", ".."):
                    # ".wh..." would otherwise remove the directory above this one.
                    raise LayerError(f"member {member.name!r}: a whiteout of {hidden!r}")
                _remove(dir_fd, hidden)
                continue
            written.add(path)
            if member.isdir():
                try:
                    st = os.lstat(entry, dir_fd=dir_fd)
                except FileNotFoundError:
                    st = None
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    _remove(dir_fd, entry)
                    st = None
                if st is None:
                    os.mkdir(entry, 0o700, dir_fd=dir_fd)
                os.chmod(entry, _mode(member), dir_fd=dir_fd)  # a directory just checked
            elif member.isreg():
                extracted = tar.extractfile(member)
                assert extracted is not None
                _write_file(dir_fd, entry, member, extracted)
            elif member.issym():
                if not member.linkname or "\0" in member.linkname:
                    raise LayerError(f"member {member.name!r}: a symbolic link without a target")
                _remove(dir_fd, entry)
                os.symlink(member.linkname, entry, dir_fd=dir_fd)
            elif member.islnk():
                target = _parts(member.linkname)
                if not target:
                    raise LayerError(f"member {member.name!r}: a hard link to the root")
                *target_dirs, target_entry = target
                with _walk(root_fd, target_dirs, member.name) as target_fd:
                    try:
                        st = os.lstat(target_entry, dir_fd=target_fd)
                    except FileNotFoundError:
                        st = None
                    if st is None or not stat.S_ISREG(st.st_mode):
                        raise LayerError(
                            f"member {member.name!r}: a hard link to {member.linkname!r}, "
                            "which is no file of the tree"
                        )
                    _remove(dir_fd, entry)
                    os.link(
                        target_entry,
                        entry,
                        src_dir_fd=target_fd,
                        dst_dir_fd=dir_fd,
                        follow_symlinks=False,
                    )
            # Device nodes and FIFOs are skipped, as unprivileged containerd skips them.


def apply_layer(root: str, layer: IO[bytes], stop: threading.Event | None = None) -> str:
    """Apply ``layer`` (a plain or gzip tar) on directory ``root``; returns its diff id
    (``sha256:`` of the uncompressed tar). Raises :class:`LayerError`, also as soon as
    ``stop`` is set."""
    head = layer.read(2)
    layer.seek(0)
    raw: IO[bytes] = layer
    if head == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=layer, mode="rb")  # type: ignore[assignment]
    hashing = _Hashing(raw, MAX_LAYER_BYTES, stop)
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        with tarfile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[call-overload]
            _apply(root_fd, tar, set())
        hashing.drain()  # the padding after the end blocks belongs to the diff id too
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise LayerError(f"the layer is not a valid tar: {exc}") from None
    except OSError as exc:
        raise LayerError(f"the layer could not be applied: {exc}") from None
    finally:
        os.close(root_fd)
    return "sha256:" + hashing.hash.hexdigest()
