"""The mounts of a sandbox's root, and its bounded writable layer.

A sandbox whose Create request gives rootfs mounts (an image's snapshot: an overlay of
containerd's read-only layers under a writable upper directory on containerd's disk) writes
instead into a tmpfs the sandboxer mounts for it, of the sandbox's disk size (the spec's
annotation ``DISK_ANNOTATION``, else the sandboxer's ``--default-disk``) and with an inode
bound (:func:`layer_inodes`): the overlay keeps containerd's lower directories and options
(the ``uidmap=``/``gidmap=`` with which the shim idmaps them for the sandbox's user
namespace), and its ``upperdir`` and ``workdir`` become directories on that tmpfs, owned by
the sandbox's root (:func:`._userns.own_layers`). The sandboxer's default root is an
overlay over its busybox tree whose upper is such a tmpfs too (where runc makes the spec's
mount points). A root of the caller's own (a ``root.path``, a bind) is written as given.
A full layer answers ``ENOSPC`` inside; its pages are charged to the memory cgroup of the
process writing them, the sandbox's, so the layer may not be larger than the sandbox's
memory limit (refused by name at Start; without a size of its own, a sandbox gets at most
half its memory limit). This holds whether or not the root is read-only: a sandbox able to
remount it (given ``CAP_SYS_ADMIN``) still writes into the bounded layer.

The tmpfs is mounted at ``<sandbox's directory>/disk`` for the Start alone: once the
shim has mounted the overlay (containerd's Tasks.Create), the overlay holds the tmpfs by a
private clone of its mount, and the sandboxer detaches its own mount whether the Start
succeeded or not. The overlay in the task's bundle is detached from the host's table too
once the task is created (:mod:`._rootdetach`): the sandbox's mount namespace holds it, and
the tmpfs with it, until its last process is gone. A sandboxer killed during a Start may
leave its tmpfs mounted: the next one detaches every such mount under its state directory
when it starts (:meth:`RootDisks.sweep`); a running sandbox's overlay keeps its own clone
meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Final

from .._facts._disk import DISK_ANNOTATION
from .._facts._golang import go_quote
from .._models import Mount
from .._serve._refusals import failed_precondition, invalid_argument
from ._harden import DEFAULT_DISK, TMPFS_INODES, DefaultLimits, asked_disk
from ._podspec import root_mounts
from ._podstate import PodEntry, PodRecord, PodTable
from ._stages import mark
from ._state import private_dir
from ._userns import IdBlock, idmapped_mounts

__all__ = (
    "LAYER_DIR",
    "TMPFS_SOURCE",
    "RootDisks",
    "bounded_overlay",
    "disk_size",
    "layer_inodes",
)

_log = logging.getLogger("sandboxclient.sandboxer")

LAYER_DIR: Final = "disk"
"""The directory, in a sandbox's own, on which its root layer's tmpfs is mounted."""

TMPFS_SOURCE: Final = "sandboxclient-disk"
"""The source the layer's tmpfs shows in ``/proc/self/mountinfo``."""

_BYTES_PER_INODE: Final = 16 * 1024
_MS_NOSUID: Final = 2
_MS_NODEV: Final = 4
_MNT_DETACH: Final = 2
_UMOUNT_NOFOLLOW: Final = 8
_UNSAFE = re.compile(r"[,:\\]")


def layer_inodes(size: int) -> int:
    """The ``nr_inodes`` of a root layer of ``size`` bytes: one per 16 KiB, at least
    :data:`~._harden.TMPFS_INODES` (each costs kernel memory, charged as its pages are)."""
    return max(TMPFS_INODES, size // _BYTES_PER_INODE)


def _upper(mount: Mount) -> bool:
    return mount.type == "overlay" and any(o.startswith("upperdir=") for o in mount.options)


def bounded_overlay(mounts: tuple[Mount, ...], upper: str, work: str) -> tuple[Mount, ...]:
    """``mounts`` with the overlay that has an upper directory writing into ``upper`` and
    ``work`` instead (its other options, the lower directories among them, kept).
    FAILED_PRECONDITION when more than one overlay has an upper directory."""
    if sum(1 for m in mounts if _upper(m)) > 1:
        raise failed_precondition(
            "the sandbox's rootfs mounts hold more than one overlay with an upper directory: "
            "give one overlay (an image's snapshot) as its root"
        )
    done = []
    for mount in mounts:
        if _upper(mount):
            kept = tuple(o for o in mount.options if not o.startswith(("upperdir=", "workdir=")))
            options = (*kept, f"upperdir={upper}", f"workdir={work}")
            mount = Mount(mount.type, mount.source, mount.target, options)
        done.append(mount)
    return tuple(done)


def _memory_limit(spec: Mapping[str, Any]) -> int | None:
    limit = (((spec.get("linux") or {}).get("resources") or {}).get("memory") or {}).get("limit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def disk_size(spec: Mapping[str, Any], annotations: Mapping[str, str], default: int | None) -> int:
    """The bytes of the root layer the sandbox whose full spec is ``spec`` gets: what it
    asks for (INVALID_ARGUMENT naming both when that exceeds its memory limit: the layer is
    held in its memory), else ``default`` (None: :data:`~._harden.DEFAULT_DISK`) or half
    its memory limit, whichever is less (at least 1: one page)."""
    asked = asked_disk(spec, annotations, has_rootfs_mounts=True)
    memory = _memory_limit(spec)
    if asked is None:
        size = DEFAULT_DISK if default is None else default
        # Never 0, which a tmpfs reads as no bound at all (a memory limit of 1 byte).
        return size if memory is None else max(1, min(size, memory // 2))
    if memory is not None and asked > memory:
        raise invalid_argument(
            f"the sandbox's writable root layer of {asked} bytes (spec annotations"
            f"[{go_quote(DISK_ANNOTATION)}], disk=) exceeds its memory limit of {memory} "
            "bytes: the layer is a tmpfs held in the sandbox's memory; ask for less disk or "
            "more memory (memory=)"
        )
    return asked


class RootDisks:
    """The root mounts of the sandboxes of ``table``, and their root layers' tmpfs mounts
    under its directory; those a killed sandboxer left are detached at once."""

    def __init__(self, table: PodTable) -> None:
        self._table = table
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._mounted: set[str] = set()  # the layers of Starts under way
        for path in self.sweep():
            _log.warning("detached the root layer a stopped sandboxer left at %s", path)

    def path(self, record: PodRecord) -> str:
        """Where the sandbox's root layer's tmpfs is mounted during its Start."""
        return os.path.join(
            self._table.base, "sandboxes", record.namespace, record.sandbox_id, LAYER_DIR
        )

    def root(
        self,
        entry: PodEntry,
        spec: dict[str, Any],
        default_root: str | None,
        root_path: str,
        block: IdBlock | None,
        limits: DefaultLimits,
    ) -> tuple[Mount, ...]:
        """The sandbox's root mounts (see :func:`~._podspec.root_mounts`): the upper of an
        image root's overlay, or of the default root's, on a tmpfs of its own (its size in
        ``spec``'s annotation, for Status), idmapped for ``block`` when given. The tmpfs
        stays mounted until :meth:`release`."""
        record = entry.record
        mounts = root_mounts(record.rootfs, None, None, root_path=root_path)
        if default_root is None and not any(_upper(m) for m in mounts):
            layer = None  # a root of the caller's own: a root.path, a bind, no upper
        else:
            size = disk_size(spec, record.annotations, limits.disk)
            spec.setdefault("annotations", {})[DISK_ANNOTATION] = str(size)
            if entry.in_force is not None:
                entry.in_force = dataclasses.replace(entry.in_force, disk_limit=size)
            layer = self._mount(entry, size)
            mark("root layer tmpfs")
        if default_root is not None:
            mounts = root_mounts((), default_root, layer)
        elif layer is not None:
            mounts = bounded_overlay(mounts, *layer)
        if block is not None:  # root inside owns its files, as root does outside
            mounts = idmapped_mounts(spec, mounts, block)
        return mounts

    def _mount(self, entry: PodEntry, size: int) -> tuple[str, str]:
        path = self.path(entry.record)
        if _UNSAFE.search(path):
            raise failed_precondition(
                f"the sandbox's root layer cannot be at {go_quote(path)} (a comma, colon or "
                "backslash in the path): give the sandboxer a plainer state directory"
            )
        if os.path.ismount(path):  # what a Start cut short may have left
            self._detach_ours(path)
        private_dir(self._table.sandbox_dir(entry), LAYER_DIR)
        data = f"size={size},nr_inodes={layer_inodes(size)},mode=0700".encode()
        flags = _MS_NOSUID | _MS_NODEV
        if self._libc.mount(TMPFS_SOURCE.encode(), path.encode(), b"tmpfs", flags, data) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot mount the root layer's tmpfs: {os.strerror(code)}", path)
        self._mounted.add(path)
        try:
            upper, work = os.path.join(path, "upper"), os.path.join(path, "work")
            os.mkdir(upper)
            os.chmod(upper, 0o755)  # the upper's root is the sandbox's "/": others must enter
            os.mkdir(work, 0o700)
        except BaseException:
            self._umount(path)
            self._mounted.discard(path)
            raise
        return upper, work

    def release(self, entry: PodEntry) -> None:
        """Detach the sandbox's root layer's own mount (the overlay holds its clone) and
        remove its mount point; nothing when there is none."""
        path = self.path(entry.record)
        if path in self._mounted:
            self._mounted.discard(path)
            self._umount(path)
        with contextlib.suppress(OSError):
            os.rmdir(path)
            os.rmdir(os.path.dirname(path))  # a failed Start's, once nothing else is in it

    def _detach_ours(self, path: str) -> bool:
        """Detach the root layers' tmpfs mounts on top at ``path`` (not another's, nor what
        one covers); whether there was one."""
        found = False
        for point, ours in reversed(_mount_points()):
            if point == path:
                if not ours or not self._umount(path):
                    break
                found = True
        return found

    def _umount(self, path: str) -> bool:
        """Detach the top mount at ``path``, not following a symlink; whether there was one."""
        if self._libc.umount2(path.encode(), _MNT_DETACH | _UMOUNT_NOFOLLOW) == 0:
            return True
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            _log.warning("cannot detach %s: %s", path, os.strerror(code))
        return False

    def sweep(self) -> list[str]:
        """Detach the root layers' tmpfs mounts under the sandboxes' directory (only a
        sandboxer killed during a Start leaves one) and remove their mount points; their
        paths. A mount there of another kind or source is left alone, and so is what it
        covers."""
        top = os.path.join(self._table.base, "sandboxes") + os.sep
        found = []
        for point in reversed(dict.fromkeys(p for p, _ in _mount_points())):
            if not point.startswith(top) or os.path.basename(point) != LAYER_DIR:
                continue
            if self._detach_ours(point):
                found.append(point)
            with contextlib.suppress(OSError):
                os.rmdir(point)
                os.rmdir(os.path.dirname(point))  # a sandbox's with nothing else in it
        return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_points() -> list[tuple[str, bool]]:
    """The mount points of this process's mount namespace, in mount order, each with whether
    it is a root layer's tmpfs (its type and source)."""
    points = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields, _, rest = line.partition(" - ")
                point, kind = fields.split()[4:5], rest.split()[:2]
                if point:
                    points.append((_unescape(point[0]), kind == ["tmpfs", TMPFS_SOURCE]))
    except OSError:
        return []
    return points
