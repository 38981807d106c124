"""Options for the root filesystem, mounts, hostname and annotations."""

from __future__ import annotations

import copy
import os.path
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._check import (
    SpecOpt,
    check_abs_path,
    check_mapping,
    check_str,
    check_strings,
    list_at,
    section,
    shown,
)
from ._ids import id_mappings

__all__ = (
    "HOSTNAME_MAX",
    "Mount",
    "with_annotations",
    "with_hostname",
    "with_mounts",
    "with_rootfs_path",
    "with_rootfs_readonly",
    "without_mounts",
)

HOSTNAME_MAX: Final = 64
"""Linux's limit on a hostname, in bytes."""

_MOUNT_KEYS: Final = frozenset(
    ("destination", "type", "source", "options", "uidMappings", "gidMappings")
)


@dataclass(frozen=True, slots=True)
class Mount:
    """One OCI mount (Go's ``specs.Mount``): ``destination`` in the container, the filesystem
    ``type`` (``"bind"``, ``"tmpfs"``, ...), its ``source`` and mount ``options``.

    Checked when made: ValueError for a relative destination, NUL bytes or an empty type.
    """

    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checked = _checked_mount(
            "Mount",
            {
                "destination": self.destination,
                "type": self.type,
                "source": self.source,
                "options": self.options,
            },
        )
        # A list given for options is kept as a tuple, so the record stays immutable.
        object.__setattr__(self, "options", tuple(checked["options"]))

    def to_dict(self) -> dict[str, Any]:
        """The mount as the spec's JSON object."""
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


def _checked_mount(opt: str, mount: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(mount) - _MOUNT_KEYS)
    if unknown:
        raise ValueError(f"{opt}: unknown mount field(s) {unknown} (known: {sorted(_MOUNT_KEYS)})")
    if "destination" not in mount:
        raise ValueError(f"{opt}: a mount needs a destination")
    destination = check_abs_path(opt, "mount destination", mount["destination"])
    checked: dict[str, Any] = {"destination": destination}
    for key in ("type", "source"):
        if key in mount:
            checked[key] = check_str(opt, f"mount {key} of {shown(destination)}", mount[key])
    options = check_strings(opt, "mount options", mount.get("options", ()))
    for index, option in enumerate(options):
        check_str(opt, f"mount option {index} of {shown(destination)}", option)
    checked["options"] = options
    for key in ("uidMappings", "gidMappings"):
        if key in mount:
            checked[key] = [m.to_dict() for m in id_mappings(opt, key, mount[key], empty=False)]
    return checked


def with_rootfs_path(path: str) -> SpecOpt:
    """Use ``path`` as the container's root filesystem (Go's ``WithRootFSPath``): absolute,
    or relative to the bundle as the default ``rootfs`` is."""
    root = check_str("with_rootfs_path", "path", path)

    def apply(spec: dict[str, Any]) -> None:
        section("with_rootfs_path", spec, "root")["path"] = root

    return apply


def with_rootfs_readonly() -> SpecOpt:
    """Mount the root filesystem read-only (Go's ``WithRootFSReadonly``)."""

    def apply(spec: dict[str, Any]) -> None:
        section("with_rootfs_readonly", spec, "root")["readonly"] = True

    return apply


def with_mounts(mounts: Iterable[Mount | Mapping[str, Any]]) -> SpecOpt:
    """Add ``mounts`` after those already in the spec (Go's ``WithMounts``).

    Each is a :class:`Mount` or a mapping with the spec's keys (``destination`` required;
    ``type``, ``source``, ``options``, ``uidMappings``, ``gidMappings``).

    Raises:
        TypeError: ``mounts`` or one of them has the wrong type.
        ValueError: a relative destination, an unknown key, or a NUL byte.
    """
    opt = "with_mounts"
    if isinstance(mounts, Mount | Mapping):
        raise TypeError(f"{opt}: mounts must be a list of mounts, got a single mount")
    added: list[dict[str, Any]] = []
    for index, mount in enumerate(check_strings(opt, "mounts", mounts, of="mounts")):
        if isinstance(mount, Mount):
            added.append(mount.to_dict())
        else:
            check_mapping(opt, f"mount {index}", mount)
            added.append(_checked_mount(opt, mount))

    def apply(spec: dict[str, Any]) -> None:
        current = list_at(opt, spec, "mounts")
        # Fresh copies: one option may be applied to several specs.
        current.extend(copy.deepcopy(added))

    return apply


def without_mounts(*destinations: str) -> SpecOpt:
    """Remove the mounts at ``destinations`` (Go's ``WithoutMounts``), e.g. ``"/run"``."""
    opt = "without_mounts"
    gone = {os.path.normpath(check_abs_path(opt, "destination", d)) for d in destinations}

    def apply(spec: dict[str, Any]) -> None:
        current = list_at(opt, spec, "mounts")
        current[:] = [
            m
            for m in current
            if not (
                isinstance(m, dict)
                and isinstance(m.get("destination"), str)
                and os.path.normpath(m["destination"]) in gone
            )
        ]

    return apply


def with_hostname(name: str) -> SpecOpt:
    """Set the container's hostname (Go's ``WithHostname``); it needs its own UTS namespace,
    which a generated spec has.

    Raises:
        ValueError: empty, a NUL byte, or longer than 64 bytes.
    """
    opt = "with_hostname"
    hostname = check_str(opt, "name", name)
    if len(hostname.encode()) > HOSTNAME_MAX:
        raise ValueError(
            f"{opt}: name must be at most {HOSTNAME_MAX} bytes, got {len(hostname.encode())}"
        )

    def apply(spec: dict[str, Any]) -> None:
        spec["hostname"] = hostname

    return apply


def with_annotations(annotations: Mapping[str, str]) -> SpecOpt:
    """Add or replace annotations, keeping the others (Go's ``WithAnnotations``).

    Raises:
        TypeError: not a mapping of str to str.
        ValueError: an empty key (messages name keys, never values).
    """
    opt = "with_annotations"
    check_mapping(opt, "annotations", annotations)
    added: dict[str, str] = {}
    for key, value in annotations.items():
        check_str(opt, "an annotation key", key)
        if not isinstance(value, str):
            raise TypeError(
                f"{opt}: the value of {key!r} must be a str, got {type(value).__name__}"
            )
        added[key] = value

    def apply(spec: dict[str, Any]) -> None:
        section(opt, spec, "annotations").update(added)

    return apply
