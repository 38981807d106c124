"""The host's mount table, for the scale bench: its size, and binds added to it for a while.

Every new container's mount namespace copies the host's table (and runc detaches the copy
after its pivot_root), so containerd's Tasks.Create grows with it. :func:`pin_like_binds`
adds binds of a user namespace's nsfs file, what the isolating sandboxer's pins are, to
read what each such mount costs a Create+Start at a given count of live sandboxes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Iterator
from typing import Final

__all__ = ("host_mounts", "pin_like_binds")

_MS_BIND: Final = 4096
_MNT_DETACH: Final = 2


def host_mounts() -> int:
    """The count of mounts in this process's (the host's) mount table."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return sum(1 for _ in f)


@contextlib.contextmanager
def pin_like_binds(count: int) -> Iterator[None]:
    """``count`` binds of this process's user namespace file on files of a new directory,
    in the host's table while the block runs (OSError naming the one that failed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    source = os.fsencode(f"/proc/{os.getpid()}/ns/user")
    made: list[bytes] = []
    with tempfile.TemporaryDirectory(prefix="sbx-pins-") as tmp:
        try:
            for i in range(count):
                target = os.fsencode(os.path.join(tmp, str(i)))
                with open(target, "wb"):
                    pass
                if libc.mount(source, target, None, _MS_BIND, None) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"bind {source!r} on {target!r}: {os.strerror(err)}")
                made.append(target)
            yield
        finally:
            for target in reversed(made):
                libc.umount2(target, _MNT_DETACH)
