"""Keeping an isolating sandboxer's knowledge of its sandboxes in step with containerd.

:class:`PodWatch` watches each running sandbox's task (one wait per task, through the
namespace's Client, riding out containerd's restarts) and records its exit; asks containerd
how a sandbox taken back from the state directory is doing (:meth:`PodWatch.sync`), undoing
a Start a killed sandboxer left half done; kills a sandbox's every process and waits for its
exit; and, when the sandboxer closes, kills them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final

from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._models import UNKNOWN_EXIT_STATUS
from .._process_models import TaskState
from .._serve._refusals import unavailable
from ._pods import PodRuntime
from ._podstate import PodEntry, PodTable
from ._stages import mark

__all__ = ("PodWatch", "handles_sigterm")

_CLOSE_GRACE: Final = 10.0
_KILL_GRACE: Final = 30.0
_READY_WITHIN: Final = 2.0
_READY_INTERVAL: Final = 0.002
_SIGTERM_BIT: Final = 1 << (15 - 1)


def _catches_sigterm(pid: int, args: Sequence[str]) -> bool | None:
    """Whether ``pid`` runs ``args`` and has a SIGTERM handler; None once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        # Until its exec the process is runc's init, a Go program that catches every signal
        # but dies of none as PID 1: its SigCgt must not be taken for the shell's trap.
        if cmdline.split(b"\0")[:-1] != [arg.encode() for arg in args]:
            return False
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & _SIGTERM_BIT)
    except (OSError, ValueError):
        return None
    return None


async def handles_sigterm(pid: int, args: Sequence[str], within: float = _READY_WITHIN) -> None:
    """Return once the default process ``args`` (PID 1 of its namespace, which the kernel
    spares any signal it has no handler for) has set its SIGTERM handler, so that a Stop right
    after Start ends it at once; give up after ``within`` seconds, or if it is gone."""
    # Nothing tells of a handler being set but /proc: look a bounded number of times (the
    # shell sets its trap within a few ms of its exec, seconds on a loaded host).
    checks = max(1, round(within / _READY_INTERVAL))
    for _ in range(checks):
        if _catches_sigterm(pid, args) is not False:
            break
        await asyncio.sleep(_READY_INTERVAL)
    mark("default process's SIGTERM trap")


_log = logging.getLogger("sandboxclient.sandboxer")


class PodWatch:
    """The sandboxes of ``table`` as ``runtime`` (containerd) sees them."""

    def __init__(self, table: PodTable, runtime: PodRuntime) -> None:
        self._table = table
        self._runtime = runtime
        self._monitors: set[asyncio.Task[None]] = set()
        self.closing = False
        """Set when the sandboxer closes: a wait cut short then records nothing."""
        self.detached = False
        """Set when the sandboxer lets go: nothing more is recorded."""
        self._over = False
        """Set by :meth:`cancel`: no watch begins after it (none would be cancelled)."""

    @property
    def watching(self) -> bool:
        """Whether any sandbox is still being watched."""
        return bool(self._monitors)

    async def sync(self, entry: PodEntry) -> None:
        """Learn from containerd how a sandbox taken back from the state directory is."""
        record = entry.record
        ns, sid = record.namespace, record.sandbox_id
        if record.starting:  # the last sandboxer died in the middle of a Start: undo it
            await self._runtime.remove(ns, sid)
            record.starting = False
            record.started_at = None
            self._table.save(entry)
        elif entry.started and record.exit_status is None:
            status = await self._runtime.status(ns, sid)
            if status is None:
                self._table.exited(
                    entry,
                    UNKNOWN_EXIT_STATUS,
                    utcnow(),
                    "the sandbox's task is gone from containerd: its exit status is unknown",
                )
            elif status.state is TaskState.STOPPED:
                code = UNKNOWN_EXIT_STATUS if status.returncode is None else status.returncode
                self._table.exited(entry, code, status.exited_at or utcnow())
            else:
                self.watch(entry)
        entry.synced = True

    def watch(self, entry: PodEntry) -> None:
        """Wait, in the background, for the sandbox's task to exit, and record the exit;
        nothing once the watches were cancelled (a sync that ends after the close: the
        sandbox is let go of, as the others are)."""
        if self._over:
            return
        task = asyncio.create_task(
            self._monitor(entry), name=f"sandboxclient.sandboxer.watch.{entry.record.sandbox_id}"
        )
        entry.monitor = task
        self._monitors.add(task)
        task.add_done_callback(self._monitors.discard)

    async def _monitor(self, entry: PodEntry) -> None:
        """Record the task's exit once containerd tells it; ride out containerd's absence."""
        record = entry.record
        delay = 0.1
        while True:
            try:
                status = await self._runtime.wait(record.namespace, record.sandbox_id)
                break
            except GRPCError as exc:
                _log.warning("waiting for sandbox %s: %s", record.sandbox_id, exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if entry.removed or self.detached:
            return
        if status is None:
            self._table.exited(
                entry, UNKNOWN_EXIT_STATUS, utcnow(), "the sandbox's task is gone from containerd"
            )
        elif status.error is None:
            self._table.exited(entry, status.returncode, status.exited_at or utcnow())
        elif not self.closing:
            reason = f"its exit status could not be learned: {status.error}"
            self._table.exited(entry, UNKNOWN_EXIT_STATUS, utcnow(), reason)

    async def kill(self, entry: PodEntry) -> None:
        """SIGKILL every process of the sandbox's task and wait (bounded) for its exit."""
        record = entry.record
        await self._runtime.stop(record.namespace, record.sandbox_id)
        await self.killed(entry)

    async def killed(self, entry: PodEntry) -> None:
        """Wait for the exit of a sandbox sent SIGKILL: UNAVAILABLE if it is not heard
        within :data:`_KILL_GRACE` s."""
        record = entry.record
        try:
            async with asyncio.timeout(_KILL_GRACE):
                await entry.settled.wait()
        except TimeoutError:
            raise unavailable(
                f"sandbox {go_quote(record.sandbox_id)} did not exit {_KILL_GRACE:g} s after "
                "SIGKILL"
            ) from None

    async def close(self, *, delete: bool) -> None:
        """Kill every sandbox still running and wait (bounded) for their exits; with
        ``delete``, also delete the containers of every sandbox that has some (started, or
        left by a failed Start); a Shutdown under way is let finish first (bounded). The
        controller has let every Start end before (``._podstarts``)."""
        self.closing = True
        entries = self._table.entries()
        for entry in entries:
            if entry.running:
                with contextlib.suppress(GRPCError):
                    await self._runtime.stop(entry.record.namespace, entry.record.sandbox_id)
        running = [e for e in entries if e.running]
        if running:
            waits = [asyncio.ensure_future(e.settled.wait()) for e in running]
            await asyncio.wait(waits, timeout=_CLOSE_GRACE)
            for task in waits:
                task.cancel()
        busy = [e for e in entries if e.lock.locked()]
        if busy:
            # A Shutdown under way cleans up after itself: let it, while the
            # connections it needs are still open (bounded, as the exits above are).
            frees = [asyncio.ensure_future(_released(e.lock)) for e in busy]
            await asyncio.wait(frees, timeout=_CLOSE_GRACE)
            for free in frees:
                free.cancel()
        if delete:
            for entry in entries:
                # A Shutdown under way (holding the lock) removes its own.
                if entry.made and not entry.lock.locked():
                    record = entry.record
                    with contextlib.suppress(GRPCError):
                        await self._runtime.remove(record.namespace, record.sandbox_id)

    def cancel(self) -> None:
        """Stop watching every sandbox (their tasks run on), for good: no watch begins after."""
        self._over = True
        for task in list(self._monitors):
            task.cancel()

    async def stopped(self) -> None:
        """Return once every watch has ended (after :meth:`cancel`)."""
        await asyncio.gather(*self._monitors, return_exceptions=True)


async def _released(lock: asyncio.Lock) -> None:
    """Return once ``lock`` is free (taking it and letting it go at once)."""
    async with lock:
        pass
