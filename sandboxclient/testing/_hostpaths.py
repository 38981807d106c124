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
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from ._procs import running

__all__ = (
    "SHARED_RUNC_ROOT",
    "SHIM_SOCKET_DIR",
    "left_behind",
    "listening_sockets",
    "logged_shim_sockets",
    "release_runc_namespaces",
    "remove_runc_state",
    "remove_sockets",
    "shim_namespaces",
)

SHIM_SOCKET_DIR: Final = Path("/run/containerd/s")
SHARED_RUNC_ROOT: Final = Path("/run/containerd/runc")
TASK_BUNDLES: Final = "io.containerd.runtime.v2.task"
"""Below the daemon's state directory: ``<namespace>/<task id>``, one bundle per task."""
SANDBOX_BUNDLES: Final = "io.containerd.sandbox.controller.v1.shim"
"""Below the daemon's state directory: the bundles of the ``shim`` sandbox controller."""

_RUNSC_LOCK: Final = re.compile(r"(?P<stem>.+_sandbox:.+)\.lock")
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


def logged_shim_sockets(
    log_path: Path, address: str, under: Path = SHIM_SOCKET_DIR, *, namespace: str | None = None
) -> set[Path]:
    """The shim sockets below ``under`` that the daemon serving ``address`` says, in its log
    (info level or more), it connected to (those of ``namespace`` only, if given); with each
    its debug socket, where the daemon ran shims with one. No other daemon's: a socket's
    name is the digest of a key that starts with the daemon's address."""
    found: set[Path] = set()
    try:
        log = log_path.open(errors="replace")
    except OSError:
        return found
    with log:
        for line in log:
            if "connecting to shim" not in line:
                continue
            match = _CONNECTING.search(line)
            if match is None or Path(match["path"]).parent != under:
                continue
            path = Path(match["path"])
            ns = _NAMESPACE.search(line)
            if namespace is not None and (ns is None or ns["ns"] != namespace):
                continue
            found.add(path)
            if ns is not None:
                key = f"{address}/{ns['ns']}/{match['id']}"
                if _socket_name(key) == path.name:  # its own shim, not a group's
                    found.add(under / _socket_name(key + "/debug"))
    return found


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


def _stale_lock(path: Path) -> bool:
    """Whether ``path`` is a runsc lock of a container that is gone: no state file beside
    it, and no process holding it."""
    match = _RUNSC_LOCK.fullmatch(path.name)
    if match is None or path.with_name(match["stem"] + ".state").exists():
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


def release_runc_namespaces(namespaces: Iterable[str], root: Path = SHARED_RUNC_ROOT) -> None:
    """Remove runsc's stale locks from the runc state directories of ``namespaces``, then
    each directory if it is empty (rmdir: one that holds another daemon's containers stays)."""
    for ns in namespaces:
        directory = root / ns
        with contextlib.suppress(OSError):
            for entry in directory.iterdir():
                if _stale_lock(entry):
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()


def _ours_or_stale(entry: Path, bundles: Path) -> bool:
    """Whether an entry of a runc namespace directory is a stale runsc lock or the state of
    a container whose bundle lies below ``bundles``: anything else is another's."""
    if _stale_lock(entry):
        return True
    try:
        config = json.loads((entry / "state.json").read_text())["config"]
        labels = config.get("labels") or []
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False
    return any(str(x).startswith(f"bundle={bundles}/") for x in labels)


def left_behind(
    sockets: Iterable[Path],
    namespaces: Iterable[str],
    bundles: Path,
    root: Path = SHARED_RUNC_ROOT,
) -> list[Path]:
    """What of a stopped daemon is still on the shared paths: those of its shim ``sockets``
    that exist, and the runc directories of its ``namespaces`` that hold nothing of another
    daemon's (empty, stale locks, its own containers' state)."""
    left = sorted(p for p in sockets if os.path.lexists(p))
    for ns in sorted(namespaces):
        directory = root / ns
        try:
            entries = list(directory.iterdir())
        except OSError:
            continue
        if all(_ours_or_stale(e, bundles) for e in entries):
            left.append(directory)
            left.extend(sorted(entries))
    return left
