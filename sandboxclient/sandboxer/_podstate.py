"""What a :class:`~sandboxclient.sandboxer.ContainerSandboxer` knows of its sandboxes.

The running sandbox is containerd's: a container and task whose id is the sandbox's, in its
namespace, kept by the task's shim (its pid, its state, its exit status). What containerd
cannot know is kept here, in a :class:`PodRecord` per sandbox: the Create request's sandbox
record, rootfs mounts, netns path and annotations, which namespace it is in, and whether a
Start is under way. With a state directory the records are written down there (see
:mod:`._state`), so a sandboxer started again over it finds every sandbox and asks containerd
how each is doing; without one they live in memory, in a private directory of the
sandboxer's own that goes with it. Either way the directory holds each sandbox's output log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .._models import Mount
from .._wire._pb import SandboxPb
from ._harden import InForce
from ._podlog import DROPPED_FILE, LOG_PIPE
from ._podsignal import FirstProcess
from ._stages import mark
from ._state import StateDir, open_private, private_dir

__all__ = ("LOG_FILE", "PodEntry", "PodRecord", "PodTable")

_log = logging.getLogger("sandboxclient.sandboxer")

RECORD_VERSION: Final = 1
LOG_FILE: Final = "output.log"
"""Each isolated sandbox's stdout and stderr, in its directory (mode 0600)."""
ROOT_UPPER: Final = "root-upper"
ROOT_WORK: Final = "root-work"
"""The overlay directories of a sandbox on the default root, in its directory."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp, got {value!r}")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass
class PodRecord:
    """One isolated sandbox, as far as it can be written down."""

    namespace: str
    sandbox_id: str
    sandbox: SandboxPb
    created_at: datetime
    rootfs: tuple[Mount, ...] = ()
    netns_path: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    starting: bool = False
    """A Start was under way: a sandboxer that finds this undoes what it may have made."""
    started_at: datetime | None = None
    pid: int = 0
    exit_status: int | None = None
    exited_at: datetime | None = None
    exit_reason: str = ""
    """Why ``exit_status`` is not the process's own (255 when it could not be learned)."""
    ended_by: tuple[int, str] | None = None
    """The exit status and reason of a time limit that ended it (see :mod:`._podtimes`),
    written down before its task is killed: its exit says so whenever it is recorded, and a
    sandboxer started again finishes the ending."""

    @property
    def key(self) -> str:
        """``namespace/id``: the sandbox's name across namespaces (ids are per namespace)."""
        return f"{self.namespace}/{self.sandbox_id}"

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``sandbox.json``."""
        return {
            "version": RECORD_VERSION,
            "isolation": "container",
            "namespace": self.namespace,
            "sandbox_id": self.sandbox_id,
            "sandbox": base64.b64encode(bytes(self.sandbox)).decode("ascii"),
            "created_at": self.created_at.isoformat(),
            "rootfs": [
                {"type": m.type, "source": m.source, "target": m.target, "options": list(m.options)}
                for m in self.rootfs
            ],
            "netns_path": self.netns_path,
            "annotations": self.annotations,
            "starting": self.starting,
            "started_at": _iso(self.started_at),
            "pid": self.pid,
            "exit_status": self.exit_status,
            "exited_at": _iso(self.exited_at),
            "exit_reason": self.exit_reason,
            "ended_by": None if self.ended_by is None else list(self.ended_by),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodRecord:
        """Read a record written by :meth:`to_json`; KeyError/ValueError/TypeError if bad."""
        if data.get("version") != RECORD_VERSION or data.get("isolation") != "container":
            raise ValueError("not an isolated sandbox's record")
        created = _time(data["created_at"])
        if created is None:
            raise ValueError("no creation time")
        exit_status = data["exit_status"]
        ended_by = data.get("ended_by")  # absent from records written before it was kept
        if ended_by is not None:
            code, why = ended_by
            ended_by = (int(code), str(why))
        return cls(
            namespace=str(data["namespace"]),
            sandbox_id=str(data["sandbox_id"]),
            sandbox=SandboxPb.parse(base64.b64decode(data["sandbox"], validate=True)),
            created_at=created,
            rootfs=tuple(
                Mount(str(m["type"]), str(m["source"]), str(m["target"]), tuple(m["options"]))
                for m in data["rootfs"]
            ),
            netns_path=str(data["netns_path"]),
            annotations={str(k): str(v) for k, v in dict(data["annotations"]).items()},
            starting=bool(data["starting"]),
            started_at=_time(data["started_at"]),
            pid=int(data["pid"]),
            exit_status=None if exit_status is None else int(exit_status),
            exited_at=_time(data["exited_at"]),
            exit_reason=str(data["exit_reason"]),
            ended_by=ended_by,
        )

    def status_info(self, task_state: str, task_runtime: str, *, verbose: bool) -> dict[str, str]:
        """Status's ``info``: ``exit_reason`` when the exit status is not the process's own;
        with ``verbose``, also the namespace, runtime, isolation, task state and times."""
        info: dict[str, str] = {}
        if verbose:
            info = {
                "namespace": self.namespace,
                "runtime": self.sandbox.runtime.name if self.sandbox.runtime else "",
                "isolation": "container",
                "task_runtime": task_runtime,
                "task_state": task_state,
            }
            if self.started_at is not None:
                info["started_at"] = self.started_at.isoformat()
            if self.exit_status is not None:
                info["exit_status"] = str(self.exit_status)
            if self.netns_path:
                info["netns_path"] = self.netns_path
        if self.exit_reason:
            info["exit_reason"] = self.exit_reason
        return info


@dataclass(eq=False)
class PodEntry:
    """A sandbox's record plus what cannot be written down."""

    record: PodRecord
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the exit is known, or the sandbox was forgotten before it exited."""
    removed: bool = False
    synced: bool = True
    """False for a sandbox taken back from the state directory until containerd is asked."""
    monitor: asyncio.Task[None] | None = None
    default_process: bool = False
    """Whether its process is the sandboxer's own (which only ends on SIGTERM once its
    handler is set)."""
    first: FirstProcess | None = None
    """Its first process, when signalling that process ends it all (see :mod:`._podsignal`);
    None when only containerd's Tasks.Kill will do."""
    in_force: InForce | None = None
    """What its container's spec holds it to, once known (see :mod:`._podreport`)."""
    ending: bool = False
    """Whether a Shutdown of it is under way (its Status says so: see
    ``sandboxclient._members._ending``)."""

    @property
    def started(self) -> bool:
        """Whether its task was started (it may have exited since)."""
        return self.record.started_at is not None

    @property
    def made(self) -> bool:
        """Whether containerd may hold a container of it: started, or a Start was under way
        (or failed without proof that what it made is gone)."""
        return self.started or self.record.starting

    @property
    def running(self) -> bool:
        """Whether its task runs, as far as the exits heard so far tell."""
        return self.started and self.record.exit_status is None and not self.removed


class PodTable:
    """The isolated sandboxes of one controller, keyed by (namespace, id)."""

    def __init__(self, state_dir: str | os.PathLike[str] | None) -> None:
        self._entries: dict[tuple[str, str], PodEntry] = {}
        self._store: StateDir | None = None
        self._writing = True
        self._exits: dict[int, PodEntry] = {}
        """Exits heard whose record is still to be written (just after their waiters run)."""
        self.changed: Callable[[PodEntry], None] | None = None
        """Told of every sandbox added, written down or removed."""
        if state_dir is not None:
            self._store = StateDir(state_dir, isolation="container")
            self.base = self._store.path
            self._load()
        else:
            # Resolved once, as a state directory is: the mount table names its mounts by
            # their real paths (a symlinked /tmp), and the sweeps match paths under it.
            self.base = os.path.realpath(tempfile.mkdtemp(prefix="sandboxclient-sandboxer-"))
        private_dir(self.base, "sandboxes")

    @property
    def state_dir(self) -> str | None:
        """The state directory, or None when the records live in memory only."""
        return None if self._store is None else self._store.path

    def _load(self) -> None:
        assert self._store is not None
        for namespace, sandbox_id, data in self._store.records():
            try:
                record = PodRecord.from_json(data)
            except (KeyError, ValueError, TypeError) as exc:
                _log.warning("skipping sandbox record %s/%s: %s", namespace, sandbox_id, exc)
                continue
            entry = PodEntry(record, synced=False)
            if record.exit_status is not None:
                entry.settled.set()
            self._entries[(namespace, sandbox_id)] = entry

    def started_logs(self) -> list[tuple[str, str]]:
        """(directory, output log) of every sandbox held that was started."""
        found = []
        for entry in self._entries.values():
            if entry.started:
                record = entry.record
                where = os.path.join(self.base, "sandboxes", record.namespace, record.sandbox_id)
                found.append((where, os.path.join(where, LOG_FILE)))
        return found

    def get(self, namespace: str, sandbox_id: str) -> PodEntry | None:
        """The sandbox, or None."""
        return self._entries.get((namespace, sandbox_id))

    def ids(self, namespace: str) -> list[str]:
        """The ids of the sandboxes held in ``namespace``, sorted."""
        return sorted(sid for ns, sid in self._entries if ns == namespace)

    def entries(self) -> list[PodEntry]:
        """Every sandbox held, in every namespace."""
        return list(self._entries.values())

    def add(self, entry: PodEntry) -> None:
        """Hold a new sandbox, writing its record first (OSError if that fails)."""
        if self._store is not None:
            self._store.save(entry.record)
        self._entries[(entry.record.namespace, entry.record.sandbox_id)] = entry
        self._changed(entry)

    def _changed(self, entry: PodEntry) -> None:
        if self.changed is not None and self._writing:
            self.changed(entry)

    def save(self, entry: PodEntry) -> None:
        """Write the sandbox's record down; a failure is logged, the sandbox carries on."""
        if not entry.removed:
            self._changed(entry)
        self._write(entry)

    def _write(self, entry: PodEntry) -> None:
        self._exits.pop(id(entry), None)
        if self._store is None or not self._writing or entry.removed:
            return
        try:
            self._store.save(entry.record)
        except OSError as exc:
            _log.error("cannot record sandbox %s: %s", entry.record.sandbox_id, exc)

    def sandbox_dir(self, entry: PodEntry) -> str:
        """The sandbox's private directory (mode 0700), made if missing."""
        record = entry.record
        return private_dir(self.base, "sandboxes", record.namespace, record.sandbox_id)

    def new_log(self, entry: PodEntry) -> str:
        """An empty log file (mode 0600) for the sandbox's output; its path."""
        path = os.path.join(self.sandbox_dir(entry), LOG_FILE)
        os.close(open_private(path))
        mark("spec, state, network")
        return path

    def clear_start(self, entry: PodEntry) -> None:
        """Remove what a failed Start made in the sandbox's directory (log; the root layer
        an earlier sandboxer kept there, now a tmpfs of ``_rootdisk``'s)."""
        directory = self.sandbox_dir(entry)
        for name in (LOG_FILE, LOG_PIPE, DROPPED_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
        for name in (ROOT_UPPER, ROOT_WORK):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        with contextlib.suppress(OSError):  # when nothing else (the record) is in it
            os.rmdir(directory)

    def exited(self, entry: PodEntry, status: int, exited_at: datetime, reason: str = "") -> None:
        """Record the exit (the first one heard) and wake the waiters."""
        record = entry.record
        if record.ended_by is not None:
            status, reason = record.ended_by
        if record.exit_status is None:
            record.exit_status, record.exited_at, record.exit_reason = status, exited_at, reason
            if not entry.removed:
                self._changed(entry)
            self._exits[id(entry)] = entry
            entry.settled.set()  # the waiters first: the record is written once they are told
            try:
                asyncio.get_running_loop().call_soon(self._write_exit, entry)
            except RuntimeError:  # a caller outside the loop (never the watch's): at once
                self._write_exit(entry)
        entry.settled.set()

    def _write_exit(self, entry: PodEntry) -> None:
        if id(entry) in self._exits:  # not written since
            self._write(entry)

    def flush(self) -> None:
        """Write down every exit heard whose record is not written yet."""
        for entry in list(self._exits.values()):
            self._write(entry)

    def remove(self, entry: PodEntry) -> str:
        """Forget a sandbox, its record and its log; its waiters are answered. Its directory
        (removed) is returned."""
        entry.removed = True
        record = entry.record
        self._entries.pop((record.namespace, record.sandbox_id), None)
        directory = os.path.join(self.base, "sandboxes", record.namespace, record.sandbox_id)
        if self._writing:
            shutil.rmtree(directory, ignore_errors=True)
            with contextlib.suppress(OSError):  # only if now empty
                os.rmdir(os.path.join(self.base, "sandboxes", record.namespace))
        entry.settled.set()
        self._changed(entry)
        return directory

    def let_go(self) -> None:
        """Stop writing, answer every waiter, release the state directory; without one,
        remove the private directory."""
        self.flush()
        self._writing = False
        for entry in self._entries.values():
            entry.settled.set()
        if self._store is not None:
            self._store.close()
        else:
            shutil.rmtree(self.base, ignore_errors=True)
