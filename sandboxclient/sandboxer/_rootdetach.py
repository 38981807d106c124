"""A created sandbox's root, taken out of the host's mount table.

containerd's runc shim mounts a task's root (the rootfs mounts of Tasks.Create: a sandbox's
overlay) at ``<bundle>/rootfs`` in its own mount namespace, the host's, and leaves it there
until the task is deleted. runc's ``create`` gives the container a mount namespace of its
own, a copy of the host's, and pivots into its copy of that root: once Tasks.Create is done
nothing reads the host's mount (execs and members join the sandbox's namespaces through its
process; runc's ``start``, ``kill`` and ``delete`` touch only its state and cgroups). Left
there, it is one more mount in the host's table per live sandbox, which every runc
``create`` after it walks (the copy of the table in its new mount namespace, the recursive
``rslave`` of it, the detach of the old root after ``pivot_root``): 300 such overlays made a
bare ``runc create`` 3 to 10 ms longer here.

So once a runc sandbox's task is created, before it starts (runc's init waits, its root
pivoted to, running nothing of the sandbox's), its root is detached from the host's table
(``MNT_DETACH``): the overlay lives on in the sandbox's mount namespace (the layer's tmpfs
with it) and goes when that namespace does, with the sandbox's last process. The shim's
unmount at Tasks.Delete then finds nothing mounted there, which it accepts. Only the mounts of
that sandbox's bundle that are the root of the task's process (the same directory: device
and inode) are detached, so a mount of the same path in another containerd's state, or a root
the caller gave as a path (the shim mounts nothing then), is left alone. It is best effort:
what cannot be read or detached is logged and left to the shim's unmount at Tasks.Delete.
It runs in a thread, off the event loop: the stat of the process's root reaches the
caller's filesystem when the root is a path it gave, which may hang (a network one).
A gVisor sandbox keeps its root: runsc's file server serves it from the host's path.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Final

from ._stages import mark
from ._threadwork import in_thread

__all__ = ("detach_task_root", "detaching_first")

_log = logging.getLogger("sandboxclient.sandboxer")

_MNT_DETACH: Final = 2
_UMOUNT_NOFOLLOW: Final = 8
_BUNDLES: Final = b"io.containerd.runtime.v2.task"
"""The folder of containerd's state in which its v2 runtime makes each task's bundle."""
_OCTAL: Final = re.compile(rb"\\([0-7]{3})")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _bundle_mounts(suffix: bytes) -> dict[bytes, int]:
    """How many mounts this process's (the host's) table has at each mount point that ends
    in ``suffix``."""
    found: dict[bytes, int] = {}
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), line.split()[4])
            if point.endswith(suffix):
                found[point] = found.get(point, 0) + 1
    return found


def _same(path: bytes | str, root: os.stat_result) -> bool:
    st = os.stat(path)
    return (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino)


def detach_task_root(namespace: str, sandbox_id: str, pid: int) -> int:
    """Detach, from this process's (the host's) mount table, the root containerd's shim
    mounted for the sandbox's task whose process is ``pid``; how many mounts were detached
    (0 when there is none, or the process or the table cannot be read). Never raises: what
    is left, the shim unmounts at Tasks.Delete."""
    detached = 0
    try:
        suffix = b"/%s/%s/%s/rootfs" % (_BUNDLES, os.fsencode(namespace), os.fsencode(sandbox_id))
        mounts = _bundle_mounts(suffix)
        if not mounts:
            return 0  # a root the caller gave as a path: its filesystem is not even looked at
        root = os.stat(f"/proc/{pid}/root")
        for point, count in mounts.items():
            # Each call detaches the top mount (with its submounts), while it is the task's
            # root: the same directory (device and inode) as the process's.
            for _ in range(count):
                if not _same(point, root):
                    _log.debug("sandbox %s: %s is not its root", sandbox_id, os.fsdecode(point))
                    break
                if _libc().umount2(point, _MNT_DETACH | _UMOUNT_NOFOLLOW) != 0:
                    raise OSError(ctypes.get_errno(), "cannot detach", os.fsdecode(point))
                detached += 1
    except (OSError, ValueError, IndexError) as exc:
        _log.warning("sandbox %s: its root stays in the host's mount table: %s", sandbox_id, exc)
    return detached


def detaching_first(
    attach: Callable[[int], Awaitable[None]] | None, namespace: str, sandbox_id: str
) -> Callable[[int], Awaitable[None]]:
    """A hook for between the task's Create and its Start (``PodRuntime.launch``'s
    ``before_start``): the root detached (:func:`detach_task_root`), then the sandbox's
    network attached by ``attach``, if it has one; each a stage of the Start (:mod:`._stages`)."""

    async def before_start(pid: int) -> None:
        # Raises nothing but a cancellation, which waits for the thread to end.
        await in_thread(detach_task_root, namespace, sandbox_id, pid)
        mark("root detached from the host's mount table")
        if attach is not None:
            await attach(pid)
            mark("network attach")

    return before_start
