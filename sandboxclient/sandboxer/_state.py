"""What a :class:`~sandboxclient.sandboxer.ProcessSandboxer` writes down about its sandboxes.

Layout of a state directory::

    DIR/lock                                held (flock) by the sandboxer using DIR
    DIR/isolation                           "none" or "container": which sandboxer's it is
    DIR/sandboxes/NAMESPACE/ID/sandbox.json one record per sandbox, replaced atomically
    DIR/sandboxes/NAMESPACE/ID/exit.PID     how the process ended, by its supervisor (PID)
    DIR/sandboxes/NAMESPACE/ID/stdout|stderr what a process sandbox writes
    DIR/sandboxes/NAMESPACE/ID/output.log   what an isolated sandbox writes (its shim appends)
    DIR/rootfs                              the isolated sandboxes' default root filesystem

The directory is the sandboxer's alone: it must be owned by the sandboxer's uid and not
writable by group or others (:class:`StateDirError` otherwise, before anything is read), its
subdirectories are made mode 0700 and its files 0600 whatever the umask, and a record or
exit file found owned by another uid or writable by others is ignored (logged), never
believed.

Namespaces and ids are containerd identifiers (letters, digits and single ``.``, ``_``, ``-``
between them), so they are safe as path components. Files are written to a temporary name
and renamed over the old one, so a reader sees the old or the new record, never half of one;
they are not fsynced: what they guard against is the sandboxer's death, not the machine's,
whose reboot takes the sandbox processes with it anyway (the boot id in each record tells).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from .._facts._validation import identifier_problem
from .._wire._pb import SandboxPb

__all__ = (
    "SandboxState",
    "StateDir",
    "StateDirBusyError",
    "StateDirError",
    "boot_id",
    "open_private",
    "private_dir",
    "read_exit",
    "read_private_json",
    "write_json",
)

_log = logging.getLogger("sandboxclient.sandboxer")

RECORD_VERSION: Final = 1
RECORD_FILE: Final = "sandbox.json"
PHASE_CREATED: Final = "created"
PHASE_STARTING: Final = "starting"
PHASE_RUNNING: Final = "running"
PHASE_EXITED: Final = "exited"


@dataclass
class SandboxState:
    """What there is to know about one sandbox, in a form that can be written down.

    ``pid`` is the sandbox process, which leads a session and process group of its own (its
    pgid is its pid); ``supervisor_pid`` the process that waits for it when the controller
    has a state directory. ``*_start`` are start times in clock ticks since boot, from
    /proc: with ``boot_id`` they tell a live process from a later one that got the same pid.
    """

    namespace: str
    sandbox_id: str
    sandbox: SandboxPb
    created_at: datetime
    netns_path: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    started_at: datetime | None = None
    exit_status: int | None = None
    exited_at: datetime | None = None
    exit_reason: str = ""
    """Why ``exit_status`` is not the process's own (255 when it could not be learned)."""
    pid_start: int = 0
    supervisor_pid: int = 0
    supervisor_start: int = 0
    boot_id: str = ""

    @property
    def phase(self) -> str:
        """``created``, ``starting`` (supervisor spawned, no pid yet), ``running``, ``exited``."""
        if self.exit_status is not None:
            return PHASE_EXITED
        if self.pid:
            return PHASE_RUNNING
        if self.supervisor_pid:
            return PHASE_STARTING
        return PHASE_CREATED

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``sandbox.json``."""
        return {
            "version": RECORD_VERSION,
            "namespace": self.namespace,
            "sandbox_id": self.sandbox_id,
            "state": self.phase,
            "sandbox": base64.b64encode(bytes(self.sandbox)).decode("ascii"),
            "labels": dict(self.sandbox.labels),
            "created_at": self.created_at.isoformat(),
            "netns_path": self.netns_path,
            "annotations": self.annotations,
            "pid": self.pid,
            "pgid": self.pid,
            "pid_start": self.pid_start,
            "supervisor_pid": self.supervisor_pid,
            "supervisor_start": self.supervisor_start,
            "boot_id": self.boot_id,
            "started_at": _iso(self.started_at),
            "exit_status": self.exit_status,
            "exited_at": _iso(self.exited_at),
            "exit_reason": self.exit_reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxState:
        """Read a record written by :meth:`to_json`; KeyError/ValueError/TypeError if bad."""
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"unknown record version {data.get('version')!r}")
        exit_status = data["exit_status"]
        return cls(
            namespace=str(data["namespace"]),
            sandbox_id=str(data["sandbox_id"]),
            sandbox=SandboxPb.parse(base64.b64decode(data["sandbox"], validate=True)),
            created_at=_datetime(data["created_at"]),
            netns_path=str(data["netns_path"]),
            annotations={str(k): str(v) for k, v in dict(data["annotations"]).items()},
            pid=int(data["pid"]),
            started_at=_maybe_datetime(data["started_at"]),
            exit_status=None if exit_status is None else int(exit_status),
            exited_at=_maybe_datetime(data["exited_at"]),
            exit_reason=str(data["exit_reason"]),
            pid_start=int(data["pid_start"]),
            supervisor_pid=int(data["supervisor_pid"]),
            supervisor_start=int(data["supervisor_start"]),
            boot_id=str(data["boot_id"]),
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp, got {value!r}")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _maybe_datetime(value: object) -> datetime | None:
    return None if value is None else _datetime(value)


def boot_id() -> str:
    """This boot's random id (empty where /proc does not tell)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def private_dir(top: str, *parts: str) -> str:
    """``top``/``parts``..., each level below ``top`` made (or narrowed to) mode 0700
    whatever the umask; StateDirError if one is not a directory of this uid's own."""
    path = top
    for part in parts:
        path = os.path.join(path, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise StateDirError(errno.EPERM, "not a directory of this sandboxer's own", path)
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)
    return path


def open_private(path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """Open (creating) a file only this uid can read or write: mode 0600, no symlink."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_json(path: str, data: object) -> None:
    """Write ``data`` as JSON to ``path`` (mode 0600) through a temporary file and a rename."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    payload = memoryview(json.dumps(data, separators=(",", ":")).encode())  # one write
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        while payload:
            payload = payload[os.write(fd, payload) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_private_json(path: str) -> Any:
    """The JSON in ``path`` if this uid owns it and nobody else may write it; else None.

    Raises FileNotFoundError when there is no file, OSError/ValueError when it is unreadable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            _log.warning(
                "ignoring %s: owned by uid %d, mode %o (not this sandboxer's own)",
                path,
                info.st_uid,
                stat.S_IMODE(info.st_mode),
            )
            return None
        return json.loads(f.read())


@dataclass(frozen=True)
class ExitRecord:
    """What a supervisor wrote about its process's end."""

    exit_status: int
    exited_at: datetime
    pid: int
    reason: str


def read_exit(path: str) -> ExitRecord | None:
    """The exit file at ``path``, or None if there is none (or it cannot be read)."""
    try:
        data = read_private_json(path)
        if data is None:
            return None
        return ExitRecord(
            exit_status=int(data["exit_status"]),
            exited_at=datetime.fromtimestamp(int(data["exited_at_ns"]) / 1e9, UTC),
            pid=int(data.get("pid", 0)),
            reason=str(data.get("reason", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _log.warning("unreadable exit file %s: %s", path, exc)
        return None


class StateDirBusyError(OSError):
    """Another live sandboxer holds the state directory."""


class StateDirError(OSError):
    """The state directory is not the sandboxer's alone, or belongs to another kind of
    sandboxer: it is refused before anything in it is read."""


class Record(Protocol):
    """What :meth:`StateDir.save` writes down: a sandbox's record."""

    @property
    def namespace(self) -> str:
        """The sandbox's namespace."""
        ...

    @property
    def sandbox_id(self) -> str:
        """The sandbox's id."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The record as JSON."""
        ...


def check_state_root(path: str) -> None:
    """Make ``path`` (mode 0700) if missing; refuse it unless this uid owns it and neither
    group nor others may write to it or to a directory above it, sticky ones aside
    (StateDirError, saying what to change).

    Missing parents are made mode 0755 whatever the umask, so nobody else can swap the
    directory out from under the sandboxer.
    """
    missing: list[str] = []
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    if parent:
        _check_ancestors(os.path.join(parent, "x"), path)  # before anything is made
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
            os.chmod(directory, 0o755)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(errno.ENOTDIR, "the state directory is not a directory", path)
    if info.st_uid != os.geteuid():
        raise StateDirError(
            errno.EPERM,
            f"the state directory is owned by uid {info.st_uid}, not by this sandboxer's uid "
            f"{os.geteuid()}: give it a directory of its own",
            path,
        )
    if info.st_mode & 0o022:
        raise StateDirError(
            errno.EPERM,
            f"the state directory is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): chmod go-w it, or give it a directory of its "
            "own",
            path,
        )
    _check_ancestors(path, path)


def _check_ancestors(below: str, path: str) -> None:
    """Refuse the state directory ``path`` if someone else could move or replace it: each
    directory above ``below`` must belong to root or to this uid, and be writable by nobody
    else unless it is sticky (as /tmp is, where others cannot rename what is not theirs)."""
    directory = os.path.dirname(os.path.realpath(below))
    while True:
        info = os.stat(directory)
        if info.st_uid not in (0, os.geteuid()):
            raise StateDirError(
                errno.EPERM,
                f"the state directory is inside {directory}, owned by uid {info.st_uid}: "
                "whoever owns a directory above it can replace it; give it a directory of its "
                "own",
                path,
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise StateDirError(
                errno.EPERM,
                f"the state directory is inside {directory}, writable by group or others "
                f"without the sticky bit (mode {stat.S_IMODE(info.st_mode):04o}): they could "
                "replace it; give it a directory of its own",
                path,
            )
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


ISOLATION_FILE: Final = "isolation"


class StateDir:
    """A state directory, locked for as long as this object is open.

    ``isolation`` names the sandboxer it belongs to (``"none"``, the process sandboxer,
    whose directories from before the name was written down have none; ``"container"``):
    a directory of the other kind is refused (:class:`StateDirError`).
    """

    def __init__(self, path: str | os.PathLike[str], *, isolation: str = "none") -> None:
        # Resolved once: a symbolic link on the way, in a directory nobody checked, could
        # be pointed elsewhere later.
        self.path = os.path.realpath(os.fspath(path))
        self.isolation = isolation
        check_state_root(self.path)
        self.sandboxes = private_dir(self.path, "sandboxes")
        self._lock: int | None = open_private(
            os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT
        )
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirBusyError(
                    errno.EBUSY, "state directory in use by another sandboxer", self.path
                ) from None
            raise
        try:
            self._check_isolation()
        except BaseException:
            self.close()
            raise

    def _check_isolation(self) -> None:
        marker = os.path.join(self.path, ISOLATION_FILE)
        try:
            found: Any = read_private_json(marker)
        except FileNotFoundError:
            found = "none" if os.listdir(self.sandboxes) else None
        except (OSError, ValueError) as exc:
            raise StateDirError(
                errno.EINVAL, f"unreadable {ISOLATION_FILE} file: {exc}", self.path
            ) from None
        if found is None:
            write_json(marker, self.isolation)
        elif found != self.isolation:
            raise StateDirError(
                errno.EINVAL,
                f"the state directory belongs to a sandboxer with --isolation {found}, not "
                f"{self.isolation}",
                self.path,
            )

    def sandbox_dir(self, namespace: str, sandbox_id: str) -> str:
        """The directory of one sandbox's files."""
        return os.path.join(self.sandboxes, namespace, sandbox_id)

    def private_sandbox_dir(self, namespace: str, sandbox_id: str) -> str:
        """The directory of one sandbox's files, made (mode 0700) if missing."""
        return private_dir(self.sandboxes, namespace, sandbox_id)

    def save(self, state: Record) -> None:
        """Write ``state``'s record (creating its directory)."""
        directory = self.private_sandbox_dir(state.namespace, state.sandbox_id)
        write_json(os.path.join(directory, RECORD_FILE), state.to_json())

    def remove(self, namespace: str, sandbox_id: str) -> None:
        """Forget one sandbox: its record and exit files."""
        shutil.rmtree(self.sandbox_dir(namespace, sandbox_id), ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(self.sandboxes, namespace))  # only if now empty

    def records(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(namespace, id, JSON) of every record this sandboxer can trust; the others (not
        its own, unreadable) are logged and left where they are."""
        for namespace in sorted(os.listdir(self.sandboxes)):
            ns_dir = os.path.join(self.sandboxes, namespace)
            if identifier_problem(namespace) is not None or not os.path.isdir(ns_dir):
                continue
            private_dir(self.sandboxes, namespace)
            for sandbox_id in sorted(os.listdir(ns_dir)):
                if identifier_problem(sandbox_id) is not None:
                    continue
                path = os.path.join(ns_dir, sandbox_id, RECORD_FILE)
                try:
                    private_dir(ns_dir, sandbox_id)
                    data = read_private_json(path)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as exc:
                    _log.warning("skipping unreadable sandbox record %s: %s", path, exc)
                    continue
                if not isinstance(data, dict):
                    continue
                if (data.get("namespace"), data.get("sandbox_id")) != (namespace, sandbox_id):
                    _log.warning("skipping misplaced sandbox record %s", path)
                    continue
                yield namespace, sandbox_id, data

    def load(self) -> Iterator[SandboxState]:
        """Every readable process-sandbox record (see :meth:`records`)."""
        for _, _, data in self.records():
            try:
                yield SandboxState.from_json(data)
            except (ValueError, KeyError, TypeError) as exc:
                _log.warning(
                    "skipping unreadable sandbox record of %s/%s: %s",
                    data.get("namespace"),
                    data.get("sandbox_id"),
                    exc,
                )

    def close(self) -> None:
        """Release the lock; idempotent."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
