"""What the isolating sandboxer adds to every sandbox's spec so that, asked for with no
options, a sandbox cannot hurt its host or its neighbours.

- **seccomp**: a spec with no ``linux.seccomp`` gets the default profile
  (``oci.default_seccomp_profile``, made for its bounding capabilities), unless it asks for
  none in so many words: the annotation ``oci.SECCOMP_ANNOTATION`` =
  ``oci.SECCOMP_UNCONFINED`` (what ``oci.with_seccomp_unconfined()`` sets). A spec's own
  profile is used as given.
- **limits**: memory (with no swap on top), pids and CPU, from the sandboxer's
  :class:`DefaultLimits` (its ``--default-memory``, ``--default-pids`` and
  ``--default-cpus``), each where the spec's ``linux.resources`` sets none; what the spec
  sets is used as given. They hold for the sandbox's cgroup (``/<namespace>/<id>``), which
  its execs join and under which members nest.
- **members' cgroup**: the spec's annotation ``MEMBERS_CGROUP_ANNOTATION`` names the
  sandbox's cgroup, under which the client nests its members (``Sandbox.new_container``),
  so that they and their execs count against its limits. On cgroup v1 that is the
  sandbox's own cgroup (``/<namespace>/<id>``). On cgroup v2, where a cgroup holding a
  process can give no controllers to children (the "no internal processes" rule), a
  sandbox whose spec names no ``cgroupsPath`` is laid out as a pod is (see
  :mod:`._cgroup2`): its process in the leaf ``/<namespace>/<id>/<id>`` (its spec's
  ``cgroupsPath``), its limits also on the parent ``/<namespace>/<id>``, which the
  sandboxer makes and the annotation names; a spec with a ``cgroupsPath`` of its own
  names no members' cgroup there. Verified in a VM on cgroup v2: members nest under the
  parent and a fork bomb or a memory hog in one stops at the sandbox's limits. The
  annotation ``MEMBERS_ROOT_ANNOTATION``
  says that members' image roots are read-only unless asked for (``_members._root``).
- **tmpfs inodes**: every tmpfs mount with no ``nr_inodes`` option gets
  :data:`TMPFS_INODES`, so empty files cannot eat the host's kernel memory.
- **disk**: a root's writable layer (an image's or the default root's) is a tmpfs of
  :class:`DefaultLimits`' ``disk`` bytes (``--default-disk``; at most half the sandbox's
  memory limit) unless the spec's annotation ``DISK_ANNOTATION`` says otherwise
  (:func:`asked_disk`; the layer itself is made by :mod:`._rootdisk`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .. import oci
from .._facts._disk import DISK_ANNOTATION, checked_disk
from .._facts._golang import go_quote
from .._members._root import MEMBERS_ROOT_ANNOTATION, READONLY
from .._members._spec import MEMBERS_CGROUP_ANNOTATION
from .._serve._refusals import invalid_argument
from ._cgroup2 import cgroup_v2, leaf_path
from ._userns_owner import userns_in_force

__all__ = (
    "DEFAULT_CPUS",
    "DEFAULT_DISK",
    "DEFAULT_MEMORY",
    "DEFAULT_PIDS",
    "TMPFS_INODES",
    "DefaultLimits",
    "InForce",
    "asked_disk",
    "cgroup_v2",
    "check_seccomp_request",
    "harden",
    "in_force",
)

DEFAULT_MEMORY: Final = 512 * 2**20
"""Bytes of memory a sandbox may use unless its spec or the sandboxer says otherwise."""
DEFAULT_PIDS: Final = 512
"""Tasks (processes and threads) a sandbox may have unless told otherwise."""
DEFAULT_CPUS: Final = 1.0
"""CPUs' worth of time a sandbox may use unless told otherwise."""
DEFAULT_DISK: Final = 256 * 2**20
"""Bytes of a root's writable layer unless told otherwise: it is held in memory
(tmpfs) and counted in the sandbox's, so half of :data:`DEFAULT_MEMORY`."""
TMPFS_INODES: Final = 16384
"""The ``nr_inodes`` of a sandbox's tmpfs mounts that name none."""

_PERIOD: Final = 100_000


@dataclass(frozen=True, slots=True)
class DefaultLimits:
    """The limits every sandbox gets where its spec sets none; None leaves one unlimited."""

    memory: int | None = DEFAULT_MEMORY
    """Bytes of memory; swap on top of it is never allowed."""
    pids: int | None = DEFAULT_PIDS
    cpus: float | None = DEFAULT_CPUS
    disk: int | None = None
    """Bytes of a root's writable layer (a tmpfs counted in the sandbox's memory);
    None: :data:`DEFAULT_DISK`. Either way a sandbox whose memory limit is less than twice
    as much gets half of that (see :func:`._rootdisk.disk_size`)."""

    def __post_init__(self) -> None:
        if self.disk is not None:
            checked_disk(self.disk, "default disk")
        if self.memory is not None and self.disk is not None and self.disk > self.memory:
            raise ValueError(
                f"default disk ({self.disk} bytes) must not exceed default memory "
                f"({self.memory} bytes): an image root's layer is held in the sandbox's memory"
            )
        for name, low in (("memory", 4 * 2**20), ("pids", 8)):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < low
            ):
                raise ValueError(f"default {name} must be an integer of at least {low}")
        cpus = self.cpus
        if cpus is not None and (
            isinstance(cpus, bool) or not math.isfinite(cpus) or not 0.01 <= cpus <= 1024
        ):
            raise ValueError("default cpus must be a number from 0.01 to 1024")


@dataclass(frozen=True, slots=True)
class InForce:
    """What a hardened spec holds its sandbox to, as Status and Metrics report it."""

    seccomp: str
    """``default`` (the default profile), ``spec`` (the spec's own) or ``unconfined``."""
    memory_limit: int | None
    """Bytes of memory (None: unlimited)."""
    pids_limit: int | None
    cpu_limit: float | None
    """CPUs' worth of time: the CFS quota over its period (None: unlimited)."""
    userns: str = "host"
    """The host ids root inside and up are (``<first>-<last>``), or ``host`` without a user
    namespace of its own (see :func:`~._userns_owner.userns_in_force`)."""
    userns_owner: str = ""
    """The host uid owning its user namespace, to whom the kernel charges per-user budgets
    (``0``: the host's root; ``unknown``); empty without one."""
    disk_limit: int | None = None
    """Bytes of its root's writable layer; None without one (a root of the caller's own;
    see :mod:`._rootdisk`)."""

    def info(self) -> dict[str, str]:
        """As Status's ``info`` entries (an unlimited one reads ``unlimited``; ``userns``,
        and ``userns_owner`` with a user namespace; ``disk_limit_bytes`` with a root's
        writable layer)."""

        def text(value: float | None) -> str:
            if value is None:
                return "unlimited"
            return str(value) if isinstance(value, int) else f"{value:g}"

        return {
            "seccomp": self.seccomp,
            "memory_limit_bytes": text(self.memory_limit),
            "pids_limit": text(self.pids_limit),
            "cpu_limit": text(self.cpu_limit),
            "userns": self.userns,
        } | (
            ({"userns_owner": self.userns_owner} if self.userns_owner else {})
            | ({} if self.disk_limit is None else {"disk_limit_bytes": str(self.disk_limit)})
        )


def _positive(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def in_force(spec: dict[str, Any]) -> InForce:
    """What the full spec of a sandbox's container (hardened by :func:`harden`) enforces."""
    linux = spec.get("linux") or {}
    resources = linux.get("resources") or {}
    profile = linux.get("seccomp")
    if profile is None:
        seccomp = "unconfined"
    else:
        caps = ((spec.get("process") or {}).get("capabilities") or {}).get("bounding") or []
        is_default = profile == oci.default_seccomp_profile([str(c) for c in caps])
        seccomp = "default" if is_default else "spec"
    cpu = resources.get("cpu") or {}
    quota, period = _positive(cpu.get("quota")), _positive(cpu.get("period")) or _PERIOD
    userns, owner = userns_in_force(spec)
    return InForce(
        seccomp=seccomp,
        memory_limit=_positive((resources.get("memory") or {}).get("limit")),
        pids_limit=_positive((resources.get("pids") or {}).get("limit")),
        cpu_limit=None if quota is None else quota / period,
        userns=userns,
        userns_owner=owner,
        disk_limit=_positive(_int_or_none((spec.get("annotations") or {}).get(DISK_ANNOTATION))),
    )


def _int_or_none(text: object) -> int | None:
    return int(text) if isinstance(text, str) and text.isdecimal() else None


def asked_disk(
    spec: Mapping[str, Any] | None, annotations: Mapping[str, str], *, has_rootfs_mounts: bool
) -> int | None:
    """The bytes of writable root layer the sandbox asks for in the annotation
    ``DISK_ANNOTATION`` (the spec's, else the Create request's), or None; INVALID_ARGUMENT
    naming it when it is no size of at least 1 MiB, or when the sandbox has no root of
    rootfs mounts (an image's snapshot) whose layer it could size."""
    own = (spec or {}).get("annotations")
    asked = {**annotations, **(own if isinstance(own, dict) else {})}.get(DISK_ANNOTATION)
    if asked is None:
        return None
    key = f"annotations[{go_quote(DISK_ANNOTATION)}]"
    number = _int_or_none(asked)
    try:
        size = checked_disk(number if number is not None else str(asked), f"spec {key}")
    except (TypeError, ValueError) as exc:
        raise invalid_argument(str(exc)) from None
    if not has_rootfs_mounts:
        raise invalid_argument(
            f"spec {key} sizes the writable layer of a root given as rootfs mounts (an "
            "image's snapshot, new_sandbox(image=)); this sandbox has none: its root is "
            "read-only, with a tmpfs /tmp"
        )
    return size


def check_seccomp_request(spec: dict[str, Any], annotations: dict[str, str]) -> None:
    """Refuse an opt-out that does not say one thing: an unknown value, or a profile too."""
    asked = {**annotations, **(spec.get("annotations") or {})}.get(oci.SECCOMP_ANNOTATION)
    if asked is None:
        return
    key = f"annotations[{go_quote(oci.SECCOMP_ANNOTATION)}]"
    if asked != oci.SECCOMP_UNCONFINED:
        raise invalid_argument(
            f"spec {key} must be {go_quote(oci.SECCOMP_UNCONFINED)}, not {go_quote(str(asked))}"
        )
    if (spec.get("linux") or {}).get("seccomp") is not None:
        raise invalid_argument(
            f"spec {key} asks for no seccomp filter but linux.seccomp gives one: give one of them"
        )


def _seccomp(spec: dict[str, Any]) -> None:
    linux = spec["linux"]
    if linux.get("seccomp") is not None:
        return
    if (spec.get("annotations") or {}).get(oci.SECCOMP_ANNOTATION) == oci.SECCOMP_UNCONFINED:
        return
    oci.with_default_seccomp()(spec)


def _limits(spec: dict[str, Any], limits: DefaultLimits) -> None:
    resources = spec["linux"].setdefault("resources", {})
    if limits.memory is not None or (resources.get("memory") or {}).get("limit"):
        memory = resources.setdefault("memory", {})
        memory.setdefault("limit", limits.memory)
        limit = memory.get("limit")
        if isinstance(limit, int) and limit > 0:
            memory.setdefault("swap", limit)  # memory plus swap: no swap at all
    if limits.pids is not None:
        pids = resources.setdefault("pids", {})
        pids.setdefault("limit", limits.pids)
    cpu = resources.get("cpu") or {}
    if limits.cpus is not None and not cpu.get("quota"):
        period = cpu.get("period") or _PERIOD
        cpu.update(quota=max(1000, round(limits.cpus * period)), period=period)
        resources["cpu"] = cpu


def _tmpfs_inodes(spec: dict[str, Any]) -> None:
    for mount in spec.get("mounts") or []:
        if mount.get("type") != "tmpfs":
            continue
        options = list(mount.get("options") or [])
        if not any(str(o).startswith("nr_inodes=") for o in options):
            mount["options"] = [*options, f"nr_inodes={TMPFS_INODES}"]


def _members_cgroup(spec: dict[str, Any], unified: bool, sandbox_cgroup: str | None) -> None:
    annotations = spec.get("annotations") or {}
    annotations.pop(MEMBERS_CGROUP_ANNOTATION, None)  # the sandboxer's word alone
    annotations[MEMBERS_ROOT_ANNOTATION] = READONLY  # it cannot bound a member's layer
    linux = spec["linux"]
    path = linux.get("cgroupsPath")
    cgroupfs = isinstance(path, str) and path.startswith("/") and ":" not in path
    if cgroupfs and not unified:
        annotations[MEMBERS_CGROUP_ANNOTATION] = path
    elif cgroupfs and sandbox_cgroup and path.rstrip("/") == sandbox_cgroup.rstrip("/"):
        parent = sandbox_cgroup.rstrip("/")
        linux["cgroupsPath"] = leaf_path(parent)  # the parent holds the leaf and members
        annotations[MEMBERS_CGROUP_ANNOTATION] = parent
    if annotations:
        spec["annotations"] = annotations


def harden(
    spec: dict[str, Any],
    limits: DefaultLimits,
    *,
    unified: bool | None = None,
    sandbox_cgroup: str | None = None,
) -> None:
    """Give ``spec`` (the sandbox's full spec, changed in place) the defaults of the
    module's docstring; ``unified`` says whether the host runs cgroup v2 (by default, as
    :func:`cgroup_v2` finds); ``sandbox_cgroup`` is the cgroup the sandboxer gives a
    sandbox whose spec names none (``/<namespace>/<id>``): on v2 a spec whose
    ``cgroupsPath`` is that one gets the parent and leaf of :mod:`._cgroup2`."""
    _seccomp(spec)
    _limits(spec, limits)
    _members_cgroup(spec, cgroup_v2() if unified is None else unified, sandbox_cgroup)
    _tmpfs_inodes(spec)
