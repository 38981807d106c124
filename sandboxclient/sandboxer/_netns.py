"""The network namespaces of the sandboxer's sandboxes, pinned by a bind mount.

runc makes a sandbox's network namespace when it creates its task (in the sandbox's user
namespace, which must own it for the sandbox's ``/sys`` to be mounted); the sandboxer pins
it with a bind mount of ``/proc/<pid>/ns/net`` at a path, so that CNI's plugins enter it by
path, and its DEL still finds it after the sandbox's processes are gone, or after a
sandboxer restart. Removing it is unmounting the path and unlinking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

__all__ = ("is_mounted", "pin_netns", "remove_netns")


def is_mounted(path: str) -> bool:
    """Whether ``path`` is a mount point (of this mount namespace)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


async def _run(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise OSError(f"{args[0]} failed: {err.decode(errors='replace').strip()[:300]}")


async def pin_netns(pid: int, path: str) -> None:
    """Pin the network namespace of ``pid`` by a bind mount at ``path``."""
    if is_mounted(path):
        await _run("umount", path)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    await _run("mount", "--bind", f"/proc/{pid}/ns/net", path)


async def remove_netns(path: str) -> None:
    """Unmount and remove a namespace made by :func:`pin_netns` (nothing if gone)."""
    if is_mounted(path):
        await _run("umount", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
