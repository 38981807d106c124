"""Options for Linux isolation: namespaces, id mappings, masked paths, seccomp, cgroup."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from ._check import (
    SpecOpt,
    check_abs_path,
    check_int,
    check_json,
    check_mapping,
    check_str,
    check_strings,
    list_at,
    section,
    shown,
)
from ._defaults import NAMESPACE_KINDS
from ._ids import IDMappingLike, id_mappings
from ._seccomp import default_seccomp_profile

__all__ = (
    "HOST_USERS_ANNOTATION",
    "SECCOMP_ACTIONS",
    "SECCOMP_ANNOTATION",
    "SECCOMP_UNCONFINED",
    "HasPid",
    "with_cgroup",
    "with_default_seccomp",
    "with_host_users",
    "with_linux_namespace",
    "with_masked_paths",
    "with_readonly_paths",
    "with_sandbox_namespaces",
    "with_seccomp",
    "with_seccomp_unconfined",
    "with_user_namespace",
    "without_namespace",
)

SECCOMP_ACTIONS: Final = (
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
)
"""The seccomp actions the runtime spec defines."""

SECCOMP_ANNOTATION: Final = "io.sandboxclient.seccomp"
"""The annotation with which a spec says, in so many words, how it wants its system calls
filtered when it has no ``linux.seccomp`` of its own: :data:`SECCOMP_UNCONFINED` is the one
value (:func:`with_seccomp_unconfined` sets it). This project's isolating sandboxer gives a
spec with neither its default profile."""

SECCOMP_UNCONFINED: Final = "unconfined"
"""The value of :data:`SECCOMP_ANNOTATION` that asks for no filter at all."""

HOST_USERS_ANNOTATION: Final = "io.sandboxclient.host-users"
"""The annotation with which a spec says whether its sandbox runs with the host's users
(Kubernetes' ``hostUsers``): ``"true"`` (no user namespace: root inside is the host's root)
or ``"false"`` (a user namespace of its own, the default of this project's isolating
sandboxer). :func:`with_host_users` sets it."""

# The namespaces a pod's containers share with its sandbox, and their names under /proc/<pid>/ns.
_SANDBOX_SHARED: Final = (("network", "net"), ("ipc", "ipc"), ("uts", "uts"))


class HasPid(Protocol):
    """Anything with a ``pid``, such as a :class:`sandboxclient.Sandbox` (None until started)."""

    @property
    def pid(self) -> int | None: ...


def _namespaces(opt: str, spec: dict[str, Any]) -> list[Any]:
    return list_at(opt, section(opt, spec, "linux"), "namespaces")


def _kind(opt: str, kind: object) -> str:
    name = check_str(opt, "kind", kind)
    if name not in NAMESPACE_KINDS:
        raise ValueError(f"{opt}: unknown namespace kind {shown(name)} (one of {NAMESPACE_KINDS})")
    return name


def _put_namespace(opt: str, spec: dict[str, Any], entry: dict[str, str]) -> None:
    namespaces = _namespaces(opt, spec)
    for index, current in enumerate(namespaces):
        if isinstance(current, dict) and current.get("type") == entry["type"]:
            namespaces[index] = dict(entry)
            return
    namespaces.append(dict(entry))


def with_linux_namespace(kind: str, path: str | None = None) -> SpecOpt:
    """Give the container a namespace of ``kind``, a new one or, with ``path`` (e.g.
    ``/proc/42/ns/net``), an existing one to join; it replaces one of the same kind (Go's
    ``WithLinuxNamespace``).

    ``kind`` is one of :data:`NAMESPACE_KINDS`: pid, network, mount, ipc, uts, user, cgroup,
    time.
    """
    opt = "with_linux_namespace"
    entry = {"type": _kind(opt, kind)}
    if path is not None:
        entry["path"] = check_abs_path(opt, "path", path)

    def apply(spec: dict[str, Any]) -> None:
        _put_namespace(opt, spec, entry)

    return apply


def without_namespace(kind: str) -> SpecOpt:
    """Leave the container in the host's namespace of ``kind`` (Go's ``WithHostNamespace``)."""
    opt = "without_namespace"
    name = _kind(opt, kind)

    def apply(spec: dict[str, Any]) -> None:
        namespaces = _namespaces(opt, spec)
        namespaces[:] = [
            n for n in namespaces if not (isinstance(n, dict) and n.get("type") == name)
        ]

    return apply


def with_sandbox_namespaces(sandbox: HasPid | int) -> SpecOpt:
    """Join the network, IPC and UTS namespaces of a started sandbox, as the containers of a
    pod do: those of ``/proc/<pid>/ns/{net,ipc,uts}``.

    ``sandbox`` is a pid or anything with an int ``pid`` attribute, such as a
    :class:`sandboxclient.Sandbox`; the pid is read now, not when the option is applied.

    Raises:
        TypeError: no usable ``pid``.
        ValueError: the sandbox has no pid (not started), or the pid is not positive.
    """
    opt = "with_sandbox_namespaces"
    if isinstance(sandbox, int) and not isinstance(sandbox, bool):
        pid: object = sandbox
    elif isinstance(sandbox, bool) or not hasattr(sandbox, "pid"):
        raise TypeError(
            f"{opt}: sandbox must be a pid or have a pid attribute, got {type(sandbox).__name__}"
        )
    else:
        pid = sandbox.pid
        if pid is None:
            name = getattr(sandbox, "id", None)
            which = f"sandbox {name!r}" if isinstance(name, str) else "the sandbox"
            raise ValueError(f"{opt}: {which} has no pid: start it before joining its namespaces")
    number = check_int(opt, "pid", pid, 1, 2**31 - 1, "a positive process id")
    entries = [{"type": kind, "path": f"/proc/{number}/ns/{ns}"} for kind, ns in _SANDBOX_SHARED]

    def apply(spec: dict[str, Any]) -> None:
        for entry in entries:
            _put_namespace(opt, spec, entry)

    return apply


def with_user_namespace(
    uid_map: Sequence[IDMappingLike], gid_map: Sequence[IDMappingLike]
) -> SpecOpt:
    """Run in a new user namespace with these uid and gid mappings, added to any already set
    (Go's ``WithUserNamespace``).

    Raises:
        ValueError: an empty map, or an id out of range.
    """
    opt = "with_user_namespace"
    uids = [m.to_dict() for m in id_mappings(opt, "uid_map", uid_map, empty=False)]
    gids = [m.to_dict() for m in id_mappings(opt, "gid_map", gid_map, empty=False)]

    def apply(spec: dict[str, Any]) -> None:
        linux = section(opt, spec, "linux")
        namespaces = _namespaces(opt, spec)
        if not any(isinstance(n, dict) and n.get("type") == "user" for n in namespaces):
            namespaces.append({"type": "user"})
        list_at(opt, linux, "uidMappings").extend(dict(m) for m in uids)
        list_at(opt, linux, "gidMappings").extend(dict(m) for m in gids)

    return apply


def _paths(opt: str, paths: Iterable[str]) -> list[str]:
    checked = check_strings(opt, "paths", paths)
    for index, path in enumerate(checked):
        check_abs_path(opt, f"path {index}", path)
    return checked


def with_masked_paths(paths: Iterable[str]) -> SpecOpt:
    """Replace the paths hidden from the container (Go's ``WithMaskedPaths``)."""
    opt = "with_masked_paths"
    masked = _paths(opt, paths)

    def apply(spec: dict[str, Any]) -> None:
        section(opt, spec, "linux")["maskedPaths"] = list(masked)

    return apply


def with_readonly_paths(paths: Iterable[str]) -> SpecOpt:
    """Replace the paths made read-only in the container (Go's ``WithReadonlyPaths``)."""
    opt = "with_readonly_paths"
    readonly = _paths(opt, paths)

    def apply(spec: dict[str, Any]) -> None:
        section(opt, spec, "linux")["readonlyPaths"] = list(readonly)

    return apply


def _check_action(opt: str, what: str, action: object) -> None:
    check_str(opt, what, action)
    if action not in SECCOMP_ACTIONS:
        raise ValueError(f"{opt}: {what} {shown(action)} is not a seccomp action")


def with_seccomp(profile: Mapping[str, Any]) -> SpecOpt:
    """Filter the process's system calls with ``profile``, the spec's ``linux.seccomp`` object
    (as Go's ``seccomp.WithProfile`` / ``WithDefaultProfile`` set it).

    The profile is checked (``defaultAction`` and each rule's ``action`` are seccomp
    actions, each rule names its syscalls) and copied, so later edits to it change nothing.

    Raises:
        TypeError: not a mapping, or not JSON-serialisable.
        ValueError: a missing or unknown action, or a rule without syscall names.
    """
    opt = "with_seccomp"
    check_mapping(opt, "profile", profile)
    copied = check_json(opt, "profile", dict(profile))
    if "defaultAction" not in copied:
        raise ValueError(f"{opt}: profile needs a defaultAction")
    _check_action(opt, "defaultAction", copied["defaultAction"])
    for index, rule in enumerate(
        check_strings(opt, "syscalls", copied.get("syscalls", []), "rules")
    ):
        check_mapping(opt, f"syscalls[{index}]", rule)
        names = check_strings(opt, f"syscalls[{index}].names", rule.get("names"))
        if not names:
            raise ValueError(f"{opt}: syscalls[{index}] must name at least one syscall")
        for name in names:
            check_str(opt, f"a syscall name in syscalls[{index}]", name)
        _check_action(opt, f"syscalls[{index}].action", rule.get("action"))

    def apply(spec: dict[str, Any]) -> None:
        section(opt, spec, "linux")["seccomp"] = check_json(opt, "profile", copied)
        _unmark(spec)

    return apply


def _unmark(spec: dict[str, Any]) -> None:
    annotations = spec.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(SECCOMP_ANNOTATION, None)
        if not annotations:
            del spec["annotations"]


def with_default_seccomp() -> SpecOpt:
    """Filter the process's system calls with the default profile (Go's
    ``seccomp.WithDefaultProfile``), made for the capabilities in the spec's bounding set
    when applied: apply it after the capability options.

    The profile is the family of containerd's and Docker's default (see
    :func:`sandboxclient.oci.default_seccomp_profile`): an allow-list, EPERM for the rest,
    more calls per granted capability, ``clone`` without ``CLONE_NEW*`` flags and ``clone3``
    answering ENOSYS unless CAP_SYS_ADMIN is granted.
    """
    opt = "with_default_seccomp"

    def apply(spec: dict[str, Any]) -> None:
        process = spec.get("process")
        caps = (process or {}).get("capabilities") if isinstance(process, dict) else None
        bounding = caps.get("bounding") if isinstance(caps, dict) else None
        names = [str(c) for c in bounding] if isinstance(bounding, list) else []
        section(opt, spec, "linux")["seccomp"] = default_seccomp_profile(names)
        _unmark(spec)

    return apply


def with_host_users(host_users: bool = True) -> SpecOpt:
    """Say whether the sandbox runs with the host's users (Kubernetes' ``hostUsers``): with
    True, no user namespace of its own, so its root is the host's root (with the
    capabilities the spec grants); with False, a private one, as this project's isolating
    sandboxer gives by default. Sets :data:`HOST_USERS_ANNOTATION`. (Go's containerd has
    no such option: this is Kubernetes' ``hostUsers``, which its CRI makes a user namespace.)

    Raises:
        TypeError: ``host_users`` is not a bool.
    """
    opt = "with_host_users"
    if not isinstance(host_users, bool):
        raise TypeError(f"{opt}: host_users must be a bool, got {type(host_users).__name__}")
    value = "true" if host_users else "false"

    def apply(spec: dict[str, Any]) -> None:
        section(opt, spec, "annotations")[HOST_USERS_ANNOTATION] = value

    return apply


def with_seccomp_unconfined() -> SpecOpt:
    """Remove the seccomp filter (Go's ``WithSeccompUnconfined``) and say so: the spec gets
    the annotation :data:`SECCOMP_ANNOTATION` = :data:`SECCOMP_UNCONFINED`, which this
    project's sandboxer reads as the explicit request for no filter (without it, a spec
    with no profile gets the sandboxer's default one)."""

    def apply(spec: dict[str, Any]) -> None:
        section("with_seccomp_unconfined", spec, "linux").pop("seccomp", None)
        section("with_seccomp_unconfined", spec, "annotations")[SECCOMP_ANNOTATION] = (
            SECCOMP_UNCONFINED
        )

    return apply


def with_cgroup(path: str) -> SpecOpt:
    """Put the container in cgroup ``path`` (Go's ``WithCgroup``): a path such as
    ``/default/c1`` (what Go's ``WithNamespacedCgroup`` gives container c1 in namespace
    default), or ``slice:prefix:name`` with the systemd driver."""
    cgroup = check_str("with_cgroup", "path", path)

    def apply(spec: dict[str, Any]) -> None:
        section("with_cgroup", spec, "linux")["cgroupsPath"] = cgroup

    return apply
