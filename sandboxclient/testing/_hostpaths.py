"""What a private containerd's shims leave on the machine's shared paths, and its removal.

A :class:`~._daemon.ContainerdDaemon` keeps its root, state and sockets private, but two
paths of its shims are the machine's, whatever the daemon's config says:

- **Shim sockets**, in ``/run/containerd/s`` (fixed in containerd's sources, ``pkg/shim``),
  each named by the sha256 of ``<containerd address>/<namespace>/<id>`` (``/debug`` added
  for a debug socket). A shim removes its sockets when it exits on its own; a shim that is
  killed leaves them, and so does the ``shim delete`` containerd runs for a shim it finds
  dead when it starts again (it removes the bundle, which named the socket).
- **runc's state**, in ``/run/containerd/runc/<namespace>`` unless a task's runtime options
  name another root. runc removes a container's directory when it deletes it, never the
  namespace's; gVisor's runsc (run by the same shim) keeps ``<container>_sandbox:<sandbox>``
  ``.state`` and ``.lock`` files there instead, and can leave a lock behind: every runsc
  command takes the lock (creating its file) before it reads the state, so one that races
  with the container's deletion recreates the lock just removed.

Those folders are shared with every other containerd of the machine (``k8s.io`` is the
kubelet's, ``moby`` Docker's, ``default`` anyone's), so what is removed there is named by
the daemon itself: the sockets and task ids its log names, its bundles' folders, and a
namespace's folder only when the daemon's first start found none there and the name is not
one of those well-known ones.

The functions take the shared paths as arguments so that they can be tried on others.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from ._procs import running

__all__ = (
    "SHARED_RUNC_ROOT",
    "SHIM_SOCKET_DIR",
    "left_behind",
    "listening_sockets",
    "logged_shim_sockets",
    "release_host_paths",
    "release_runc_namespaces",
    "remove_runc_state",
    "remove_sockets",
    "runc_namespaces",
    "shim_namespaces",
    "shim_tasks",
)

SHIM_SOCKET_DIR: Final = Path("/run/containerd/s")
SHARED_RUNC_ROOT: Final = Path("/run/containerd/runc")
TASK_BUNDLES: Final = "io.containerd.runtime.v2.task"
"""Below the daemon's state directory: ``<namespace>/<task id>``, one bundle per task."""
SANDBOX_BUNDLES: Final = "io.containerd.sandbox.controller.v1.shim"
"""Below the daemon's state directory: the bundles of the ``shim`` sandbox controller."""

SHARED_NAMESPACES: Final = frozenset({"default", "k8s.io", "moby"})
"""Namespaces other containerds use too: their runc folders are never removed."""

# runsc's files: "+<container>+_sandbox:+<sandbox>+" (older releases: without the "+").
_RUNSC_FILE: Final = re.compile(
    r"(?P<stem>\+?(?P<id>[^+]+?)\+?_sandbox:\+?(?P<sandbox>[^+]+?)\+?)\.(?P<kind>lock|state)"
)
# containerd's info-level line for every shim it connects to, at start and when it restarts.
_CONNECTING: Final = re.compile(
    r'msg="connecting to shim (?P<id>[^"\s]+)".*?address="?unix://(?P<path>[^"\s]+)'
)
_NAMESPACE: Final = re.compile(r"\bnamespace=\"?(?P<ns>[^\"\s]+)")


def listening_sockets(pids: Iterable[int], under: Path = SHIM_SOCKET_DIR) -> set[Path]:
    """The unix sockets below ``under`` that the processes ``pids`` hold (a shim's own, and
    its debug socket), found through /proc; read before killing them."""
    found: set[Path] = set()
    for pid in pids:
        inodes: set[str] = set()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
        if not inodes:
            continue
        try:
            table = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in table:
            fields = line.split(None, 7)  # Num RefCount Protocol Flags Type St Inode Path
            if len(fields) == 8 and fields[6] in inodes:
                path = Path(fields[7])
                if path.parent == under:
                    found.add(path)
    return found


def _connections(log_path: Path) -> Iterator[tuple[str, Path, str | None]]:
    """(task id, shim socket, namespace) of each shim the daemon's log says it connected to."""
    try:
        log = log_path.open(errors="replace")
    except OSError:
        return
    with log:
        for line in log:
            if "connecting to shim" not in line:
                continue
            match = _CONNECTING.search(line)
            if match is not None:
                ns = _NAMESPACE.search(line)
                yield match["id"], Path(match["path"]), None if ns is None else ns["ns"]


def logged_shim_sockets(
    log_path: Path, address: str, under: Path = SHIM_SOCKET_DIR, *, namespace: str | None = None
) -> set[Path]:
    """The shim sockets below ``under`` that the daemon serving ``address`` says, in its log
    (info level or more), it connected to (those of ``namespace`` only, if given); with each
    its debug socket, where the daemon ran shims with one. No other daemon's: a socket's
    name is the digest of a key that starts with the daemon's address."""
    return _sockets_of(list(_connections(log_path)), address, under, namespace)


def _sockets_of(
    connections: Iterable[tuple[str, Path, str | None]],
    address: str,
    under: Path,
    namespace: str | None = None,
) -> set[Path]:
    found: set[Path] = set()
    for task_id, path, ns in connections:
        if path.parent != under or (namespace is not None and ns != namespace):
            continue
        found.add(path)
        if ns is not None:
            key = f"{address}/{ns}/{task_id}"
            if _socket_name(key) == path.name:  # its own shim, not a group's
                found.add(under / _socket_name(key + "/debug"))
    return found


def shim_tasks(state: Path, log_path: Path) -> dict[str, set[str]]:
    """Namespace -> ids of the tasks a daemon of state directory ``state`` ran shims for:
    those its log (info level or more) says it connected to, and those whose bundle folder
    is still there (for tasks or for the ``shim`` controller's sandboxes)."""
    return _tasks_of(state, _connections(log_path))


def _tasks_of(
    state: Path, connections: Iterable[tuple[str, Path, str | None]]
) -> dict[str, set[str]]:
    tasks: dict[str, set[str]] = {ns: set() for ns in shim_namespaces(state)}
    for ns in tasks:
        for kind in (TASK_BUNDLES, SANDBOX_BUNDLES):
            with contextlib.suppress(OSError):
                tasks[ns].update(p.name for p in (state / kind / ns).iterdir() if p.is_dir())
    for task_id, _, logged_ns in connections:
        if logged_ns is not None:
            tasks.setdefault(logged_ns, set()).add(task_id)
    return tasks


def runc_namespaces(root: Path = SHARED_RUNC_ROOT) -> frozenset[str]:
    """The namespaces that have a folder in runc's state root now."""
    with contextlib.suppress(OSError):
        return frozenset(p.name for p in root.iterdir() if p.is_dir())
    return frozenset()


def _socket_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def remove_sockets(paths: Iterable[Path]) -> None:
    """Unlink each of ``paths`` that is a socket."""
    for path in paths:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()


def shim_namespaces(state: Path) -> set[str]:
    """The namespaces a daemon of state directory ``state`` ran shims in (for tasks or for
    the ``shim`` controller's sandboxes): containerd makes a directory per namespace for
    their bundles, and keeps it."""
    found: set[str] = set()
    for kind in (TASK_BUNDLES, SANDBOX_BUNDLES):
        with contextlib.suppress(OSError):
            found.update(p.name for p in (state / kind).iterdir() if p.is_dir())
    return found


def remove_runc_state(bundles: Path, root: Path = SHARED_RUNC_ROOT) -> set[Path]:
    """Remove runc's state of the containers whose bundles lie below ``bundles`` and whose
    process is gone; return the cgroups they were in."""
    cgroups: set[Path] = set()
    label = f"bundle={bundles}/"
    for state_file in root.glob("*/*/state.json"):
        try:
            runc_state = json.loads(state_file.read_text())
            labels = runc_state["config"].get("labels") or []
            if not any(str(x).startswith(label) for x in labels):
                continue  # another daemon's container
            if running(int(runc_state.get("init_process_pid") or 0)):
                continue
            cgroups.update(Path(p) for p in (runc_state.get("cgroup_paths") or {}).values())
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            continue
        shutil.rmtree(state_file.parent, ignore_errors=True)
    return cgroups


def _runsc_id(path: Path) -> str | None:
    """The container id a runsc state or lock file is named by, else ``None``."""
    match = _RUNSC_FILE.fullmatch(path.name)
    return None if match is None else match["id"]


def _runsc_of(path: Path, ids: Collection[str]) -> bool:
    """Whether a runsc state or lock file is of one of the tasks ``ids``, or of a member of
    one: its name carries the container's id and its sandbox's (a member starts no shim of
    its own, so only its sandbox's id is among a daemon's tasks)."""
    match = _RUNSC_FILE.fullmatch(path.name)
    return match is not None and (match["id"] in ids or match["sandbox"] in ids)


def _stale_lock(path: Path) -> bool:
    """Whether ``path`` is a runsc lock of a container that is gone: no state file beside
    it, and no process holding it."""
    match = _RUNSC_FILE.fullmatch(path.name)
    if match is None or match["kind"] != "lock":
        return False
    if path.with_name(match["stem"] + ".state").exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a runsc command holds it
    finally:
        os.close(fd)
    return True


def _removable(ns: str, kept: Collection[str]) -> bool:
    return ns not in kept and ns not in SHARED_NAMESPACES


def release_runc_namespaces(
    tasks: Mapping[str, Collection[str]],
    kept: Collection[str],
    root: Path = SHARED_RUNC_ROOT,
) -> None:
    """In the runc state folder of each namespace of ``tasks`` (namespace -> task ids),
    remove runsc's stale locks of those tasks, no other's; then remove the folder if it is
    empty, unless its namespace is in ``kept`` (folders that were there before the daemon)
    or :data:`SHARED_NAMESPACES`: another containerd may be about to make a container there.
    """
    for ns, ids in tasks.items():
        directory = root / ns
        with contextlib.suppress(OSError):
            for entry in directory.iterdir():
                if _runsc_of(entry, ids) and _stale_lock(entry):
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        if _removable(ns, kept):
            with contextlib.suppress(OSError):
                directory.rmdir()


def _ours(entry: Path, bundles: Sequence[Path], ids: Collection[str]) -> bool:
    """Whether an entry of a runc namespace folder is the daemon's: runc's state of a
    container whose bundle lies below one of ``bundles``, runsc's state of one (its bundle
    folder says so), or a runsc lock of one of its tasks ``ids`` or of a member of one."""
    runsc_id = _runsc_id(entry)
    below = tuple(f"{b}/" for b in bundles)
    try:
        if runsc_id is None:
            config = json.loads((entry / "state.json").read_text())["config"]
            labels = tuple(f"bundle={b}" for b in below)
            return any(str(x).startswith(labels) for x in config["labels"])
        if entry.suffix == ".state":
            return str(json.loads(entry.read_text())["bundleDir"]).startswith(below)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False
    return _runsc_of(entry, ids)


def left_behind(
    sockets: Iterable[Path],
    tasks: Mapping[str, Collection[str]],
    bundles: Sequence[Path],
    kept: Collection[str],
    root: Path = SHARED_RUNC_ROOT,
) -> list[Path]:
    """What of a stopped daemon is still on the shared paths: those of its shim ``sockets``
    that exist; in the runc folders of the namespaces of ``tasks`` (namespace -> its task
    ids), its own entries (runc's or runsc's state of a container whose bundle lies below
    one of ``bundles``, runsc's locks of those tasks); and each such folder that
    :func:`release_runc_namespaces` would have removed and that holds nothing of another's.
    """
    left = sorted(p for p in sockets if os.path.lexists(p))
    for ns in sorted(tasks):
        directory = root / ns
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        ours = [e for e in entries if _ours(e, bundles, tasks[ns])]
        if _removable(ns, kept) and len(ours) == len(entries):
            left.append(directory)
        left.extend(ours)
    return left


def release_host_paths(
    state: Path, log_path: Path, address: str, kept: Collection[str] | None
) -> list[Path]:
    """What a stopped daemon (state directory ``state``, log ``log_path``, serving
    ``address``) does on the shared paths, its log read once: remove the shim sockets its log
    names, release the runc folders of its namespaces (:func:`release_runc_namespaces`;
    ``kept``: the folders there at its first start, None for every folder there now), and
    say what of its own is left (:func:`left_behind`)."""
    connections = list(_connections(log_path))
    sockets = _sockets_of(connections, address, SHIM_SOCKET_DIR)
    remove_sockets(sockets)
    tasks = _tasks_of(state, connections)
    kept = runc_namespaces() if kept is None else kept
    release_runc_namespaces(tasks, kept)
    return left_behind(sockets, tasks, (state / TASK_BUNDLES, state / SANDBOX_BUNDLES), kept)
