"""Linux capabilities: the kernel's names and the options that set them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ._check import SpecOpt, check_str, check_strings, section, shown

__all__ = (
    "KNOWN_CAPABILITIES",
    "with_added_capabilities",
    "with_all_known_capabilities",
    "with_ambient_capabilities",
    "with_capabilities",
    "with_dropped_capabilities",
)

KNOWN_CAPABILITIES: Final = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
"""Every capability of Linux 5.9 and later, indexed by its number (as Go's ``cap.Known()``)."""

_KNOWN: Final = frozenset(KNOWN_CAPABILITIES)
_MAIN_SETS: Final = ("bounding", "effective", "permitted")


def _capabilities(opt: str, caps: Iterable[str]) -> list[str]:
    """The names, checked and spelt as the runtime wants them (``CAP_`` and upper case),
    without repeats."""
    names: list[str] = []
    for index, raw in enumerate(check_strings(opt, "capabilities", caps)):
        check_str(opt, f"capability {index}", raw)
        name = raw.upper()
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name not in _KNOWN:
            raise ValueError(
                f"{opt}: unknown capability {shown(raw)} "
                "(use a Linux name such as CAP_NET_ADMIN; the CAP_ prefix is optional)"
            )
        if name not in names:
            names.append(name)
    return names


def _caps_section(opt: str, spec: dict[str, Any]) -> dict[str, Any]:
    return section(opt, section(opt, spec, "process"), "capabilities")


def with_capabilities(caps: Iterable[str]) -> SpecOpt:
    """Replace the bounding, permitted and effective sets with ``caps`` (Go's
    ``WithCapabilities``).

    Names are Linux's (:data:`KNOWN_CAPABILITIES`), in any case, with or without ``CAP_``.
    Inheritable and ambient capabilities outside ``caps`` are dropped, and both sets are
    removed when ``caps`` is empty.

    Raises:
        TypeError: ``caps`` is a str or holds a non-str.
        ValueError: an unknown capability.
    """
    names = _capabilities("with_capabilities", caps)

    def apply(spec: dict[str, Any]) -> None:
        current = _caps_section("with_capabilities", spec)
        for name in _MAIN_SETS:
            current[name] = list(names)
        for name in ("inheritable", "ambient"):
            if not names:
                current.pop(name, None)
            elif isinstance(current.get(name), list):
                current[name] = [c for c in current[name] if c in names]

    return apply


def with_all_known_capabilities() -> SpecOpt:
    """Grant every capability Linux knows (Go's ``WithAllKnownCapabilities``)."""
    return with_capabilities(KNOWN_CAPABILITIES)


def with_added_capabilities(caps: Iterable[str]) -> SpecOpt:
    """Add ``caps`` to the bounding, permitted and effective sets (Go's
    ``WithAddedCapabilities``); names as for :func:`with_capabilities`."""
    names = _capabilities("with_added_capabilities", caps)

    def apply(spec: dict[str, Any]) -> None:
        current = _caps_section("with_added_capabilities", spec)
        for set_name in _MAIN_SETS:
            values = current.get(set_name) or []
            current[set_name] = values + [c for c in names if c not in values]

    return apply


def with_dropped_capabilities(caps: Iterable[str]) -> SpecOpt:
    """Remove ``caps`` from every capability set (Go's ``WithDroppedCapabilities``); names
    as for :func:`with_capabilities`.

    Go leaves the ambient set alone; here it loses them too, since the kernel refuses an
    ambient capability that is not also permitted and inheritable.
    """
    names = _capabilities("with_dropped_capabilities", caps)

    def apply(spec: dict[str, Any]) -> None:
        current = _caps_section("with_dropped_capabilities", spec)
        for set_name in (*_MAIN_SETS, "inheritable", "ambient"):
            if isinstance(current.get(set_name), list):
                current[set_name] = [c for c in current[set_name] if c not in names]

    return apply


def with_ambient_capabilities(caps: Iterable[str]) -> SpecOpt:
    """Set the inheritable and ambient sets to ``caps`` (Go's ``WithAmbientCapabilities``),
    which a non-root process needs to keep them; names as for :func:`with_capabilities`."""
    names = _capabilities("with_ambient_capabilities", caps)

    def apply(spec: dict[str, Any]) -> None:
        current = _caps_section("with_ambient_capabilities", spec)
        current["inheritable"] = list(names)
        current["ambient"] = list(names)

    return apply
