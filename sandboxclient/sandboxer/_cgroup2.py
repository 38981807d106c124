"""A sandbox's cgroup on cgroup v2 (the unified hierarchy): a parent that holds its limits,
its own process in a leaf, its members beside it, as a Kubernetes pod is laid out.

A v2 cgroup that holds a process cannot give controllers to children (the "no internal
processes" rule), so on v2 a sandbox whose spec names no ``cgroupsPath`` gets two levels
(:func:`~._harden.harden` writes them in its spec):

- ``/<namespace>/<id>``, the **parent**: the sandboxer makes it before the sandbox's task is
  created (:meth:`SandboxCgroups.prepare`), enabling the controllers its limits need in the
  ``cgroup.subtree_control`` of every ancestor from the mount's root down and in its own,
  and writes the limits of the sandbox's spec into it: ``memory.max``, ``memory.swap.max``
  (0 for the sandboxer's default: no swap), ``pids.max`` and ``cpu.max``. A controller a
  limit needs that the host does not offer (``cgroup.controllers``) refuses the sandbox,
  naming it: never a sandbox run unbounded. Members nest under it (the spec's annotation
  ``MEMBERS_CGROUP_ANNOTATION`` names it, as on v1), so they and their execs count against
  the sandbox's limits;
- ``/<namespace>/<id>/<id>``, the **leaf**: the spec's ``cgroupsPath``, where runc puts the
  sandbox's own process (and its execs). It is named after the sandbox's container, as
  each member's cgroup is named after its own: containerd's ids are unique in a namespace,
  so no member's cgroup can be the sandbox's (a fixed name such as ``sandbox`` could be a
  member's id).

A spec with a ``cgroupsPath`` of its own is used as given: runc puts the sandbox there and
applies its limits, and members are not nested (as on v1 with a systemd path).

The parent is removed (an ``rmdir``, which only an empty cgroup allows: a populated one is
never torn down) once the sandbox's containers are deleted (Shutdown, the undo of a failed
Start; :meth:`SandboxCgroups.remove`). Each parent made is noted in the sandboxer's state
(``cgroup2/<namespace>/<id>``) first and the note dropped once it is gone, so a sandboxer
started again removes what a killed one left (:meth:`SandboxCgroups.sweep`) and never
touches a cgroup that is not its own. On cgroup v1 none of this runs: runc makes the
sandbox's cgroup ``/<namespace>/<id>`` with its limits and members nest in it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .._facts._golang import go_quote
from .._members._spec import members_cgroup
from .._serve._refusals import failed_precondition
from ._state import private_dir

__all__ = (
    "CGROUP_ROOT",
    "NOTES_DIR",
    "CgroupFs",
    "CgroupLimits",
    "SandboxCgroups",
    "SandboxTable",
    "cgroup_v2",
    "leaf_path",
    "limits_of",
)

_log = logging.getLogger("sandboxclient.sandboxer")

CGROUP_ROOT: Final = "/sys/fs/cgroup"
"""Where the host's cgroup filesystem is mounted (on v2: the unified hierarchy's root)."""

NOTES_DIR: Final = "cgroup2"
"""The directory, in the sandboxer's state, of the notes of the parents it made."""

_PERIOD: Final = 100_000


def cgroup_v2(root: str = CGROUP_ROOT) -> bool:
    """Whether the cgroup filesystem at ``root`` is the unified hierarchy (v2)."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def leaf_path(parent: str) -> str:
    """The cgroup of the sandbox's own process under its ``parent`` ``/<namespace>/<id>``:
    ``/<namespace>/<id>/<id>`` (see the module's docstring)."""
    parent = parent.rstrip("/")
    return f"{parent}/{os.path.basename(parent)}"


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """A sandbox's limits as cgroup v2 files say them (None: the file is left as it is)."""

    memory_max: int | None = None
    swap_max: str | None = None
    """``memory.swap.max``: bytes of swap on top of memory (``0``), or ``max``."""
    pids_max: int | None = None
    cpu_max: str | None = None
    """``cpu.max``: ``<quota> <period>`` in microseconds."""

    def controllers(self) -> tuple[str, ...]:
        """The controllers these limits need, in the order they are enabled."""
        needed = []
        if self.memory_max is not None or self.swap_max is not None:
            needed.append("memory")
        if self.pids_max is not None:
            needed.append("pids")
        if self.cpu_max is not None:
            needed.append("cpu")
        return tuple(needed)

    def files(self) -> tuple[tuple[str, str], ...]:
        """(file, value) to write, in order."""
        written = (
            ("memory.max", self.memory_max),
            ("memory.swap.max", self.swap_max),
            ("pids.max", self.pids_max),
            ("cpu.max", self.cpu_max),
        )
        return tuple((name, str(value)) for name, value in written if value is not None)


def _positive(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def limits_of(spec: Mapping[str, Any]) -> CgroupLimits:
    """The limits of a sandbox's full spec (``linux.resources``, in OCI's terms: memory's
    ``swap`` is memory plus swap) as cgroup v2 files, converted as runc converts them."""
    resources = (spec.get("linux") or {}).get("resources") or {}
    memory = resources.get("memory") or {}
    limit, swap = _positive(memory.get("limit")), memory.get("swap")
    both = _positive(swap)
    swap_max = None
    if swap == -1:
        swap_max = "max"
    elif limit is not None and both is not None:
        swap_max = str(max(0, both - limit))
    cpu = resources.get("cpu") or {}
    quota = _positive(cpu.get("quota"))
    period = _positive(cpu.get("period")) or _PERIOD
    return CgroupLimits(
        memory_max=limit,
        swap_max=swap_max,
        pids_max=_positive((resources.get("pids") or {}).get("limit")),
        cpu_max=None if quota is None else f"{quota} {period}",
    )


class _Held(Protocol):
    @property
    def made(self) -> bool:
        """Whether containerd may hold a container of the sandbox."""
        ...


class SandboxTable(Protocol):
    """What :class:`SandboxCgroups` reads of the sandboxer's table (``_podstate.PodTable``)."""

    base: str
    """The sandboxer's private directory."""

    def get(self, namespace: str, sandbox_id: str) -> _Held | None:
        """The sandbox held, or None."""
        ...


class CgroupFs:
    """The cgroup filesystem at ``root``, as :class:`SandboxCgroups` reads and changes it
    (tests give a directory tree that mimics one, with a subclass doing what the kernel
    does on mkdir and rmdir)."""

    def __init__(self, root: str = CGROUP_ROOT) -> None:
        self.root = root

    def path(self, cgroup: str, *name: str) -> str:
        """The directory of ``cgroup`` (``/a/b``), or a file of it."""
        inside = cgroup.strip("/")
        return os.path.join(self.root, *((inside,) if inside else ()), *name)

    def read(self, cgroup: str, name: str) -> str:
        """A file of ``cgroup``, stripped."""
        with open(self.path(cgroup, name)) as f:
            return f.read().strip()

    def write(self, cgroup: str, name: str, value: str) -> None:
        """Write ``value`` to a file of ``cgroup`` (one write, as the kernel wants it)."""
        with open(self.path(cgroup, name), "w") as f:
            f.write(value)

    def mkdir(self, cgroup: str) -> bool:
        """Make ``cgroup``; whether it was made (False: it was there)."""
        try:
            os.mkdir(self.path(cgroup), 0o755)
        except FileExistsError:
            return False
        return True

    def rmdir(self, cgroup: str) -> None:
        """Remove ``cgroup`` (OSError EBUSY while it holds a process or a child)."""
        os.rmdir(self.path(cgroup))

    def children(self, cgroup: str) -> list[str]:
        """The names of ``cgroup``'s child cgroups."""
        try:
            with os.scandir(self.path(cgroup)) as found:
                return [e.name for e in found if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []


class SandboxCgroups:
    """The v2 parents of the sandboxes of ``table`` (see the module's docstring); the
    notes of those a killed sandboxer left are swept at once. On a host without cgroup v2
    at ``fs``'s root, every method does nothing."""

    def __init__(self, table: SandboxTable, fs: CgroupFs | None = None) -> None:
        self._table = table
        self.fs = fs if fs is not None else CgroupFs()
        self.unified = cgroup_v2(self.fs.root)
        """Whether the host runs cgroup v2."""
        for cgroup in self.sweep():
            _log.warning("removed the cgroup %s a stopped sandboxer left", cgroup)

    def _note(self, namespace: str, sandbox_id: str) -> str:
        return os.path.join(self._table.base, NOTES_DIR, namespace, sandbox_id)

    def parent(self, spec: Mapping[str, Any]) -> str | None:
        """The parent cgroup the sandboxer makes for the sandbox of this full spec; None on
        v1, or when its spec names a ``cgroupsPath`` of its own."""
        parent = members_cgroup(spec)
        if not self.unified or parent is None:
            return None
        path = (spec.get("linux") or {}).get("cgroupsPath")
        return parent if path == leaf_path(parent) else None

    def prepare(self, namespace: str, sandbox_id: str, spec: Mapping[str, Any]) -> str | None:
        """Make the sandbox's parent cgroup with its spec's limits (see the module's
        docstring); its path, or None when there is none to make. FAILED_PRECONDITION naming
        the controller the host lacks, or the file that could not be written (nothing is
        left made then)."""
        parent = self.parent(spec)
        if parent is None:
            return None
        limits = limits_of(spec)
        needed = limits.controllers()
        self._check_offered("/", needed, parent)
        note = self._note(namespace, sandbox_id)
        private_dir(self._table.base, NOTES_DIR, namespace)
        with open(note, "w"):
            pass
        try:
            levels = parent.strip("/").split("/")
            for depth in range(len(levels)):  # the root's, then each ancestor's
                above = "/" + "/".join(levels[:depth])
                self._enable(above, needed, parent)
                self.fs.mkdir("/" + "/".join(levels[: depth + 1]))
            self._check_offered(parent, needed, parent)
            self._enable(parent, needed, parent)  # for the leaf and the members
            for name, value in limits.files():
                self._write(parent, name, value)
        except BaseException:
            self.remove(namespace, sandbox_id)
            raise
        return parent

    def _check_offered(self, cgroup: str, needed: tuple[str, ...], parent: str) -> None:
        try:
            offered = set(self.fs.read(cgroup, "cgroup.controllers").split())
        except OSError as exc:
            raise failed_precondition(
                f"cannot read {self.fs.path(cgroup, 'cgroup.controllers')} for the sandbox's "
                f"cgroup {go_quote(parent)}: {exc.strerror or exc}"
            ) from None
        for controller in needed:
            if controller not in offered:
                raise failed_precondition(
                    f"the cgroup v2 controller {go_quote(controller)} is not available in "
                    f"{self.fs.path(cgroup)} (cgroup.controllers: "
                    f"{' '.join(sorted(offered)) or 'none'}): the sandbox's limits need it "
                    "and it is never run unbounded"
                )

    def _enable(self, cgroup: str, needed: tuple[str, ...], parent: str) -> None:
        try:
            enabled = set(self.fs.read(cgroup, "cgroup.subtree_control").split())
        except OSError:
            enabled = set()
        for controller in needed:
            if controller not in enabled:
                self._write(cgroup, "cgroup.subtree_control", f"+{controller}", parent)

    def _write(self, cgroup: str, name: str, value: str, parent: str | None = None) -> None:
        try:
            self.fs.write(cgroup, name, value)
        except OSError as exc:
            if name == "memory.swap.max" and exc.errno == errno.ENOENT and value in ("0", "max"):
                return  # no swap accounting on this host: no swap to bound (as runc does)
            raise failed_precondition(
                f"cannot write {value!r} to {self.fs.path(cgroup, name)} for the sandbox's "
                f"cgroup {go_quote(parent or cgroup)}: {exc.strerror or exc}"
            ) from None

    def remove(self, namespace: str, sandbox_id: str) -> bool:
        """Remove the sandbox's parent cgroup (and the empty cgroups left in it), if the
        sandboxer made it; whether one was removed now. One still holding a process stays
        noted (a warning says so), for a later Shutdown or sweep."""
        note = self._note(namespace, sandbox_id)
        if not os.path.exists(note):
            return False
        parent = f"/{namespace}/{sandbox_id}"
        for child in self.fs.children(parent):
            with contextlib.suppress(OSError):
                self.fs.rmdir(f"{parent}/{child}")
        removed = True
        try:
            self.fs.rmdir(parent)
        except FileNotFoundError:
            removed = False
        except OSError as exc:
            _log.warning("cannot remove the sandbox's cgroup %s yet: %s", parent, exc)
            return False
        with contextlib.suppress(OSError):
            os.unlink(note)
            os.rmdir(os.path.dirname(note))  # the namespace's, once empty
        return removed

    def sweep(self) -> list[str]:
        """Remove the parents noted for sandboxes the table does not hold as made (a
        sandboxer killed between making one and removing it leaves its note); the cgroups
        removed."""
        top = os.path.join(self._table.base, NOTES_DIR)
        removed = []
        for namespace in _names(top):
            for sandbox_id in _names(os.path.join(top, namespace)):
                entry = self._table.get(namespace, sandbox_id)
                if entry is not None and entry.made:
                    continue  # its Shutdown, or its next Start, removes it
                if self.remove(namespace, sandbox_id):
                    removed.append(f"/{namespace}/{sandbox_id}")
        return removed

    def usage(self, namespace: str, sandbox_id: str) -> dict[str, Any] | None:
        """What the sandbox's parent cgroup counts, as :class:`~sandboxclient.SandboxMetrics`
        fields (the whole sandbox: its process, its execs and its members); None without a
        parent made by the sandboxer, or when it cannot be read."""
        if not self.unified or not os.path.exists(self._note(namespace, sandbox_id)):
            return None
        parent = f"/{namespace}/{sandbox_id}"
        try:
            stat = dict(_pairs(self.fs.read(parent, "cpu.stat")))
            events = dict(_pairs(self.fs.read(parent, "memory.events")))
            found: dict[str, Any] = {
                "memory_usage_bytes": int(self.fs.read(parent, "memory.current")),
                "memory_limit_bytes": _limit(self.fs.read(parent, "memory.max")),
                "oom_kills": events.get("oom_kill"),
                "cpu_usage_seconds": stat.get("usage_usec", 0) / 1e6,
                "pids": int(self.fs.read(parent, "pids.current")),
                "pids_limit": _limit(self.fs.read(parent, "pids.max")),
            }
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError, ValueError):  # kernels from 5.19 keep the peak
            found["memory_max_usage_bytes"] = int(self.fs.read(parent, "memory.peak"))
        return found


def _names(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _pairs(text: str) -> list[tuple[str, int]]:
    pairs = []
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdecimal():
            pairs.append((key, int(value)))
    return pairs


def _limit(text: str) -> int | None:
    return None if text == "max" else int(text)
