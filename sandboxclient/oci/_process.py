"""Options for the container's process: command, environment, user, terminal, limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ._check import (
    MAX_ID,
    U64_MAX,
    SpecOpt,
    check_abs_path,
    check_bool,
    check_int,
    check_str,
    check_strings,
    list_at,
    section,
    shown,
)

__all__ = (
    "RLIMIT_TYPES",
    "with_additional_gids",
    "with_apparmor_profile",
    "with_env",
    "with_new_privileges",
    "with_no_new_privileges",
    "with_process_args",
    "with_process_cwd",
    "with_rlimit",
    "with_selinux_label",
    "with_tty",
    "with_uidgid",
    "with_umask",
    "with_user",
)

RLIMIT_TYPES: Final = (
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
)
"""The resource limits Linux has, as the runtime spec names them."""

_ID_RANGE: Final = f"between 0 and {MAX_ID}"
_U64_RANGE: Final = "between 0 and 2**64-1"


def _process(opt: str, spec: dict[str, Any]) -> dict[str, Any]:
    return section(opt, spec, "process")


def with_process_args(*args: str) -> SpecOpt:
    """Run ``args`` (program first) as the container's process (Go's ``WithProcessArgs``).

    Raises:
        TypeError: an argument is not a str.
        ValueError: no arguments, an empty program, or a NUL byte in an argument (the
            message gives its position, not its text, which may be a secret).
    """
    opt = "with_process_args"
    if not args:
        raise ValueError(f"{opt}: at least one argument (the program) is required")
    for index, arg in enumerate(args):
        check_str(opt, f"argument {index}", arg, empty=index > 0)
    command = list(args)

    def apply(spec: dict[str, Any]) -> None:
        process = _process(opt, spec)
        process["args"] = list(command)
        # A Windows command line would win over args: an explicit command replaces it.
        process.pop("commandLine", None)

    return apply


def with_process_cwd(path: str) -> SpecOpt:
    """Start the process in ``path``, an absolute path in the container (Go's
    ``WithProcessCwd``)."""
    cwd = check_abs_path("with_process_cwd", "path", path)

    def apply(spec: dict[str, Any]) -> None:
        _process("with_process_cwd", spec)["cwd"] = cwd

    return apply


def _env_entries(opt: str, env: object) -> list[str]:
    """``KEY=value`` entries (a bare ``KEY`` unsets it); messages name keys, never values."""
    if isinstance(env, Mapping):
        entries = []
        for key, value in env.items():
            _check_env_key(opt, key)
            if not isinstance(value, str):
                raise TypeError(
                    f"{opt}: the value of {key!r} must be a str, got {type(value).__name__}"
                )
            entries.append(f"{key}={value}")
    else:
        entries = check_strings(opt, "env", env)
        for index, entry in enumerate(entries):
            if not isinstance(entry, str):
                raise TypeError(
                    f"{opt}: env entry {index} must be a str, got {type(entry).__name__}"
                )
            _check_env_key(opt, entry.partition("=")[0])
    for entry in entries:
        key, _, value = entry.partition("=")
        if "\x00" in value:
            raise ValueError(f"{opt}: the value of {key!r} must not contain a NUL byte")
    return entries


def _check_env_key(opt: str, key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"{opt}: an env key must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError(f"{opt}: an env key must not be empty")
    if "=" in key or "\x00" in key:
        raise ValueError(f"{opt}: env key {shown(key)} must not contain '=' or a NUL byte")


def merge_env(current: Sequence[str], changes: Sequence[str]) -> list[str]:
    """``current`` with each ``KEY=value`` of ``changes`` replacing the same key in place (or
    added at the end), and each bare ``KEY`` removing it, as Go's ``WithEnv``."""
    merged: list[str | None] = list(current)
    where = {entry.partition("=")[0]: i for i, entry in enumerate(current)}
    for change in changes:
        key, has_value, _ = change.partition("=")
        if key in where:
            merged[where[key]] = change if has_value else None
        elif has_value:
            where[key] = len(merged)
            merged.append(change)
    return [entry for entry in merged if entry is not None]


def with_env(env: Sequence[str] | Mapping[str, str]) -> SpecOpt:
    """Set environment variables, keeping the others (Go's ``WithEnv``).

    ``env`` is ``KEY=value`` strings or a mapping of key to value. A variable already set is
    replaced where it stands; a new one is added at the end. A string ``KEY`` with no ``=``
    removes ``KEY``.

    Raises:
        TypeError: ``env`` is a lone str, or holds a non-str.
        ValueError: an empty key, or ``=`` or NUL in a key, or NUL in a value.
    """
    opt = "with_env"
    changes = _env_entries(opt, env)

    def apply(spec: dict[str, Any]) -> None:
        process = _process(opt, spec)
        process["env"] = merge_env(list_at(opt, process, "env"), changes)

    return apply


def with_tty(enabled: bool = True) -> SpecOpt:
    """Give the process a terminal, and ``TERM=xterm`` (Go's ``WithTTY``); with
    ``enabled=False`` take the terminal away again (the environment stays as it is)."""
    opt = "with_tty"
    on = check_bool(opt, "enabled", enabled)

    def apply(spec: dict[str, Any]) -> None:
        process = _process(opt, spec)
        process["terminal"] = on
        if on:
            # Go appends, which can repeat TERM; replacing by key keeps one.
            process["env"] = merge_env(list_at(opt, process, "env"), ["TERM=xterm"])

    return apply


def _set_user(opt: str, spec: dict[str, Any], uid: int, gid: int) -> None:
    user = section(opt, _process(opt, spec), "user")
    user["uid"] = uid
    user["gid"] = gid
    # As containerd 2 does: the primary group is listed among the additional ones too.
    user["additionalGids"] = [gid]


def with_uidgid(uid: int, gid: int) -> SpecOpt:
    """Run the process as ``uid`` and ``gid`` (Go's ``WithUIDGID``); the additional groups
    become ``[gid]``.

    Raises:
        TypeError: not ints (bools are refused).
        ValueError: outside 0..2**31-1, runc's range.
    """
    opt = "with_uidgid"
    user_id = check_int(opt, "uid", uid, 0, MAX_ID, _ID_RANGE)
    group_id = check_int(opt, "gid", gid, 0, MAX_ID, _ID_RANGE)

    def apply(spec: dict[str, Any]) -> None:
        _set_user(opt, spec, user_id, group_id)

    return apply


def with_user(user: str) -> SpecOpt:
    """Run the process as ``"uid"`` or ``"uid:gid"`` (Go's ``WithUser``, numeric forms).

    A lone uid gets gid 0, as Go gives one missing from the image's ``/etc/passwd``. Names
    are refused: resolving them needs the image's files, so look them up and use
    :func:`with_uidgid`.
    """
    opt = "with_user"
    text = check_str(opt, "user", user)
    parts = text.split(":")
    if len(parts) > 2 or not all(part.isdigit() and part.isascii() for part in parts):
        raise ValueError(f"{opt}: user must be 'uid' or 'uid:gid' in digits, got {shown(text)}")
    user_id = check_int(opt, "uid", int(parts[0]), 0, MAX_ID, _ID_RANGE)
    group_id = check_int(opt, "gid", int(parts[1]) if len(parts) == 2 else 0, 0, MAX_ID, _ID_RANGE)

    def apply(spec: dict[str, Any]) -> None:
        _set_user(opt, spec, user_id, group_id)

    return apply


def with_additional_gids(*gids: int) -> SpecOpt:
    """Add supplementary groups by number (Go's ``WithAppendAdditionalGroups``, numeric
    forms); the primary gid stays first, and no gid is listed twice."""
    opt = "with_additional_gids"
    if not gids:
        raise ValueError(f"{opt}: at least one gid is required")
    added = [check_int(opt, f"gid {i}", gid, 0, MAX_ID, _ID_RANGE) for i, gid in enumerate(gids)]

    def apply(spec: dict[str, Any]) -> None:
        user = section(opt, _process(opt, spec), "user")
        primary = user.get("gid", 0)
        current = list_at(opt, user, "additionalGids")
        merged = [primary] if primary not in current else []
        for gid in [*current, *added]:
            if gid not in merged:
                merged.append(gid)
        user["additionalGids"] = merged

    return apply


def with_umask(umask: int) -> SpecOpt:
    """Set the process's umask (Go's ``WithUmask``), e.g. ``0o022``."""
    mask = check_int("with_umask", "umask", umask, 0, 0o777, "between 0 and 0o777")

    def apply(spec: dict[str, Any]) -> None:
        section("with_umask", _process("with_umask", spec), "user")["umask"] = mask

    return apply


def with_no_new_privileges() -> SpecOpt:
    """Forbid the process to gain privileges through setuid files or file capabilities (Go's
    ``WithNoNewPrivileges``; a generated spec already does)."""

    def apply(spec: dict[str, Any]) -> None:
        _process("with_no_new_privileges", spec)["noNewPrivileges"] = True

    return apply


def with_new_privileges() -> SpecOpt:
    """Let the process gain privileges again (Go's ``WithNewPrivileges``)."""

    def apply(spec: dict[str, Any]) -> None:
        _process("with_new_privileges", spec)["noNewPrivileges"] = False

    return apply


def with_rlimit(kind: str, soft: int, hard: int | None = None) -> SpecOpt:
    """Set resource limit ``kind`` (``"NOFILE"`` or ``"RLIMIT_NOFILE"``, any case) to ``soft``
    and ``hard`` (default: ``soft``), replacing one of the same kind (Go's ``WithRlimit``).

    Raises:
        ValueError: an unknown kind, a value outside 0..2**64-1, or soft above hard.
    """
    opt = "with_rlimit"
    name = check_str(opt, "kind", kind).upper()
    if not name.startswith("RLIMIT_"):
        name = "RLIMIT_" + name
    if name not in RLIMIT_TYPES:
        raise ValueError(f"{opt}: unknown resource limit {shown(kind)} (one of {RLIMIT_TYPES})")
    low = check_int(opt, "soft", soft, 0, U64_MAX, _U64_RANGE)
    high = low if hard is None else check_int(opt, "hard", hard, 0, U64_MAX, _U64_RANGE)
    if low > high:
        raise ValueError(f"{opt}: soft limit {low} is above the hard limit {high}")

    def apply(spec: dict[str, Any]) -> None:
        limits = list_at(opt, _process(opt, spec), "rlimits")
        entry = {"type": name, "hard": high, "soft": low}
        for index, current in enumerate(limits):
            if isinstance(current, dict) and current.get("type") == name:
                limits[index] = entry
                return
        limits.append(entry)

    return apply


def _label_option(opt: str, key: str, value: str) -> SpecOpt:
    text = check_str(opt, key, value, empty=True)

    def apply(spec: dict[str, Any]) -> None:
        process = _process(opt, spec)
        if text:
            process[key] = text
        else:
            process.pop(key, None)

    return apply


def with_selinux_label(label: str) -> SpecOpt:
    """Run the process with SELinux ``label`` (Go's ``WithSelinuxLabel``); ``""`` clears it."""
    return _label_option("with_selinux_label", "selinuxLabel", label)


def with_apparmor_profile(profile: str) -> SpecOpt:
    """Confine the process to AppArmor ``profile`` (Go's ``WithApparmorProfile``); ``""``
    clears it."""
    return _label_option("with_apparmor_profile", "apparmorProfile", profile)
