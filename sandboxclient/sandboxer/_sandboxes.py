"""What a :class:`~sandboxclient.sandboxer.ProcessSandboxer` knows of its sandboxes.

Each sandbox is a :class:`SandboxEntry`: its state, which can be written down
(:class:`~._state.SandboxState`), and the live objects that cannot. The
:class:`SandboxTable` holds them, keeps their records in the state directory, takes back
those an earlier sandboxer left there, and turns what is heard of their processes into
exit statuses. Without a state directory each sandbox's files (its output, its exit) are
kept in a private directory (mode 0700) of the table's own, made when the first sandbox
starts (a table that never starts one makes none) and removed by :meth:`SandboxTable.let_go`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from datetime import datetime

from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._models import UNKNOWN_EXIT_STATUS
from ._launch import ProcWatch, SupervisedProcess, is_our_sandbox_process, is_our_supervisor
from ._spec import ProcessSpec
from ._state import SandboxState, StateDir, boot_id, read_exit
from ._supervise import LOG_FILES, exit_file

__all__ = ("SandboxEntry", "SandboxTable")

_log = logging.getLogger("sandboxclient.sandboxer")


@dataclass(eq=False)
class SandboxEntry:
    """A sandbox's state plus the live objects that cannot be written down."""

    state: SandboxState
    spec: ProcessSpec
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the process has exited, or the sandbox was forgotten before it did."""
    process: SupervisedProcess | None = None
    removed: bool = False

    @property
    def started(self) -> bool:
        """Whether a process was started for it (it may have exited since)."""
        return self.process is not None

    @property
    def running(self) -> bool:
        """Whether its process runs (as far as the exits heard so far tell)."""
        return self.process is not None and self.state.exit_status is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the sandbox's process group if it runs."""
        if self.process is not None and self.state.exit_status is None:
            self.process.signal(signum)


class SandboxTable:
    """The sandboxes of one controller, keyed by (namespace, id).

    With a state directory every sandbox is written down there (:meth:`save`), and the ones
    recorded by an earlier controller are taken back; the exits of the processes are
    recorded as they are heard (:meth:`direct_exited`, :meth:`supervisor_gone`), which wakes
    the sandbox's waiters.
    """

    def __init__(self, state_dir: str | os.PathLike[str] | None) -> None:
        self._entries: dict[tuple[str, str], SandboxEntry] = {}
        self._store: StateDir | None = None
        self._writing = False
        self._boot_id = boot_id()
        self._unwatched: list[SandboxEntry] = []
        self._scratch: str | None = None
        """Without a state directory: the private directory, once made (see :meth:`_top`)."""
        self._released = False
        if state_dir is not None:
            self._store = StateDir(state_dir)
            self._writing = True
            self._recover()
            with contextlib.suppress(RuntimeError):  # no loop yet: watch from the first call
                self.watch_recovered()

    @property
    def state_dir(self) -> str | None:
        """The state directory (absolute), or None when the sandboxes live in memory only."""
        return None if self._store is None else self._store.path

    @property
    def boot_id(self) -> str:
        """This boot's id, which records of supervised processes carry."""
        return self._boot_id

    def get(self, namespace: str, sandbox_id: str) -> SandboxEntry | None:
        """The sandbox, or None; first watches what was taken back, now there is a loop."""
        if self._unwatched:
            self.watch_recovered()
        return self._entries.get((namespace, sandbox_id))

    def add(self, entry: SandboxEntry) -> None:
        """Hold a new sandbox, writing its record first (OSError if that fails)."""
        if self._store is not None:
            self._store.save(entry.state)
        self._entries[(entry.state.namespace, entry.state.sandbox_id)] = entry

    def remove(self, entry: SandboxEntry) -> None:
        """Forget a sandbox, its record and its files; its process is no longer watched."""
        entry.removed = True
        namespace, sandbox_id = entry.state.namespace, entry.state.sandbox_id
        self._entries.pop((namespace, sandbox_id), None)
        if entry.process is not None:
            entry.process.stop_watching()
        if self._store is not None and self._writing:
            self._store.remove(namespace, sandbox_id)
        elif self._scratch is not None:
            shutil.rmtree(self.sandbox_dir(entry), ignore_errors=True)
        entry.settled.set()

    def ids(self, namespace: str) -> list[str]:
        """The ids of the sandboxes held in ``namespace``, sorted."""
        return sorted(sid for ns, sid in self._entries if ns == namespace)

    def running(self) -> list[SandboxEntry]:
        """The sandboxes whose process runs, in every namespace."""
        return [entry for entry in self._entries.values() if entry.running]

    def sandbox_dir(self, entry: SandboxEntry) -> str:
        """Where a sandbox's files go (its output, its exit)."""
        top, parts = self.sandbox_path(entry)
        return os.path.join(top, *parts)

    def directory_of(self, namespace: str, sandbox_id: str) -> str:
        """The directory of the files of sandbox ``sandbox_id`` in ``namespace``."""
        return os.path.join(self._top(), "sandboxes", namespace, sandbox_id)

    def sandbox_path(self, entry: SandboxEntry) -> tuple[str, tuple[str, ...]]:
        """The sandbox's directory as (a private top, the parts below it)."""
        return self._top(), ("sandboxes", entry.state.namespace, entry.state.sandbox_id)

    def _top(self) -> str:
        """The private top of the sandboxes' directories: the state directory, or the
        table's own directory, made (mode 0700) on first need so that a table that never
        holds a sandbox's files leaves nothing behind even if nobody lets go of it.

        RuntimeError once let go of, if it was never made: no sandbox has files any more.
        """
        if self._store is not None:
            return self._store.path
        if self._scratch is None:
            if self._released:
                raise RuntimeError("the sandboxes were let go of: they have no directory")
            self._scratch = tempfile.mkdtemp(prefix="sandboxclient-processes-")  # mode 0700
        return self._scratch

    def clear_start(self, entry: SandboxEntry) -> None:
        """Remove what a failed start left in the sandbox's directory (its output files,
        and the directory itself when nothing else is in it)."""
        directory = self.sandbox_dir(entry)
        for name in LOG_FILES:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        with contextlib.suppress(OSError):
            os.rmdir(directory)

    @property
    def tied(self) -> bool:
        """Whether the sandboxes die with this server (no state directory to outlive it)."""
        return self._store is None

    def _recover(self) -> None:
        """Take back the sandboxes recorded in the state directory."""
        assert self._store is not None
        for state in self._store.load():
            try:
                # accepted once already, by whichever rule the sandboxer that recorded it had
                spec = ProcessSpec.parse(state.sandbox.spec, refuse_unenforced=False)
            except GRPCError as exc:
                _log.warning("skipping sandbox %s/%s: %s", state.namespace, state.sandbox_id, exc)
                continue
            entry = SandboxEntry(state, spec)
            if state.supervisor_pid:
                entry.process = SupervisedProcess(
                    state.supervisor_pid, state.supervisor_start, state.pid, state.pid_start
                )
                if state.exit_status is None:
                    self._unwatched.append(entry)
            if state.exit_status is not None:
                entry.settled.set()
            self._entries[(state.namespace, state.sandbox_id)] = entry

    def watch_recovered(self) -> None:
        """Watch the supervisors of recovered sandboxes; RuntimeError outside the event loop."""
        if not self._unwatched:
            return
        loop = asyncio.get_running_loop()
        entries, self._unwatched = self._unwatched, []
        for entry in entries:
            proc = entry.process
            assert isinstance(proc, SupervisedProcess)
            same_boot = entry.state.boot_id == self._boot_id
            proc.trusted = same_boot and is_our_supervisor(
                proc.supervisor_pid, proc.supervisor_start, self.sandbox_dir(entry)
            )
            if not proc.trusted:  # the machine rebooted since, or the pid is another's now
                loop.call_soon(self.supervisor_gone, entry, proc, None)
                continue
            gone = functools.partial(self.supervisor_gone, entry, proc, None)
            proc.watch = ProcWatch(proc.supervisor_pid, proc.supervisor_start, gone)

    def save(self, entry: SandboxEntry) -> None:
        """Write the sandbox's record down; a failure is logged, the sandbox carries on."""
        if self._store is None or not self._writing or entry.removed:
            return
        try:
            self._store.save(entry.state)
        except OSError as exc:
            _log.error("cannot record sandbox %s: %s", entry.state.sandbox_id, exc)

    # --- exits -------------------------------------------------------------------------------

    def _exited(
        self, entry: SandboxEntry, status: int, exited_at: datetime, reason: str = ""
    ) -> None:
        """Record the exit and wake the waiters."""
        if entry.state.exit_status is not None:
            return
        entry.state.exit_status = status
        entry.state.exited_at = exited_at
        entry.state.exit_reason = reason
        self.save(entry)
        entry.settled.set()

    def supervisor_gone(
        self, entry: SandboxEntry, proc: SupervisedProcess, returncode: int | None
    ) -> None:
        """A sandbox's supervisor is gone: take the exit it wrote down, or report 255."""
        if entry.process is not proc or entry.state.exit_status is not None:
            return
        if entry.removed or (self._store is not None and not self._writing):
            return  # forgotten, or let go of: not ours any more
        proc.stop_watching()
        record = read_exit(exit_file(self.sandbox_dir(entry), proc.supervisor_pid))
        if record is not None:
            if not entry.state.pid and record.pid:
                entry.state.pid = proc.pid = record.pid
            self._exited(entry, record.exit_status, record.exited_at, record.reason)
            return
        if returncode is None:
            how = "exited"
        elif returncode < 0:
            how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with status {returncode}"
        reason = (
            f"the supervisor (pid {proc.supervisor_pid}) {how} without recording the exit "
            f"status of the sandbox process (pid {proc.pid or 'unknown'})"
        )
        same_boot = entry.state.boot_id == self._boot_id
        if (
            same_boot
            and proc.trusted
            and is_our_sandbox_process(proc.pid, proc.pid_start, proc.supervisor_start)
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            reason += "; the process was still running and was killed"
            final = reason
            proc.watch = ProcWatch(
                proc.pid,
                proc.pid_start,
                lambda: self._exited(entry, UNKNOWN_EXIT_STATUS, utcnow(), final),
            )
            return
        self._exited(entry, UNKNOWN_EXIT_STATUS, utcnow(), reason)

    def let_go(self) -> None:
        """Stop writing and watching; answer every waiter; release the state directory."""
        self._unwatched.clear()
        self._writing = False
        for entry in self._entries.values():
            if entry.process is not None:
                entry.process.stop_watching()
            entry.settled.set()
        if self._store is not None:
            self._store.close()
        self._released = True
        if self._scratch is not None:  # kept: what directory_of() names no longer exists
            shutil.rmtree(self._scratch, ignore_errors=True)
