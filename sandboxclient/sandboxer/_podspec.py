"""The OCI spec an isolated sandbox's container runs with: the sandbox's spec over defaults.

What the sandbox's spec says is used; what it leaves out comes from
``sandboxclient.oci.generate_spec()``: new pid, ipc, uts, mount and network namespaces,
containerd's default capabilities, ``noNewPrivileges``, the masked and read-only paths, a
device cgroup that denies every device, and no file of the host. Objects merge key by key
(a ``null`` is a key left out: the default stays) and lists are the spec's own, except
``mounts`` (merged by destination) and ``linux.namespaces`` (merged by type: a spec cannot
drop a namespace by leaving it out, only name a path to join). Then:

- the root is the Create request's rootfs mounts (an image's snapshot: read-only unless the
  spec says ``root.readonly: false``, with a tmpfs on ``/tmp``), or the spec's absolute
  ``root.path``, or else the sandboxer's default root filesystem (an overlay over it whose
  writable layer is the sandbox's own, made read-only once runc has made its mount points,
  with a tmpfs on ``/tmp``);
- with no ``process.args`` the sandbox's process waits, as PID 1, until it is stopped (it
  needs the default root's shell);
- the hostname defaults to the sandbox's id, the cgroup to ``/<namespace>/<id>`` (on
  cgroup v2, its leaf ``/<namespace>/<id>/<id>``: see :mod:`._cgroup2`), a Create
  request's ``netns_path`` becomes the network namespace to join, and its ``annotations``
  join the spec's.

Refused with INVALID_ARGUMENT, naming the field: ``hooks`` (OCI hooks run on the host, as
root), ``process.terminal`` (the sandbox's output goes to its log), the host's ``/`` as
``root.path`` or as the source of a bind mount, a relative ``root.path`` without rootfs
mounts, a ``root.path`` other than ``rootfs`` with them (the mounts are the root), a network
namespace path other than the Create request's ``netns_path``, an annotation the Create
request gives another value, an annotation that groups tasks into one runc shim
(``io.containerd.runc.v2.group``, CRI's sandbox id) naming other than the sandbox's own id
(the sandboxer names the shim: one so named by a caller would run the sandbox in another's
shim or leave its socket behind), a path that
cannot be resolved, and values of the wrong shape.
These refusals keep a request from silently meaning something else; they are no boundary
against the caller, whom the sandboxer trusts as containerd trusts its clients (a spec may
join host namespaces by path, bind host paths, ask for capabilities).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .. import oci
from .._facts._golang import go_quote
from .._models import Mount
from .._serve._refusals import failed_precondition, invalid_argument
from .._wire._convert import mount_from_pb
from .._wire._pb import SandboxPb, sandbox_pb
from ._extras import check_create, check_sandbox
from ._handlers import SHIM_GROUP_ANNOTATIONS, Handlers
from ._harden import DefaultLimits, asked_disk, check_seccomp_request, harden
from ._spec import decode_spec
from ._userns import IdBlock, host_users_asked, with_block
from ._userns_owner import fit_rlimits, note_owner

__all__ = (
    "BUNDLE_ROOT",
    "WAIT_FOREVER",
    "build_spec",
    "check_spec",
    "is_host_root_bind",
    "needs_default_root",
    "root_mounts",
)

BUNDLE_ROOT: Final = "rootfs"
"""``root.path`` when the root is made of mounts: the bundle's own directory."""

WAIT_FOREVER: Final = (
    "/bin/sh",
    "-c",
    "trap 'exit 143' TERM; sleep 2147483647 & wait",
)
"""The sandbox's process when its spec names none: as PID 1 it would ignore SIGTERM, so it
handles it (exit 143, as a process killed by SIGTERM)."""

_HOSTNAME_MAX: Final = 63
_TMP_MOUNT: Final = {
    "destination": "/tmp",
    "type": "tmpfs",
    "source": "tmpfs",
    "options": ["nosuid", "nodev", "mode=1777", "size=65536k"],
}


_NAMES: Final = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def _shape(value: object, kind: type, field: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise invalid_argument(f"spec {field} must be {_NAMES[kind]}")


def checked_create(
    message: sandbox_pb.ControllerCreateRequest, sandbox: SandboxPb, handlers: Handlers
) -> tuple[Mount, ...]:
    """Refuse a Create the isolating sandboxer cannot honour; its rootfs mounts."""
    check_sandbox(sandbox, "container")
    check_create(message, "container")
    rootfs = tuple(mount_from_pb(m) for m in message.rootfs)
    if any(not m.type or not m.source for m in rootfs):
        raise invalid_argument("rootfs mounts must have a type and a source")
    if any(is_host_root_bind(m) for m in rootfs):
        raise invalid_argument("rootfs mounts must not bind the host's /")
    check_spec(
        decode_spec(sandbox.spec),
        has_rootfs_mounts=bool(rootfs),
        netns_path=message.netns_path,
        annotations=message.annotations,
        sandbox_id=message.sandbox_id,
    )
    handlers.check_sandbox(sandbox, netns_path=message.netns_path, annotations=message.annotations)
    return rootfs


def check_spec(
    spec: Mapping[str, Any] | None,
    *,
    has_rootfs_mounts: bool,
    netns_path: str = "",
    annotations: Mapping[str, str] | None = None,
    sandbox_id: str | None = None,
) -> None:
    """Refuse what an isolated sandbox cannot be given (see the module's docstring)."""
    host_users_asked(spec, annotations or {})
    asked_disk(spec, annotations or {}, has_rootfs_mounts=has_rootfs_mounts)
    if spec is not None:
        _shape(spec.get("annotations"), dict, "annotations")
    _check_shim_group(spec, annotations or {}, sandbox_id)
    if spec is None:
        return
    if spec.get("hooks"):
        raise invalid_argument(
            "spec field hooks is not allowed: OCI hooks run on the host, as root, outside "
            "the sandbox"
        )
    process = spec.get("process") or {}
    _shape(process.get("terminal"), bool, "process.terminal")
    if process.get("terminal"):
        raise invalid_argument(
            "spec field process.terminal is not supported: the sandbox's output goes to its "
            "log in the sandboxer's state, not to a terminal"
        )
    for name in ("user", "capabilities"):
        _shape(process.get(name), dict, f"process.{name}")
    _shape(spec.get("root"), dict, "root")
    _shape(spec.get("linux"), dict, "linux")
    _shape(spec.get("mounts"), list, "mounts")
    _shape(spec.get("hostname"), str, "hostname")
    _shape(spec.get("annotations"), dict, "annotations")
    for index, mount in enumerate(spec.get("mounts") or []):
        if not isinstance(mount, dict) or not isinstance(mount.get("destination"), str):
            raise invalid_argument("spec mounts entries must be objects with a destination")
        _check_bind_source(mount, f"mounts[{index}].source")
    linux = spec.get("linux") or {}
    _shape(linux.get("namespaces"), list, "linux.namespaces")
    for entry in linux.get("namespaces") or []:
        if not isinstance(entry, dict) or entry.get("type") not in oci.NAMESPACE_KINDS:
            raise invalid_argument(
                "spec linux.namespaces entries must be objects whose type is one of "
                + ", ".join(oci.NAMESPACE_KINDS)
            )
        joined = entry.get("path")
        if entry["type"] == "network" and netns_path and joined and joined != netns_path:
            raise invalid_argument(
                f"netns_path {go_quote(netns_path)} and the spec's network namespace path "
                f"{go_quote(str(joined))} differ: give one of them"
            )
    _check_root(spec.get("root") or {}, has_rootfs_mounts)
    _shape((spec.get("linux") or {}).get("seccomp"), dict, "linux.seccomp")
    check_seccomp_request(dict(spec), dict(annotations or {}))
    given = spec.get("annotations") or {}
    for key, value in (annotations or {}).items():
        if key in given and given[key] != value:
            raise invalid_argument(
                f"annotations[{go_quote(str(key))}] of the Create request differs from the spec's"
            )


def _check_shim_group(
    spec: Mapping[str, Any] | None, annotations: Mapping[str, str], sandbox_id: str | None
) -> None:
    """Refuse a shim group other than the sandbox's own: CRI names a pod sandbox's own id
    in one, which changes nothing; any other would run it in another sandbox's shim."""
    given = (spec or {}).get("annotations") or {}
    for key in SHIM_GROUP_ANNOTATIONS:
        for value in (annotations.get(key), given.get(key)):
            if value is not None and value != sandbox_id:
                raise invalid_argument(
                    f"annotations[{go_quote(key)}] names a containerd shim group other than "
                    "the sandbox's own id: the sandboxer chooses the shim its task runs in"
                )


def _check_root(root: Mapping[str, Any], has_rootfs_mounts: bool) -> None:
    path = root.get("path")
    _shape(path, str, "root.path")
    if path and os.path.isabs(path) and _is_host_root(path, "root.path"):
        raise invalid_argument("spec field root.path must not be the host's /")
    if path and not os.path.isabs(path) and path != BUNDLE_ROOT and not has_rootfs_mounts:
        raise invalid_argument(
            f"spec field root.path {go_quote(path)} is relative but the sandbox has no "
            "rootfs mounts"
        )
    if path and path != BUNDLE_ROOT and has_rootfs_mounts:
        raise invalid_argument(
            f"spec field root.path {go_quote(path)} would be ignored: the Create request's rootfs "
            f"mounts are the sandbox's root (leave root.path out, or {go_quote(BUNDLE_ROOT)})"
        )


def _is_host_root(path: str, field: str) -> bool:
    """Whether ``path`` resolves to the host's ``/``; INVALID_ARGUMENT naming ``field`` when
    it cannot be resolved (a NUL, a ``/proc/PID/root`` the sandboxer may not read...)."""
    try:
        return os.path.realpath(path) == "/"
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise invalid_argument(
            f"spec field {field} {go_quote(path)} cannot be resolved: {why}"
        ) from None


def _is_bind(kind: object, options: Sequence[object]) -> bool:
    """Whether a mount of type ``kind`` with ``options`` is a bind mount, as runc reads it."""
    return kind == "bind" or any(o in ("bind", "rbind") for o in options)


def _check_bind_source(mount: Mapping[str, Any], field: str) -> None:
    """Refuse a bind mount of the host's whole ``/``, as ``root.path`` "/" is refused."""
    source, options = mount.get("source"), mount.get("options") or []
    _shape(source, str, field)
    _shape(mount.get("options"), list, field.replace(".source", ".options"))
    bind = _is_bind(mount.get("type"), options)
    if bind and source and not os.path.isabs(source):
        # runc would take it from the bundle's directory, and ".." climbs out of it.
        raise invalid_argument(f"spec field {field} of a bind mount must be an absolute path")
    if bind and source and _is_host_root(source, field):
        raise invalid_argument(f"spec field {field} must not be the host's /")


def is_host_root_bind(mount: Mount) -> bool:
    """Whether a Create request's rootfs mount binds the host's ``/`` (INVALID_ARGUMENT
    naming ``rootfs`` when its source cannot be resolved or is not absolute)."""
    bind = _is_bind(mount.type, mount.options)
    if bind and not os.path.isabs(mount.source):
        raise invalid_argument("rootfs bind mounts must have an absolute source")
    return bind and _is_host_root(mount.source, "rootfs")


def _merge(defaults: Any, given: Any) -> Any:
    if isinstance(defaults, dict) and isinstance(given, dict):
        merged = dict(defaults)
        for key, value in given.items():
            if value is None:  # left out: the default stays
                continue
            merged[key] = _merge(defaults[key], value) if key in defaults else value
        return merged
    return given


def _merge_by(defaults: list[Any], given: list[Any], key: str) -> list[Any]:
    """``defaults`` whose ``key`` the spec does not name, then the spec's own entries."""
    named = {entry.get(key) for entry in given}
    return [entry for entry in defaults if entry.get(key) not in named] + list(given)


def build_spec(
    given: Mapping[str, Any] | None,
    *,
    namespace: str,
    sandbox_id: str,
    has_rootfs_mounts: bool,
    netns_path: str = "",
    annotations: Mapping[str, str] | None = None,
    default_root: str | None = None,
    limits: DefaultLimits | None = None,
    userns: IdBlock | None = None,
    userns_path: str = "",
    unified: bool | None = None,
) -> dict[str, Any]:
    """The full spec of the sandbox's container (a new dict; ``given`` is not changed).

    ``default_root`` is the directory of the default root filesystem, used when the spec
    and the Create request give no root (ValueError when it is needed and None). The
    spec is hardened last (see :mod:`._harden`): ``limits`` (by default
    :class:`DefaultLimits`' own) where it sets none. With ``userns`` the sandbox gets a
    user namespace mapping ids 0.. to the block (the one pinned at ``userns_path`` when
    given), and a ``root.path`` becomes the bundle's root, an idmapped bind of it (see
    :func:`root_mounts`); the default rlimits are left out where runc could not set them
    in the pinned namespace (see :func:`._userns_owner.fit_rlimits`). ``unified`` says
    whether the host runs cgroup v2 (by default, as :func:`._cgroup2.cgroup_v2` finds).
    """
    check_spec(
        given,
        has_rootfs_mounts=has_rootfs_mounts,
        netns_path=netns_path,
        annotations=annotations,
        sandbox_id=sandbox_id,
    )
    spec_in = copy.deepcopy(dict(given or {}))
    defaults = oci.generate_spec()
    mounts = _merge_by(defaults.pop("mounts"), spec_in.pop("mounts", None) or [], "destination")
    linux_in = spec_in.get("linux") or {}
    namespaces = _merge_by(
        defaults["linux"].pop("namespaces"), linux_in.pop("namespaces", None) or [], "type"
    )
    spec: dict[str, Any] = _merge(defaults, spec_in)
    spec["mounts"] = mounts
    linux = spec.setdefault("linux", {})
    if netns_path:
        namespaces = _merge_by(namespaces, [{"type": "network", "path": netns_path}], "type")
    linux["namespaces"] = namespaces
    if userns is not None:
        with_block(spec, userns, userns_path)
    if annotations:
        spec["annotations"] = {**annotations, **(spec.get("annotations") or {})}
    sandbox_cgroup = f"/{namespace}/{sandbox_id}"
    linux.setdefault("cgroupsPath", sandbox_cgroup)
    process = spec["process"]
    if not process.get("args"):
        process["args"] = list(WAIT_FOREVER)
    env = process.get("env") or []
    if not any(str(item).startswith("PATH=") for item in env):
        process["env"] = [oci.DEFAULT_PATH_ENV, *env]
    uts = next(n for n in namespaces if n["type"] == "uts")
    if not spec.get("hostname") and not uts.get("path"):
        spec["hostname"] = sandbox_id[:_HOSTNAME_MAX].rstrip(".-_")
    root_in = (given or {}).get("root") or {}
    path = root_in.get("path") or ""
    if has_rootfs_mounts:  # an image's snapshot, say: kept as the default root is
        spec["root"] = {"path": BUNDLE_ROOT, "readonly": root_in.get("readonly") is not False}
        _with_tmp(mounts)
    elif userns is not None and os.path.isabs(path):
        spec["root"] = {"path": BUNDLE_ROOT, "readonly": bool(root_in.get("readonly"))}
    elif not os.path.isabs(path):
        if default_root is None:
            raise ValueError("the sandbox needs the default root filesystem")
        # An overlay the shim mounts into the bundle (see root_mounts), not a path: runc
        # makes its mount points in the sandbox's own layer, then makes the root read-only,
        # and a user-namespaced container need not reach into the sandboxer's state.
        spec["root"] = {"path": BUNDLE_ROOT, "readonly": True}
        _with_tmp(mounts)
    harden(spec, limits or DefaultLimits(), unified=unified, sandbox_cgroup=sandbox_cgroup)
    fit_rlimits(spec, userns_path)
    note_owner(spec, userns_path)
    return spec


def _with_tmp(mounts: list[dict[str, Any]]) -> None:
    if not any(m.get("destination") == "/tmp" for m in mounts):
        mounts.append(dict(_TMP_MOUNT, options=list(_TMP_MOUNT["options"])))


def root_mounts(
    rootfs: tuple[Mount, ...],
    default_root: str | None,
    layer: tuple[str, str] | None,
    *,
    root_path: str = "",
) -> tuple[Mount, ...]:
    """The mounts the sandbox's root is made of: the Create request's, or an overlay of the
    default root (never written: its upper and work directories, ``layer``, are the
    sandbox's own) when that is the root, or a bind of ``root_path`` when given (a
    ``root.path`` that needs idmapping), else none (the spec's ``root.path``)."""
    if rootfs:
        return rootfs
    if root_path:
        return (Mount("bind", root_path, "", ("rbind",)),)
    if default_root is None or layer is None:
        return ()
    upper, work = layer
    for path in (default_root, upper, work):
        if any(ch in path for ch in ",:\\"):
            raise failed_precondition(
                f"the default root's overlay cannot name {go_quote(path)} (a comma, colon or "
                "backslash in the path): give the sandboxer a plainer state directory"
            )
    options = (f"lowerdir={default_root}", f"upperdir={upper}", f"workdir={work}")
    return (Mount("overlay", "overlay", "", options),)


def needs_default_root(given: Mapping[str, Any] | None, *, has_rootfs_mounts: bool) -> bool:
    """Whether the sandbox runs on the sandboxer's default root filesystem."""
    if has_rootfs_mounts:
        return False
    path = ((given or {}).get("root") or {}).get("path") or ""
    return not os.path.isabs(path)
