"""The network namespaces of the sandboxer's sandboxes, pinned by a bind mount.

runc makes a sandbox's network namespace when it creates its task (in the sandbox's user
namespace, which must own it for the sandbox's ``/sys`` to be mounted); the sandboxer pins
it with a bind mount of ``/proc/<pid>/ns/net`` at a path, so that CNI's plugins enter it by
path, and its DEL still finds it after the sandbox's processes are gone, or after a
sandboxer restart. Removing it is unmounting the path and unlinking it.

:func:`make_netns` makes one *before* the task, as CRI does, so that the plugins can run
while containerd and runc create the task, which then joins it by path: a helper process
enters the sandbox's pinned user namespace (``nsenter --user``), makes a network namespace
there (``unshare --net``; it is then owned by the sandbox's user namespace, as runc's
would be) and waits while the sandboxer pins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import AsyncIterator
from typing import Final

__all__ = ("is_mounted", "make_netns", "netns_holder", "pin_netns", "remove_netns")


def is_mounted(path: str) -> bool:
    """Whether ``path`` is a mount point (of this mount namespace)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


_MS_BIND: Final = 4096
_MNT_DETACH: Final = 2


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unmount(path: str) -> None:
    if _libc().umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise OSError(err, f"unmount {path}: {os.strerror(err)}")


async def pin_netns(pid: int, path: str) -> None:
    """Pin the network namespace of ``pid`` by a bind mount at ``path``."""
    if is_mounted(path):
        _unmount(path)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    source = f"/proc/{pid}/ns/net"
    if _libc().mount(os.fsencode(source), os.fsencode(path), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind {source} on {path}: {os.strerror(err)}")


async def make_netns(userns: str, path: str, *, timeout: float = 10.0) -> None:
    """Make a network namespace owned by the user namespace pinned at ``userns`` and pin it
    at ``path`` (OSError naming the step that failed; nothing pinned then)."""
    async with netns_holder(userns, timeout=timeout) as pid:
        await pin_netns(pid, path)


@contextlib.asynccontextmanager
async def netns_holder(userns: str | None, *, timeout: float = 10.0) -> AsyncIterator[int]:
    """The pid of a helper process in a new network namespace, owned by the user namespace
    pinned at ``userns`` (None: the sandboxer's own), for the block to pin or set up; the
    helper is gone after it. OSError naming the step that failed."""
    enter = ["nsenter", f"--user={userns}", "--"] if userns is not None else []
    helper = await asyncio.create_subprocess_exec(
        *enter,
        "unshare",
        "--net",
        "--",
        "/bin/sh",
        "-c",
        "echo; read _",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd="/",
    )
    assert helper.stdin is not None
    assert helper.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            said = await helper.stdout.readline()
        if said != b"\n":  # it exited: nsenter or unshare refused
            assert helper.stderr is not None
            why = (await helper.stderr.read()).decode(errors="replace").strip()[:300]
            raise OSError(f"cannot make a network namespace in {userns or 'its own'}: {why}")
        yield helper.pid
    finally:
        helper.stdin.close()  # it reads its end of input and exits
        with contextlib.suppress(ProcessLookupError):
            if helper.returncode is None:
                helper.kill()
        await asyncio.shield(helper.wait())


async def remove_netns(path: str) -> None:
    """Unmount and remove a namespace made by :func:`pin_netns` (nothing if gone)."""
    if is_mounted(path):
        _unmount(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
