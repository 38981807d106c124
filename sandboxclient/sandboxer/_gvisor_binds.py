"""A gVisor sandbox's bind mounts of host paths, in a user namespace: reachable, or refused.

runc opens a bind mount's source as the host's root (and hands the open directory to the
container's set-up), so under runc a sandbox in a user namespace may bind any host path,
whatever the directories above it. runsc 20221219 does not: its file server (the gofer)
resolves the source itself, in the sandbox's user namespace, as the sandbox's root, which
on the host is an unprivileged id that owns nothing there (its block's first id). A source
below a directory that id may not search (``/root/data``, a ``0700`` temporary directory)
makes ``runsc create`` fail with ``stat(...) failed: permission denied``, which the
caller would only see at Start as the runtime's ``cannot read client sync file: EOF``.

So such a mount is refused by name, with why and the ways out, at Create (and Update) and
again at Start, before anything is set up (the host may have changed in between): make every
directory above the source searchable by others (``o+x``), or run the sandbox with the
host's users. A source that can be reached is bound as under runc: its files keep their host
owners (the host's root's show as ``nobody`` inside) and their permissions hold.

The test is the one the kernel makes for an id that is neither owner nor in the group: the
others' search bit of every directory the path goes through, symbolic links followed
(an access control list that grants more is not taken into account: such a path is refused).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._golang import go_quote
from .._serve._refusals import failed_precondition
from ._userns import has_own_user_namespace, host_users_asked

__all__ = ("check_binds", "check_binds_at_start", "unreachable_directory")

_MAX_LINKS: Final = 40  # the kernel's own bound on symbolic links in one path walk


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


def _refusal(mount: Mapping[str, Any], where: str, mode: int) -> Exception:
    return failed_precondition(
        f"spec mount at {go_quote(str(mount.get('destination')))} binds host path "
        f"{go_quote(str(mount.get('source')))}, which a gVisor sandbox in a user namespace "
        f"cannot reach: its file server resolves it as the sandbox's root, an unprivileged "
        f"id on the host, and may not search {go_quote(where)} (mode {mode:04o}); make every "
        "directory above it searchable by others (o+x), or ask for host_users=True"
    )


def _check_mounts(spec: Mapping[str, Any]) -> None:
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
            raise _refusal(mount, *found)


def check_binds(spec: Mapping[str, Any] | None, annotations: Mapping[str, str]) -> None:
    """At Create (or Update), for a gVisor sandbox's spec as given: FAILED_PRECONDITION
    naming a bind mount whose source its file server could not reach, unless the sandbox
    runs with the host's users (see the module's docstring)."""
    if spec is None:
        return
    if host_users_asked(spec, annotations) is True and not has_own_user_namespace(spec):
        return
    _check_mounts(spec)


def check_binds_at_start(spec: Mapping[str, Any]) -> None:
    """At Start, for a gVisor sandbox's whole spec (its user namespace, if any, in it): the
    same refusal as :func:`check_binds`, before anything is set up."""
    if has_own_user_namespace(spec):
        _check_mounts(spec)
