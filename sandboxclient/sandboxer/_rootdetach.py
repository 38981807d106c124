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

So once a runc sandbox's task is created its root is detached from the host's table
(``MNT_DETACH``): the overlay lives on in the sandbox's mount namespace (the layer's tmpfs
with it) and goes when that namespace does, with the sandbox's last process. The shim's
unmount at Tasks.Delete then finds nothing mounted there, which it accepts. Only the mount of
that sandbox's bundle whose filesystem is the root of the task's process is detached, so a
mount of the same path in another containerd's state, or a root the caller gave as a path
(the shim mounts nothing then), is left alone. A gVisor sandbox keeps its root: runsc's file
server serves it from the host's path.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from typing import Final

__all__ = ("detach_task_root",)

_log = logging.getLogger("sandboxclient.sandboxer")

_MNT_DETACH: Final = 2
_UMOUNT_NOFOLLOW: Final = 8
_BUNDLES: Final = "io.containerd.runtime.v2.task"
"""The folder of containerd's state in which its v2 runtime makes each task's bundle."""

_libc = ctypes.CDLL(None, use_errno=True)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts(pid: int | str) -> list[tuple[str, str]]:
    """The (device, mount point) of each mount of the process's mount namespace, in mount
    order; none when the process is gone."""
    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
            return [(fields[2], _unescape(fields[4])) for fields in map(str.split, f)]
    except (FileNotFoundError, ProcessLookupError):
        return []


def detach_task_root(namespace: str, sandbox_id: str, pid: int) -> int:
    """Detach, from this process's (the host's) mount table, the root containerd's shim
    mounted for the sandbox's task whose process is ``pid``; how many mounts were detached
    (0 when there is none, or the process is gone: the shim unmounts it at Tasks.Delete).

    A detach that fails is logged, not raised: the shim still unmounts it at Tasks.Delete.
    """
    roots = {device for device, point in _mounts(pid) if point == "/"}
    if not roots:
        return 0
    suffix = f"/{_BUNDLES}/{namespace}/{sandbox_id}/rootfs"
    stacks: dict[str, list[str]] = {}  # the devices mounted at each bundle's root, in order
    for device, point in _mounts("self"):
        if point.endswith(suffix):
            stacks.setdefault(point, []).append(device)
    detached = 0
    for point, devices in stacks.items():
        if devices[-1] not in roots:  # its top is not this task's root
            continue
        for _ in devices:  # each call detaches the top one, with its submounts
            if _libc.umount2(os.fsencode(point), _MNT_DETACH | _UMOUNT_NOFOLLOW) != 0:
                _log.warning(
                    "cannot detach the root of sandbox %s at %s from the host's mount table: %s",
                    sandbox_id, point, os.strerror(ctypes.get_errno()),
                )  # fmt: skip
                break
            detached += 1
    return detached
