"""A started sandbox's root, taken out of the host's mount table.

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
that sandbox's bundle whose filesystem is the root of the task's process (its device, by
``stat``) are detached, so a mount of the same path in another containerd's state, or a root
the caller gave as a path (the shim mounts nothing then), is left alone. It is best effort:
what cannot be read or detached is logged and left to the shim's unmount at Tasks.Delete.
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


def _bundle_roots(suffix: bytes) -> dict[bytes, list[bytes]]:
    """The devices (``major:minor``) mounted at each mount point of this process's (the
    host's) table that ends in ``suffix``, in mount order."""
    stacks: dict[bytes, list[bytes]] = {}
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            point = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
            if point.endswith(suffix):
                stacks.setdefault(point, []).append(fields[2])
    return stacks


def detach_task_root(namespace: str, sandbox_id: str, pid: int) -> int:
    """Detach, from this process's (the host's) mount table, the root containerd's shim
    mounted for the sandbox's task whose process is ``pid``; how many mounts were detached
    (0 when there is none, or the process or the table cannot be read). Never raises: what
    is left, the shim unmounts at Tasks.Delete."""
    try:
        st_dev = os.stat(f"/proc/{pid}/root").st_dev
        root = f"{os.major(st_dev)}:{os.minor(st_dev)}".encode()
        suffix = b"/%s/%s/%s/rootfs" % (_BUNDLES, os.fsencode(namespace), os.fsencode(sandbox_id))
        stacks = _bundle_roots(suffix)
    except (OSError, ValueError, IndexError) as exc:
        _log.warning("sandbox %s: its root stays in the host's mount table: %s", sandbox_id, exc)
        return 0
    detached = 0
    for point, devices in stacks.items():
        # Each call detaches the top mount (with its submounts), while it is this task's root.
        while devices and devices[-1] == root:
            if _libc().umount2(point, _MNT_DETACH | _UMOUNT_NOFOLLOW) != 0:
                _log.warning(
                    "cannot detach the root of sandbox %s at %s from the host's mount table: %s",
                    sandbox_id, os.fsdecode(point), os.strerror(ctypes.get_errno()),
                )  # fmt: skip
                break
            devices.pop()
            detached += 1
    return detached


def detaching_first(
    then: Callable[[int], Awaitable[None]] | None, namespace: str, sandbox_id: str
) -> Callable[[int], Awaitable[None]]:
    """A hook for between the task's Create and its Start (``PodRuntime.launch``'s
    ``before_start``): the root detached (:func:`detach_task_root`), then ``then``."""

    async def before_start(pid: int) -> None:
        detach_task_root(namespace, sandbox_id, pid)
        mark("root detached from the host's mount table")
        if then is not None:
            await then(pid)

    return before_start
