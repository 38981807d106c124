"""Whether a gVisor member's file server can reach the host paths its spec binds.

runsc 20221219 starts a member's file server (its gofer) in the sandbox's user namespace,
as the sandbox's root: on the host an unprivileged id that owns nothing there (the block's
first id), which resolves each bind mount's source itself. A source below a directory that
id may not search (``/root/data``, a ``0700`` temporary directory) made the member's Start
fail with runsc's ``reading mounts file: error unmarshaling mounts``, after its container
and task were made. The sandbox's own binds are bound for it by the sandboxer, as the host's
root (``sandboxer/_gvisor_binds.py``); a member is made by the client through containerd,
with no one on the host to do that, so such a source is refused before anything is made.

The test is the kernel's for an id that is neither owner nor in the group: the others'
search bit of every directory the path goes through, symbolic links followed (an access
control list that grants more is not taken into account: such a path is refused).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ("Unreachable", "unreachable_bind", "unreachable_directory")

_MAX_LINKS: Final = 40  # the kernel's own bound on symbolic links in one path walk


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A bind mount whose source an unprivileged id cannot reach, and the directory why."""

    destination: str
    source: str
    directory: str
    mode: int


def _is_bind(kind: object, options: Sequence[object]) -> bool:
    return kind == "bind" or any(o in ("bind", "rbind") for o in options)


def unreachable_directory(path: str) -> tuple[str, int] | None:
    """The first directory (and its mode) on the way to absolute ``path`` that an id owning
    nothing on the host may not search, following symbolic links; None when there is none.
    A path that does not exist is left to the runtime (None past the missing part)."""
    pending = [p for p in path.split("/") if p]
    pending.reverse()
    current = "/"
    links = 0
    while pending:
        try:
            info = os.stat(current)
        except OSError:
            return None
        if not info.st_mode & stat.S_IXOTH:
            return current, stat.S_IMODE(info.st_mode)
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        step = os.path.join(current, part)
        try:
            if not stat.S_ISLNK(os.lstat(step).st_mode):
                current = step
                continue
            target = os.readlink(step)
        except OSError:
            return None
        links += 1
        if links > _MAX_LINKS:
            return None  # the runtime says ELOOP
        pending.extend(reversed([p for p in target.split("/") if p]))
        if target.startswith("/"):
            current = "/"
    return None


def unreachable_bind(spec: Mapping[str, Any]) -> Unreachable | None:
    """The first of ``spec``'s bind mounts of an absolute host path that an unprivileged id
    cannot reach, or None."""
    for mount in spec.get("mounts") or []:
        if not isinstance(mount, Mapping):
            continue
        source, options = mount.get("source"), mount.get("options") or []
        if not isinstance(source, str) or not source.startswith("/"):
            continue
        if not isinstance(options, list) or not _is_bind(mount.get("type"), options):
            continue
        found = unreachable_directory(source)
        if found is not None:
            return Unreachable(str(mount.get("destination")), source, *found)
    return None
