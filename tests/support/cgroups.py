"""The host's cgroups as the tests read them, on cgroup v1 (a hierarchy per controller) or v2
(one unified tree), and a directory tree that mimics a cgroup2 filesystem for tests that
must not touch the host's."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sandboxclient.sandboxer._cgroup2 import CgroupFs

ROOT = Path("/sys/fs/cgroup")
"""Where the host's cgroup filesystem is mounted."""

V1_FILES = {
    "memory.max": ("memory", "memory.limit_in_bytes"),
    "pids.max": ("pids", "pids.max"),
    "pids.current": ("pids", "pids.current"),
    "memory.current": ("memory", "memory.usage_in_bytes"),
}
"""A v2 file's counterpart on v1: its controller's hierarchy and the file's name there."""


def cgroup_v1() -> bool:
    """Whether the host runs cgroup v1 (the pids controller has a hierarchy of its own)."""
    return (ROOT / "pids").is_dir()


def limit_file(cgroup: str, name: str) -> Path:
    """The file ``name`` (as cgroup v2 names it: ``memory.max``, ``pids.max``...) of
    ``cgroup`` (``/<namespace>/<id>``) on this host, v1 or v2."""
    if not cgroup_v1():
        return ROOT / cgroup.strip("/") / name
    controller, v1_name = V1_FILES[name]
    return ROOT / controller / cgroup.strip("/") / v1_name


def read_limit(cgroup: str, name: str) -> int | None:
    """A limit of ``cgroup`` (see :func:`limit_file`): None when unlimited (v2's ``max``,
    v1's huge numbers)."""
    text = limit_file(cgroup, name).read_text().strip()
    if text == "max" or int(text) >= 1 << 62:
        return None
    return int(text)


def sandbox_process_cgroup(namespace: str, sandbox_id: str) -> str:
    """The cgroup of a default sandbox's own process: the sandbox's cgroup on v1, its leaf
    on v2 (the parent holds the limits and the members)."""
    parent = f"/{namespace}/{sandbox_id}"
    return parent if cgroup_v1() else f"{parent}/{sandbox_id}"


def sandbox_process_dir(namespace: str, sandbox_id: str) -> Path:
    """The directory of that cgroup (:func:`sandbox_process_cgroup`): in the memory
    hierarchy on v1."""
    where = sandbox_process_cgroup(namespace, sandbox_id).strip("/")
    return (ROOT / "memory" if cgroup_v1() else ROOT) / where


def process_cgroup(pid: int) -> str:
    """The cgroup of process ``pid`` on this host: its pids hierarchy's on v1, the unified
    tree's on v2."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if ("pids" in controllers.split(",")) if cgroup_v1() else not controllers:
            return path
    raise AssertionError(f"process {pid} is in no {'pids' if cgroup_v1() else 'unified'} cgroup")


def cpu_stats(cgroup: str) -> tuple[float, int]:
    """CPU seconds ``cgroup`` (``/<namespace>/<id>``) used and how many of its periods its
    quota throttled, read on this host: v1's ``cpuacct.usage`` and ``cpu.stat``, v2's
    ``cpu.stat`` (``usage_usec``, ``nr_throttled``; the latter only where the cpu controller
    is enabled: 0 otherwise, as with no quota)."""
    inside = cgroup.strip("/")
    if cgroup_v1():
        used = int((ROOT / "cpuacct" / inside / "cpuacct.usage").read_text()) / 1e9
        stat = (ROOT / "cpu" / inside / "cpu.stat").read_text()
    else:
        stat = (ROOT / inside / "cpu.stat").read_text()
    fields = dict(line.split() for line in stat.splitlines())
    if not cgroup_v1():
        used = int(fields["usage_usec"]) / 1e6
    return used, int(fields.get("nr_throttled", 0))


class FakeCgroupFs(CgroupFs):
    """A directory tree that behaves as a cgroup2 filesystem where the sandboxer looks:
    a new cgroup's ``cgroup.controllers`` is its parent's ``cgroup.subtree_control``; a
    controller is enabled only if offered and never in a cgroup holding a process (but the
    root); a controller's files exist only where it is enabled; rmdir refuses a cgroup with
    a process or a child (EBUSY), and takes its files with it."""

    def __init__(self, root: Path, controllers: str = "cpuset cpu io memory pids") -> None:
        super().__init__(str(root))
        root.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text(controllers + "\n")
        (root / "cgroup.subtree_control").write_text("")
        (root / "cgroup.procs").write_text("")
        self.writes: list[tuple[str, str, str]] = []
        """(cgroup, file, value) of every write, in order."""

    def _file(self, cgroup: str, name: str) -> Path:
        return Path(self.path(cgroup, name))

    def write(self, cgroup: str, name: str, value: str) -> None:
        """Write as the kernel lets the sandboxer (see the class's docstring)."""
        here = self._file(cgroup, name)
        if not here.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(here))
        if name == "cgroup.subtree_control":
            asked = value.removeprefix("+")
            if asked not in self.read(cgroup, "cgroup.controllers").split():
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(here))
            if cgroup.strip("/") and self.read(cgroup, "cgroup.procs"):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(here))
            enabled = self.read(cgroup, "cgroup.subtree_control").split()
            here.write_text(" ".join(dict.fromkeys([*enabled, asked])) + "\n")
        elif name.partition(".")[0] in ("memory", "pids", "cpu"):
            above = os.path.dirname(cgroup.rstrip("/")) or "/"
            if name.partition(".")[0] not in self.read(above, "cgroup.subtree_control").split():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(here))
            here.write_text(value + "\n")
        else:
            here.write_text(value + "\n")
        self.writes.append(("/" + cgroup.strip("/"), name, value))

    def mkdir(self, cgroup: str) -> bool:
        """Make a cgroup with the files the kernel gives one."""
        made = super().mkdir(cgroup)
        if made:
            above = os.path.dirname("/" + cgroup.strip("/")) or "/"
            offered = self.read(above, "cgroup.subtree_control")
            self._file(cgroup, "cgroup.controllers").write_text(offered + "\n")
            self._file(cgroup, "cgroup.subtree_control").write_text("")
            self._file(cgroup, "cgroup.procs").write_text("")
        return made

    def rmdir(self, cgroup: str) -> None:
        """Remove an empty cgroup (EBUSY with a process or a child), its files with it."""
        here = Path(self.path(cgroup))
        if not here.is_dir():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(here))
        if self.children(cgroup) or self.read(cgroup, "cgroup.procs"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(here))
        for item in here.iterdir():
            item.unlink()
        here.rmdir()

    def add_process(self, cgroup: str, pid: int = 4242) -> None:
        """Put a (pretend) process in ``cgroup``, made if missing."""
        self.mkdir(cgroup)
        self._file(cgroup, "cgroup.procs").write_text(f"{pid}\n")
