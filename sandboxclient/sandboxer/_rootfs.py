"""The default root filesystem of an isolated sandbox whose spec and Create request give none.

It is built by the sandboxer itself, once, in ``<state>/rootfs`` (the state directory, or the
sandboxer's private directory without one), from the host's statically linked busybox
(Debian's ``busybox-static``): ``/bin/busybox`` and a link per applet (so a shell and the
usual tools), empty ``/dev``, ``/proc``, ``/sys``, ``/tmp``, ``/run``, ``/root``, ``/home``,
``/var``, and an ``/etc/passwd`` and ``/etc/group`` naming only root (0) and nobody (65534).
Nothing else of the host is in it. Sandboxes get it read-only (shared by all of them, so no
sandbox can leave anything there for another), with a private tmpfs on ``/tmp``.

It is built in a temporary directory next to it and renamed into place, so a sandboxer
killed midway leaves no half-made root behind: one found in place is complete, and used.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

from .._serve._busybox import build_busybox_root, busybox_problem
from .._serve._refusals import failed_precondition
from ._stages import mark

__all__ = ("DefaultRoot",)


class DefaultRoot:
    """The default root filesystem under ``parent``, built on first use."""

    def __init__(self, parent: str) -> None:
        self.path = os.path.join(parent, "rootfs")
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
                await asyncio.to_thread(self._build)
        mark("default root")
        return self.path

    def built(self) -> bool:
        """Whether the root is in place (it is only ever renamed there complete)."""
        return os.path.isdir(self.path)

    def _build(self) -> None:
        parent = os.path.dirname(self.path)
        work = tempfile.mkdtemp(prefix=".rootfs-", dir=parent)
        try:
            build_busybox_root(work)
            os.rename(work, self.path)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
