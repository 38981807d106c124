"""A gVisor sandbox's bind mounts of host paths, in a user namespace: opened as the host's root.

runc opens a bind mount's source as the host's root (and hands the open directory to the
container's set-up), so under runc a sandbox in a user namespace may bind any host path,
whatever the directories above it. runsc 20221219 does not: its file server (the gofer)
resolves the source itself, in the sandbox's user namespace, as the sandbox's root, which
on the host is the block's first id and owns nothing there. A source below a directory that
id may not search (``/root/data``, a ``0700`` temporary directory) made ``runsc create``
fail (``stat(...) failed: permission denied``), which the caller saw at Start as the
runtime's ``cannot read client sync file: EOF``.

So the sandboxer does for runsc what runc does for itself: just before the sandbox is
created it binds each such source, as the host's root, at a place the sandbox's root can
reach and no one else can, and gives runsc that place instead (the spec, changed in place):
``<STAGING_ROOT>/<sandboxer>/<start>/<n>``, where ``<start>`` is the block's group's alone
(``root:<block gid>``, ``0710``) and the levels above may only be searched. The bind is
recursive and private (nothing propagates from or to it); the spec's own options (``ro``,
``rbind`` or not) are applied by runsc when it binds it in turn. Once runsc has created the
sandbox its file server holds its own mounts, so the places are unmounted and removed at the
end of the Start, whether it worked or not: nothing stays on the host (the sandboxer's folder
goes when empty). A sandboxer that died in between removes what it left when it starts
again.

What a source holds is then seen as under runc: its files keep their host owners (the host
root's show as ``nobody`` inside) and their permissions hold, the source's own included.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._facts._golang import go_quote
from .._serve._refusals import failed_precondition
from ._userns import has_own_user_namespace

__all__ = ("STAGING_ROOT", "BindStaging")

STAGING_ROOT: Final = "/run/sandboxclient/gvisor-binds"
"""Where the places a gVisor sandbox's bind sources are bound at for its Start are made."""

_log = logging.getLogger("sandboxclient.sandboxer")

_MS_BIND: Final = 4096
_MS_REC: Final = 16384
_MS_PRIVATE: Final = 1 << 18
_MNT_DETACH: Final = 2


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _is_bind(kind: object, options: Sequence[object]) -> bool:
    return kind == "bind" or any(o in ("bind", "rbind") for o in options)


def _mount(source: str | None, target: str, flags: int) -> None:
    raw = os.fsencode(source) if source is not None else None
    if _libc().mount(raw, os.fsencode(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), source or target)


def _unmount(path: str) -> None:
    if _libc().umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise OSError(err, os.strerror(err), path)


def _block_gid(spec: Mapping[str, Any]) -> int | None:
    """The host gid of the sandbox's group 0, from the spec's mappings; None without."""
    for entry in (spec.get("linux") or {}).get("gidMappings") or []:
        if isinstance(entry, Mapping) and entry.get("containerID") == 0:
            host = entry.get("hostID")
            return host if isinstance(host, int) else None
    return None


def _searchable_dir(path: str) -> None:
    os.makedirs(path, mode=0o711, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise OSError(errno.EEXIST, "exists and is not root's directory", path)
    os.chmod(path, 0o711)


class BindStaging:
    """The places one sandboxer binds its gVisor sandboxes' sources at (module docstring)."""

    def __init__(self, state_dir: str, root: str = STAGING_ROOT) -> None:
        """For the sandboxer keeping its state in ``state_dir``: its own folder of ``root``."""
        digest = hashlib.sha256(os.fsencode(os.path.realpath(state_dir))).hexdigest()
        self.root = root
        self.directory = os.path.join(root, digest[:20])
        """This sandboxer's folder: one sub-folder per Start in progress."""

    def sweep(self) -> None:
        """Remove what a sandboxer that died during a Start left (when it starts again)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.directory):
                self._remove(os.path.join(self.directory, name))
        self._drop_folder()

    def _drop_folder(self) -> None:
        # Only this sandboxer makes and removes its folder, and never across an await.
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(self.directory)

    def stage(self, spec: dict[str, Any]) -> None:
        """Bind the host sources of ``spec``'s bind mounts (a gVisor sandbox's, changed in
        place) where its file server can reach them, if it runs in a user namespace.
        FAILED_PRECONDITION naming the mount whose source cannot be bound (nothing left)."""
        gid = _block_gid(spec) if has_own_user_namespace(spec) else None
        mounts = [
            m
            for m in spec.get("mounts") or []
            if isinstance(m, dict)
            and isinstance(m.get("source"), str)
            and m["source"].startswith("/")
            and isinstance(m.get("options") or [], list)
            and _is_bind(m.get("type"), m.get("options") or [])
        ]
        if gid is None or not mounts:
            return
        for level in (os.path.dirname(self.root), self.root, self.directory):
            _searchable_dir(level)
        start = tempfile.mkdtemp(dir=self.directory)
        try:
            os.chown(start, 0, gid)
            os.chmod(start, 0o710)
            for index, mount in enumerate(mounts):
                place = os.path.join(start, str(index))
                try:
                    if os.path.isdir(mount["source"]):
                        os.mkdir(place, 0o700)
                    else:
                        os.close(os.open(place, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    _mount(mount["source"], place, _MS_BIND | _MS_REC)
                    _mount(None, place, _MS_REC | _MS_PRIVATE)
                except OSError as exc:
                    raise failed_precondition(
                        f"spec mount at {go_quote(str(mount.get('destination')))} cannot bind "
                        f"host path {go_quote(mount['source'])}: {exc.strerror}"
                    ) from None
                mount["source"] = place
        except BaseException:
            self._remove(start)
            self._drop_folder()
            raise

    def release(self, spec: Mapping[str, Any]) -> None:
        """Unmount and remove the places :meth:`stage` bound ``spec``'s sources at (once
        runsc created the sandbox, or failed to)."""
        starts = {
            os.path.dirname(m["source"])
            for m in spec.get("mounts") or []
            if isinstance(m, Mapping)
            and isinstance(m.get("source"), str)
            and os.path.dirname(os.path.dirname(m["source"])) == self.directory
        }
        for start in starts:
            try:
                self._remove(start)
            except OSError as exc:  # the Start's outcome stands; the next start-up sweeps
                _log.warning("cannot remove the bind places at %s: %r", start, exc)
        if starts:
            self._drop_folder()

    @staticmethod
    def _remove(start: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(start):
                place = os.path.join(start, name)
                _unmount(place)
                if os.path.isdir(place) and not os.path.islink(place):
                    os.rmdir(place)
                else:
                    os.unlink(place)
            os.rmdir(start)
