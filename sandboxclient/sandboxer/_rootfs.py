"""The default root filesystem of an isolated sandbox whose spec and Create request give none.

It is built by the sandboxer itself, once, in ``<state>/default-root/fs`` (the state directory,
or the sandboxer's private directory without one), from the host's statically linked busybox
(Debian's ``busybox-static``): ``/bin/busybox`` and a link per applet (so a shell and the
usual tools), empty ``/dev``, ``/proc``, ``/sys``, ``/tmp``, ``/run``, ``/root``, ``/home``,
``/var``, and an ``/etc/passwd`` and ``/etc/group`` naming only root (0) and nobody (65534).
Nothing else of the host is in it. Sandboxes get it read-only (shared by all of them, so no
sandbox can leave anything there for another), with a private tmpfs on ``/tmp``.

It is built in a temporary directory next to it and renamed into place, so a sandboxer
killed midway leaves no half-made root behind: one found in place is complete, and used.

It is a level down in a directory of its own because containerd's shim idmaps an overlay's
lower directories through their parent (the longest common prefix's directory): from 2.3 it
clones that parent with its submounts (``AT_RECURSIVE``), and the idmapping fails
(``EINVAL``) on any submount whose filesystem cannot be idmapped. The state directory holds
such mounts (the user namespaces' and network namespaces' pins, the sandboxes' disks), so a
root directly in it could not be idmapped by containerd 2.3 and later. (Sandboxers before
this layout left ``<state>/rootfs``; it is left as it is: sandboxes may still run on it.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

from .._serve._busybox import build_busybox_root, busybox_problem
from .._serve._refusals import failed_precondition
from ._stages import mark
from ._threadwork import in_thread

__all__ = ("DefaultRoot",)


class DefaultRoot:
    """The default root filesystem under ``parent``, built on first use."""

    def __init__(self, parent: str) -> None:
        # The root's parent holds nothing but the root and, while it is built, its temporary.
        self.path = os.path.join(parent, "default-root", "fs")
        self._lock = asyncio.Lock()

    async def ensure(self) -> str:
        """The root's directory, built if need be.

        Raises FAILED_PRECONDITION, saying what to install or give instead, when the host
        has no static busybox.
        """
        async with self._lock:
            if not self.built():
                problem = busybox_problem()
                if problem is not None:
                    raise failed_precondition(
                        f"no default root filesystem for the sandbox: {problem}; or give "
                        "the sandbox a root (the spec's root.path, or rootfs mounts)"
                    )
                # Cancelled, the Start waits for the build: none goes on unowned, into a
                # private directory the close may be removing.
                await in_thread(self._build)
        mark("default root")
        return self.path

    def built(self) -> bool:
        """Whether the root is in place (it is only ever renamed there complete)."""
        return os.path.isdir(self.path)

    def _build(self) -> None:
        parent = os.path.dirname(self.path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".rootfs-", dir=parent)
        try:
            build_busybox_root(work)
            os.rename(work, self.path)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
