"""A sandbox's user namespace, owned by its block of host ids and pinned in the sandboxer's
state, so that the kernel's per-user budgets are the sandbox's own.

The kernel charges what a process in a user namespace holds against per-user budgets
(ucounts) at each level up to the host: inotify instances and watches, POSIX message queue
bytes, user namespaces, and the rlimit-counted ones, at each parent level to the
namespace's *owner* (the euid of the process that created it). A user namespace runc
creates is owned by the host's root, so 128 inotify instances held inside a sandbox used up
the host root's ``fs.inotify.max_user_instances`` budget, and every sandbox shared one.

So the sandboxer creates the namespace itself: a helper process running as the block's
first host id (``unshare -U`` from util-linux, as that id, its groups cleared) creates it and
waits; the sandboxer (root, with CAP_SETUID/CAP_SETGID over every namespace) writes its
``uid_map`` and ``gid_map`` (ids 0.. inside are the block), bind-mounts
``/proc/<helper>/ns/user`` onto a file of the pool's directory to pin it, and lets the
helper go. The namespace lives as long as the pin or a process in it: the pin is unmounted
once the sandbox's Start is done and its process holds the namespace (see :mod:`._userns`),
and the owner is noted in the spec's annotation :data:`USERNS_OWNER_ANNOTATION` for Status,
which reads it from containerd's record after a sandboxer restart, the pin long gone.

runc (1.1.5 here, Debian's) is given the namespace by path (``linux.namespaces`` entry
``{"type": "user", "path": <pin>}``) and still the spec's ``uidMappings``/``gidMappings``:
runc 1.1 refuses a user namespace without them ("User namespaces enabled, but no uid
mappings found": it computes the host id of root inside from them, for device nodes and
``/dev``), does not check them against the namespace's, and writes no map when it joins
(runc 1.2 would read them from the namespace and check that they match). containerd reads
the same mappings to open the bundle to the mapped root. The idmapped root mounts carry
their own mapping in ``uidmap=``/``gidmap=`` options, from which containerd's shim makes a
throwaway namespace for ``mount_setattr``: they need no particular owner. runc joins the user
namespace first and creates the sandbox's other new namespaces (mount, pid, network, ipc,
uts) after, so they are owned by it. Members and execs join the same namespace
(``/proc/<pid>/ns/user``), so they are charged to the block as well.

One thing runc needs the host root's ownership for: the spec's ``process.rlimits``, which
runc sets from outside (prlimit on the container's first process, "error setting rlimits for
ready process"). The kernel lets a process set another's limits in a user namespace only
with CAP_SYS_RESOURCE there, which the namespace's owner has and the host's root has through
the init namespace, unless the host took CAP_SYS_RESOURCE from it (some container and VM
hosts do). So where the sandboxer lacks CAP_SYS_RESOURCE (:func:`rlimits_settable`), a
sandbox gets a namespace owned by its block only when its spec asks for no rlimits (the
default ones are then left out: its processes keep the shim's); a spec with rlimits of its
own gets runc's namespace, owned by the host's root, whose budgets it shares, as Status
says (``userns_owner``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from .._members._spec import RLIMITS_UNSETTABLE_ANNOTATION

__all__ = (
    "UNSHARE",
    "USERNS_OWNER_ANNOTATION",
    "OwnedNamespaceError",
    "fit_rlimits",
    "make_pinned",
    "note_owner",
    "owner_of",
    "pinned",
    "rlimits_settable",
    "unpin",
    "userns_in_force",
    "userns_problem",
)

UNSHARE: Final = "unshare"
"""util-linux's unshare(1), looked up on PATH (and in /usr/bin, /bin)."""

USERNS_OWNER_ANNOTATION: Final = "io.sandboxclient.userns-owner"
"""The annotation on a sandbox's spec naming the host uid owning the user namespace it
joins by the sandboxer's pin (set by :func:`note_owner`, read by :func:`userns_in_force`)."""

_MS_BIND: Final = 4096
_MNT_DETACH: Final = 2
_NS_GET_OWNER_UID: Final = 0xB704
_SETTLE: Final = 5.0
_CAP_SYS_RESOURCE: Final = 24


class OwnedNamespaceError(RuntimeError):
    """The sandbox's user namespace could not be made, pinned or read: what and why."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def rlimits_settable() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE, with which runc (started by the same
    containerd as root) can set the rlimits of a process in a namespace it does not own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return False


def fit_rlimits(spec: dict[str, Any], userns_path: str) -> None:
    """Leave the rlimits out of a sandbox's full ``spec`` (changed in place) when it joins
    the namespace pinned at ``userns_path`` and runc could not set them there, and say so
    to its members (:data:`RLIMITS_UNSETTABLE_ANNOTATION`). Only the default ones can be
    there then: a spec with its own gets no such namespace (``SandboxUsers.pin``)."""
    if userns_path and not rlimits_settable():
        spec["process"].pop("rlimits", None)
        spec.setdefault("annotations", {})[RLIMITS_UNSETTABLE_ANNOTATION] = "true"


def note_owner(spec: dict[str, Any], userns_path: str) -> None:
    """Note in a sandbox's full ``spec`` (changed in place) the owner of the user namespace
    pinned at ``userns_path``, read now, while it is pinned (the pin goes once the sandbox
    runs). Without a path, or when the pin cannot be read, any such note the spec brought
    is dropped: it would be no reading (Status then says ``unknown`` once unpinned)."""
    given = spec.get("annotations")
    if isinstance(given, dict):
        given.pop(USERNS_OWNER_ANNOTATION, None)
    if userns_path:
        try:
            owner = owner_of(userns_path)
        except OSError:
            return
        spec.setdefault("annotations", {})[USERNS_OWNER_ANNOTATION] = str(owner)


def _unshare_binary() -> str:
    found = shutil.which(UNSHARE) or shutil.which(UNSHARE, path="/usr/bin:/bin")
    if found is None:
        raise OwnedNamespaceError(
            f"{UNSHARE} (util-linux) is not installed: the sandboxer creates each sandbox's "
            "user namespace with it, as the sandbox's own host id"
        )
    return found


def owner_of(path: str | os.PathLike[str]) -> int:
    """The host uid owning the user namespace at ``path`` (a pin or ``/proc/<pid>/ns/user``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, _NS_GET_OWNER_UID, buf)
    finally:
        os.close(fd)
    return int(struct.unpack("I", buf)[0])


def pinned(pin: Path) -> bool:
    """Whether ``pin`` holds a user namespace (a bind of an nsfs file over it), not a stale
    empty file."""
    try:
        if not os.path.ismount(pin):
            return False
        owner_of(pin)  # only a namespace file answers NS_GET_OWNER_UID
    except OSError:
        return False
    return True


def make_pinned(pin: Path, start: int, size: int) -> None:
    """Create a user namespace owned by host id ``start``, in which ids ``0..size-1`` are host
    ids ``start..``, and pin it at ``pin``. Idempotent: a pin already there is kept.
    Blocking (a few milliseconds): run it off the event loop. OwnedNamespaceError naming the
    step that failed; nothing is left behind then."""
    if pinned(pin):
        return
    unshare = _unshare_binary()
    try:
        helper = subprocess.Popen(
            [unshare, "--user", "--", "/bin/sh", "-c", "echo; read _"],
            user=start,
            group=start,
            extra_groups=[],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env={},
            close_fds=True,
        )
    except OSError as exc:
        raise OwnedNamespaceError(f"cannot start {unshare} as host id {start}: {exc}") from None
    assert helper.stdin is not None
    assert helper.stdout is not None
    try:
        said = helper.stdout.readline()
        if said != b"\n":  # it exited (unshare refused), or is not what it should be
            raise OwnedNamespaceError(
                f"{unshare} --user as host id {start} did not make the namespace "
                f"(it said {said!r}; user namespaces may be limited for that id)"
            )
        line = f"0 {start} {size}\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{helper.pid}/{name}", "w") as f:
                f.write(line)
        _bind(f"/proc/{helper.pid}/ns/user", pin)
    except OSError as exc:
        raise OwnedNamespaceError(f"cannot map and pin the user namespace: {exc}") from None
    finally:
        helper.stdin.close()
        helper.stdout.close()
        try:
            helper.wait(_SETTLE)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def _bind(source: str, pin: Path) -> None:
    fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    libc = _libc()
    if libc.mount(os.fsencode(source), os.fsencode(pin), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        with contextlib.suppress(OSError):
            os.unlink(pin)
        raise OSError(err, f"bind {source} on {pin}: {os.strerror(err)}")


def unpin(pin: Path) -> None:
    """Let go of the namespace pinned at ``pin`` (it ends once no process is in it) and
    remove the file. Idempotent."""
    libc = _libc()
    while os.path.ismount(pin):  # one bind per make_pinned, but be thorough
        if libc.umount2(os.fsencode(pin), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                break
            raise OSError(err, f"unmount {pin}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pin)


def userns_in_force(spec: Mapping[str, Any]) -> tuple[str, str]:
    """What a full spec says of its user namespace, as Status shows it: the host ids root
    inside and up are (``<first>-<last>``, or ``host`` without a user namespace), and the
    host uid owning the namespace (``0`` when runc makes it, as the host's root; the owner
    of the one joined by path, read from it or, once it is unpinned, from the spec's
    :data:`USERNS_OWNER_ANNOTATION`, else ``unknown``; empty without one)."""
    linux = spec.get("linux") or {}
    entry = next(
        (
            n
            for n in linux.get("namespaces") or []
            if isinstance(n, dict) and n.get("type") == "user"
        ),
        None,
    )
    if entry is None:
        return "host", ""
    root = next(
        (
            m
            for m in linux.get("uidMappings") or []
            if isinstance(m, dict) and m.get("containerID") == 0
        ),
        None,
    )
    try:
        ids = f"{root['hostID']}-{root['hostID'] + root['size'] - 1}" if root else "unmapped"
    except (KeyError, TypeError):
        ids = "unmapped"
    path = entry.get("path")
    if not path:
        return ids, "0"
    try:
        return ids, str(owner_of(str(path)))
    except (OSError, ValueError):
        noted = (spec.get("annotations") or {}).get(USERNS_OWNER_ANNOTATION)
        return ids, noted if isinstance(noted, str) and noted.isdecimal() else "unknown"


_SYS_MOUNT_SETATTR: Final = 442  # x86_64 and most others share the new mount API's numbers


@functools.cache
def userns_problem() -> str | None:
    """Why this host cannot give a sandbox a user namespace with idmapped mounts, or None."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read()) < 1:
                return "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)"
    except FileNotFoundError:
        return "the kernel has no user namespaces"
    except (OSError, ValueError) as exc:
        return f"cannot read /proc/sys/user/max_user_namespaces: {exc}"
    libc = ctypes.CDLL(None, use_errno=True)
    # mount_setattr(-1, "", 0, NULL, 0): EBADF/EINVAL where it exists, ENOSYS where not.
    failed = libc.syscall(_SYS_MOUNT_SETATTR, -1, b"", 0, None, 0) == -1
    if failed and ctypes.get_errno() == errno.ENOSYS:
        return "the kernel has no idmapped mounts (mount_setattr, Linux 5.12+)"
    return None
