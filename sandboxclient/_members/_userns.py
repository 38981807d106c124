"""A member's user namespace: the sandbox's, joined as its network is.

When the sandbox's process runs in a user namespace other than the client's (the isolating
sandboxer gives every sandbox one unless it asks for the host's users), a member whose spec
brings no user namespace or id mappings of its own joins it: a ``user`` namespace entry with
the path ``/proc/<pid>/ns/user``, and the namespace's own ``uidMappings``/``gidMappings``
(read from ``/proc/<pid>/uid_map`` and ``gid_map``; runc wants them, and containerd opens the
bundle to the mapped root by them). A spec with its own user namespace is used as given.

The member's root must then look root-owned inside, without a copy:

- a host directory (``rootfs=``, or the spec's absolute ``root.path``) becomes the bundle's
  root, ``root.path`` ``"rootfs"``, and the task's root mount is a bind of the directory
  carrying containerd's ``uidmap=``/``gidmap=`` options, which the runc shim idmaps after
  mounting. The directory is named in the spec's annotation :data:`ROOTFS_BIND_ANNOTATION`,
  so any client that makes the task finds it. containerd idmaps no read-only bind, so the
  bind is read-write and a read-only root is the spec's ``root.readonly`` (runc remounts it).
- an image's snapshot is prepared with the labels ``containerd.io/snapshot/uidmapping`` and
  ``gidmapping``: containerd's overlay snapshotter makes its upper directory the mapped
  root's and gives its mounts the ``uidmap=``/``gidmap=`` options (the shim idmaps the lower
  layers). A snapshotter whose mounts come back without them cannot idmap, and the member is
  refused (FailedPreconditionError naming why and the way out), never run as the host's root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .._facts._golang import go_quote
from .._models import Mount
from ..errors import FailedPreconditionError

__all__ = (
    "ROOTFS_BIND_ANNOTATION",
    "SNAPSHOT_GIDMAP_LABEL",
    "SNAPSHOT_UIDMAP_LABEL",
    "MemberUsers",
    "check_idmapped",
    "has_own_user_namespace",
    "rootfs_bind",
    "sandbox_users",
)

ROOTFS_BIND_ANNOTATION: Final = "io.sandboxclient.rootfs-bind"
"""The annotation on a member's spec naming the host directory its task's root is an
idmapped bind of (its ``root.path`` is then the bundle's ``"rootfs"``)."""

SNAPSHOT_UIDMAP_LABEL: Final = "containerd.io/snapshot/uidmapping"
"""The snapshot label by which containerd's overlay snapshotter idmaps a snapshot's uids."""

SNAPSHOT_GIDMAP_LABEL: Final = "containerd.io/snapshot/gidmapping"
"""The snapshot label by which containerd's overlay snapshotter idmaps a snapshot's gids."""

_WAY_OUT = (
    "pass join_namespaces=False to run the member outside the sandbox's namespaces, or make "
    "the sandbox with host_users=True"
)


@dataclass(frozen=True, slots=True)
class IdRange:
    """One line of a user namespace's id map: ``inside`` .. is ``host`` .. for ``size`` ids."""

    inside: int
    host: int
    size: int

    def to_dict(self) -> dict[str, int]:
        """The range as an OCI spec's ``uidMappings`` entry."""
        return {"containerID": self.inside, "hostID": self.host, "size": self.size}


@dataclass(frozen=True, slots=True)
class MemberUsers:
    """The user namespace of a sandbox's process, as its members join it."""

    path: str
    """``/proc/<pid>/ns/user`` of the sandbox's process."""
    uid_map: tuple[IdRange, ...]
    gid_map: tuple[IdRange, ...]

    def join(self, spec: dict[str, Any]) -> bool:
        """Make ``spec`` (a full spec, changed in place) join the namespace, unless it has a
        user namespace or mappings of its own; whether it joined. A host directory as its
        root becomes the bundle's root, named in :data:`ROOTFS_BIND_ANNOTATION`."""
        if has_own_user_namespace(spec):
            return False
        linux = spec.setdefault("linux", {})
        linux.setdefault("namespaces", []).append({"type": "user", "path": self.path})
        linux["uidMappings"] = [r.to_dict() for r in self.uid_map]
        linux["gidMappings"] = [r.to_dict() for r in self.gid_map]
        root = spec.setdefault("root", {})
        path = str(root.get("path") or "")
        if os.path.isabs(path):
            annotations = spec.get("annotations")
            if not isinstance(annotations, dict):
                annotations = spec["annotations"] = {}
            annotations[ROOTFS_BIND_ANNOTATION] = path
            root["path"] = "rootfs"
        return True

    def snapshot_labels(self) -> dict[str, str]:
        """The labels with which the overlay snapshotter idmaps a snapshot for the namespace."""
        return {
            SNAPSHOT_UIDMAP_LABEL: _map_text(self.uid_map),
            SNAPSHOT_GIDMAP_LABEL: _map_text(self.gid_map),
        }


def has_own_user_namespace(spec: Mapping[str, Any]) -> bool:
    """Whether the spec names a user namespace (new or joined) or id mappings of its own."""
    linux = spec.get("linux") or {}
    if not isinstance(linux, Mapping):
        return False
    if linux.get("uidMappings") or linux.get("gidMappings"):
        return True
    return any(
        isinstance(n, Mapping) and n.get("type") == "user" for n in linux.get("namespaces") or []
    )


def _map_text(ranges: Sequence[IdRange]) -> str:
    return ",".join(f"{r.inside}:{r.host}:{r.size}" for r in ranges)


def _read_map(path: str) -> tuple[IdRange, ...]:
    with open(path) as f:
        text = f.read()
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3 or not all(x.isdigit() for x in fields):
            raise ValueError(f"{path}: malformed line {line!r}")
        ranges.append(IdRange(*(int(x) for x in fields)))
    if not ranges:
        raise ValueError(f"{path} is empty")
    return tuple(ranges)


def _same_namespace(pid: int) -> bool:
    """Whether process ``pid`` is in this process's user namespace."""
    try:
        theirs, ours = os.stat(f"/proc/{pid}/ns/user"), os.stat("/proc/self/ns/user")
    except PermissionError:
        # Without ptrace access to the process: its map, read from here, is ours only in
        # our own namespace (an identical map in another one is as good for what joins).
        return _read_map(f"/proc/{pid}/uid_map") == _read_map("/proc/self/uid_map")
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def sandbox_users(pid: int, sandbox_id: str) -> MemberUsers | None:
    """The user namespace of sandbox ``sandbox_id``'s process ``pid`` when it is not this
    process's own, else None. FailedPreconditionError naming why when it cannot be told."""
    try:
        if _same_namespace(pid):
            return None
        return MemberUsers(
            f"/proc/{pid}/ns/user",
            _read_map(f"/proc/{pid}/uid_map"),
            _read_map(f"/proc/{pid}/gid_map"),
        )
    except (OSError, ValueError) as exc:
        raise FailedPreconditionError(
            f"cannot tell which user namespace sandbox {go_quote(sandbox_id)}'s process {pid} "
            f"runs in, for the member to join it: {exc}; {_WAY_OUT}"
        ) from None


def rootfs_bind(spec: Mapping[str, Any]) -> list[Mount] | None:
    """The idmapped bind a member's task's root is (see :data:`ROOTFS_BIND_ANNOTATION`), or
    None when its spec names none."""
    annotations = spec.get("annotations") or {}
    path = annotations.get(ROOTFS_BIND_ANNOTATION) if isinstance(annotations, Mapping) else None
    if path is None:
        return None
    linux = spec.get("linux") or {}
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(f"spec annotation {ROOTFS_BIND_ANNOTATION} is not an absolute path")
    try:
        uids = [IdRange(m["containerID"], m["hostID"], m["size"]) for m in linux["uidMappings"]]
        gids = [IdRange(m["containerID"], m["hostID"], m["size"]) for m in linux["gidMappings"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"spec annotation {ROOTFS_BIND_ANNOTATION} names a root to idmap but the spec's "
            f"linux.uidMappings/gidMappings are not usable ({exc!r})"
        ) from None
    if not uids or not gids:
        raise ValueError(
            f"spec annotation {ROOTFS_BIND_ANNOTATION} names a root to idmap but the spec "
            "has no linux.uidMappings/gidMappings"
        )
    options = ("rbind", f"uidmap={_map_text(uids)}", f"gidmap={_map_text(gids)}")
    return [Mount("bind", path, "", options)]


def check_idmapped(mounts: Sequence[Mount], image: str, snapshotter: str) -> None:
    """FailedPreconditionError unless every mount of an image member's snapshot carries the
    ``uidmap=``/``gidmap=`` options the shim idmaps it by."""
    for mount in mounts:
        keys = {o.partition("=")[0] for o in mount.options}
        if not {"uidmap", "gidmap"} <= keys:
            raise FailedPreconditionError(
                f"image {go_quote(image)}'s snapshot from snapshotter {go_quote(snapshotter)} "
                f"cannot be idmapped for the sandbox's user namespace (its {mount.type} mount "
                "carries no uidmap/gidmap options: the snapshotter cannot remap ids, as "
                f"containerd's overlayfs does on a kernel with idmapped mounts); {_WAY_OUT}"
            )
