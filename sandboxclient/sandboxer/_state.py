"""What a :class:`~sandboxclient.sandboxer.ProcessSandboxer` writes down about its sandboxes.

Layout of a state directory::

    DIR/lock                                held (flock) by the sandboxer using DIR
    DIR/sandboxes/NAMESPACE/ID/sandbox.json one record per sandbox, replaced atomically
    DIR/sandboxes/NAMESPACE/ID/exit.PID     how the process ended, by its supervisor (PID)

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .._pb import SandboxPb

__all__ = (
    "SandboxState",
    "StateDir",
    "StateDirBusyError",
    "boot_id",
    "read_exit",
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


def write_json(path: str, data: object) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


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
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
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


class StateDir:
    """A state directory, locked for as long as this object is open."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.sandboxes = os.path.join(self.path, "sandboxes")
        os.makedirs(self.sandboxes, mode=0o700, exist_ok=True)
        self._lock: int | None = os.open(
            os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock)
            self._lock = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirBusyError(
                    errno.EBUSY, "state directory in use by another sandboxer", self.path
                ) from None
            raise

    def sandbox_dir(self, namespace: str, sandbox_id: str) -> str:
        """The directory of one sandbox's files."""
        return os.path.join(self.sandboxes, namespace, sandbox_id)

    def save(self, state: SandboxState) -> None:
        """Write ``state``'s record (creating its directory)."""
        directory = self.sandbox_dir(state.namespace, state.sandbox_id)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        write_json(os.path.join(directory, RECORD_FILE), state.to_json())

    def remove(self, namespace: str, sandbox_id: str) -> None:
        """Forget one sandbox: its record and exit files."""
        shutil.rmtree(self.sandbox_dir(namespace, sandbox_id), ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(self.sandboxes, namespace))  # only if now empty

    def load(self) -> Iterator[SandboxState]:
        """Every readable record; unreadable ones are logged and left where they are."""
        for namespace in sorted(os.listdir(self.sandboxes)):
            ns_dir = os.path.join(self.sandboxes, namespace)
            if not os.path.isdir(ns_dir):
                continue
            for sandbox_id in sorted(os.listdir(ns_dir)):
                path = os.path.join(ns_dir, sandbox_id, RECORD_FILE)
                try:
                    with open(path, encoding="utf-8") as f:
                        state = SandboxState.from_json(json.load(f))
                except FileNotFoundError:
                    continue
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    _log.warning("skipping unreadable sandbox record %s: %s", path, exc)
                    continue
                if (state.namespace, state.sandbox_id) != (namespace, sandbox_id):
                    _log.warning("skipping misplaced sandbox record %s", path)
                    continue
                yield state

    def close(self) -> None:
        """Release the lock; idempotent."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
