"""The isolating sandboxer's enforcement of its sandboxes' time limits.

A sandbox's limits are labels of its record (:mod:`._timelimits`), which the sandboxer keeps
in its state directory: :class:`PodTimes` arms them whenever the record is written (Create,
Update, a sandboxer started again over its state), in one :class:`~._timelimits.Timer`.

- **Lifetime.** At its deadline (at once, if it passed while the sandboxer was down) the
  sandbox is ended, started or not.
- **Idle.** The sandboxer follows containerd's ``/tasks/exec-started`` and ``/tasks/exit``
  events (one subscription, every namespace): an exec into the sandbox's task or a member's
  is activity, and the sandbox is idle only while none runs. ``idle_timeout`` seconds after
  the last one ended (or after Create, or after the sandboxer started) it is ended. What
  the events cannot show is not seen: activity while the sandboxer was down or while its
  subscription was broken (its clock then starts again from that moment), and anything but
  an exec (a process the sandbox runs by itself, traffic to its ports). Before ending a
  sandbox for idleness, containerd is asked whether an exec's process runs in it after all
  (one begun before a restart): if so, it is looked at again one ``idle_timeout`` later.

Ending a sandbox, whether or not a client is connected: its exit is recorded as
:data:`~sandboxclient.LIFETIME_EXIT_STATUS` or :data:`~sandboxclient.IDLE_EXIT_STATUS` (with
the reason in Status' ``exit_reason``) and its task is killed (SIGKILL, every process); a
Wait is made through containerd, so that containerd publishes ``/sandboxes/exit`` with that
status; then it is shut down as a client's ``Sandbox.shutdown()`` does, through containerd:
its members (with their snapshots), its own task and container, network, user namespace
pin, shim, and its record in containerd's store. A step that fails (containerd away) is
tried again, every :data:`RETRY_AFTER` seconds, until the sandbox is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from grpclib.exceptions import GRPCError

from .._clock import utcnow
from .._lifetime import IDLE_EXIT_STATUS, LIFETIME_EXIT_STATUS, deadline_text
from .._serve._server import request_scope
from .._wire._pb import sandbox_pb
from .._wirenames import NAMESPACE_HEADER
from ..errors import ContainerdError, NotFoundError
from ..events import Event, EventsLagged, EventsReconnected, TaskExecStarted, TaskExit
from ._pods import PodRuntime
from ._podstate import PodEntry, PodTable
from ._podwatch import PodWatch
from ._timelimits import TimeLimits, Timer, loop_time_of, time_limits

__all__ = ("RETRY_AFTER", "PodTimes")

RETRY_AFTER: Final = 5.0
"""Seconds before a sandbox whose ending failed part way is tried again."""

_EXIT_WAIT: Final = 10.0
_PROCESS_DETAILS: Final = "containerd.runc.v1.ProcessDetails"
_TOPICS: Final = ('topic=="/tasks/exec-started"', 'topic=="/tasks/exit"')
_log = logging.getLogger("sandboxclient.sandboxer")

Shutdown = Callable[[sandbox_pb.ControllerShutdownRequest], Awaitable[object]]


@dataclass(eq=False)
class _Clock:
    """One sandbox's limits and what the events told of its activity."""

    limits: TimeLimits
    last_active: float
    busy: set[tuple[str, str]] = field(default_factory=set)
    """The (container id, exec id) of the execs running in it, as the events tell."""
    ending: asyncio.Task[None] | None = None

    def idle_at(self) -> float | None:
        """When (loop time) it becomes too idle, or None (no idle limit, or an exec runs)."""
        if self.limits.idle_timeout is None or self.busy:
            return None
        return self.last_active + self.limits.idle_timeout


class PodTimes:
    """Every time limit of the sandboxes in ``table``, and their ending.

    ``shutdown`` is the sandboxer's own Shutdown, used when containerd no longer has the
    sandbox's record (so no ``Sandbox.shutdown()`` can be made through it).
    """

    def __init__(
        self, table: PodTable, runtime: PodRuntime, watch: PodWatch, shutdown: Shutdown
    ) -> None:
        self._table = table
        self._runtime = runtime
        self._watch = watch
        self._shutdown = shutdown
        self._clocks: dict[PodEntry, _Clock] = {}
        self._timer: Timer[PodEntry] = Timer(self._due)
        self._members: dict[tuple[str, str], str] = {}
        self._follower: asyncio.Task[None] | None = None
        self._closed = False
        self._unarmed = True
        table.changed = self.arm
        with contextlib.suppress(RuntimeError):  # without a loop yet: at the first write
            self._arm_all()

    def _arm_all(self) -> None:
        asyncio.get_running_loop()  # RuntimeError outside the event loop, before any change
        self._unarmed = False
        for entry in self._table.entries():
            self.arm(entry)

    # --- arming ------------------------------------------------------------------------------

    def arm(self, entry: PodEntry) -> None:
        """(Re)arm ``entry``'s limits from its record; forget it once it is removed."""
        if self._closed:
            return
        if self._unarmed:
            self._arm_all()
        clock = self._clocks.get(entry)
        if entry.removed:
            if clock is not None and clock.ending is None:
                del self._clocks[entry]
                self._timer.set(entry, None)
                ns, sid = entry.record.namespace, entry.record.sandbox_id
                self._members = {k: v for k, v in self._members.items() if (k[0], v) != (ns, sid)}
            return
        try:
            limits = time_limits(entry.record.sandbox)
        except GRPCError as exc:  # refused at Create and Update: only a record edited by hand
            _log.warning("sandbox %s: ignoring its time limits: %s", entry.record.key, exc.message)
            limits = TimeLimits()
        if not limits.any and clock is None:
            return
        loop = asyncio.get_running_loop()
        if clock is None:
            clock = self._clocks[entry] = _Clock(limits, loop.time())
        clock.limits = limits
        if limits.idle_timeout is not None:
            self._follow_execs()
        self._reschedule(entry, clock)

    def _reschedule(self, entry: PodEntry, clock: _Clock) -> None:
        if clock.ending is not None:
            return  # armed again when it ends, if it must be
        loop = asyncio.get_running_loop()
        times = [clock.idle_at()]
        if clock.limits.deadline is not None:
            times.append(loop_time_of(clock.limits.deadline, loop))
        due = [t for t in times if t is not None]
        self._timer.set(entry, min(due) if due else None)

    def status_info(self, entry: PodEntry) -> dict[str, str]:
        """Status ``info`` entries: ``deadline``, ``idle_timeout`` and, while no exec runs,
        ``idle_deadline`` (each an RFC 3339 time in UTC, the timeout in seconds)."""
        if self._unarmed:
            self._arm_all()
        clock = self._clocks.get(entry)
        if clock is None:
            return {}
        info = clock.limits.info()
        idle_at = clock.idle_at()
        if idle_at is not None:
            left = idle_at - asyncio.get_running_loop().time()
            info["idle_deadline"] = deadline_text(utcnow() + timedelta(seconds=left))
        return info

    # --- activity ----------------------------------------------------------------------------

    def _follow_execs(self) -> None:
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(
                self._follow(), name="sandboxclient.sandboxer.idle-events"
            )

    async def _follow(self) -> None:
        """Follow the execs of every namespace while a sandbox has an idle limit."""
        while not self._closed:
            entries = [e for e, c in self._clocks.items() if c.limits.idle_timeout is not None]
            if not entries:
                return
            client = self._runtime.client(entries[0].record.namespace)
            try:
                async with client.events(*_TOPICS, all_namespaces=True) as stream:
                    async for item in stream:
                        if isinstance(item, Event):
                            await self._heard(item)
                        elif isinstance(item, EventsLagged | EventsReconnected):
                            self._lost_track()
            except ContainerdError as exc:
                _log.warning("following execs for idle timeouts: %s", exc)
                self._lost_track()
                await asyncio.sleep(RETRY_AFTER)

    async def _heard(self, event: Event) -> None:
        payload = event.payload
        if not isinstance(payload, TaskExecStarted | TaskExit):
            return
        if isinstance(payload, TaskExit) and payload.id in ("", payload.container_id):
            return  # a task's own exit, not an exec's
        sandbox_id = await self._sandbox_of(event.namespace, payload.container_id)
        entry = self._table.get(event.namespace, sandbox_id) if sandbox_id else None
        clock = None if entry is None else self._clocks.get(entry)
        if entry is None or clock is None:
            return
        exec_id = payload.exec_id if isinstance(payload, TaskExecStarted) else payload.id
        if isinstance(payload, TaskExecStarted):
            clock.busy.add((payload.container_id, exec_id))
        else:
            clock.busy.discard((payload.container_id, exec_id))
        clock.last_active = asyncio.get_running_loop().time()
        self._reschedule(entry, clock)

    async def _sandbox_of(self, namespace: str, container_id: str) -> str:
        """The id of the sandbox whose task or member ``container_id`` is ("" if none)."""
        if self._table.get(namespace, container_id) is not None:
            return container_id
        key = (namespace, container_id)
        if key not in self._members:
            try:
                found = await self._runtime.client(namespace).load_container(container_id)
                self._members[key] = found.metadata.sandbox_id
            except ContainerdError:
                return ""  # gone already (a short exec's container), or containerd away
        return self._members[key]

    def _lost_track(self) -> None:
        """Events may have been missed: no exec is known to run, and each idle clock starts
        again now (never earlier than it would have)."""
        now = asyncio.get_running_loop().time()
        for entry, clock in self._clocks.items():
            if clock.limits.idle_timeout is not None:
                clock.busy.clear()
                clock.last_active = now
                self._reschedule(entry, clock)

    # --- ending ------------------------------------------------------------------------------

    def _due(self, entry: PodEntry) -> None:
        clock = self._clocks.get(entry)
        if clock is None or clock.ending is not None or self._closed:
            return
        # The timer fired at the earlier of the two: that one is why (not a comparison with
        # the wall clock, which may lag the loop's by a hair when the timer fires).
        deadline, idle_at = clock.limits.deadline, clock.idle_at()
        deadline_at = (
            None if deadline is None else loop_time_of(deadline, asyncio.get_running_loop())
        )
        if idle_at is None or (deadline_at is not None and deadline_at <= idle_at):
            code = LIFETIME_EXIT_STATUS
            reason = f"its lifetime ended at {deadline_text(deadline) if deadline else '?'}"
        else:
            code = IDLE_EXIT_STATUS
            reason = f"it was idle for its idle timeout ({clock.limits.idle_timeout} s)"
        clock.ending = asyncio.create_task(
            self._end(entry, clock, code, reason),
            name=f"sandboxclient.sandboxer.end.{entry.record.sandbox_id}",
        )

    async def _end(self, entry: PodEntry, clock: _Clock, code: int, reason: str) -> None:
        record = entry.record
        try:
            if code == IDLE_EXIT_STATUS and await self._runs_an_exec(entry):
                # an exec whose start the events did not show (the sandboxer restarted,
                # the subscription was late): busy after all; looked at again after a while
                clock.ending = None
                clock.last_active = asyncio.get_running_loop().time()
                self._reschedule(entry, clock)
                return
            await self._end_steps(entry, code, reason)
        except Exception as exc:  # containerd away, most likely: whatever it is, try again
            _log.warning("ending sandbox %s (%s): %r; trying again", record.key, reason, exc)
            clock.ending = None
            if not entry.removed and not self._closed:
                self._timer.set(entry, asyncio.get_running_loop().time() + RETRY_AFTER)
            return
        clock.ending = None
        _log.info("sandbox %s ended: %s", record.key, reason)
        self.arm(entry)  # forgets it (removed), or arms what is left

    async def _runs_an_exec(self, entry: PodEntry) -> bool:
        """Whether containerd lists an exec's process in the sandbox's task or a member's
        (the runc shim tells an exec's process by its ``ProcessDetails``)."""
        record = entry.record
        client = self._runtime.client(record.namespace)
        members = await client.list_containers()
        ids = {record.sandbox_id} | {c.id for c in members if c.sandbox_id == record.sandbox_id}
        for container_id in sorted(ids):
            try:
                task = await (await client.load_container(container_id)).task()
                processes = await task.pids()
            except NotFoundError:
                continue
            # the shim gives ProcessDetails (the exec's id) to an exec's process alone
            if any(p.info and p.info.type_url.endswith(_PROCESS_DETAILS) for p in processes):
                return True
        return False

    async def _end_steps(self, entry: PodEntry, code: int, reason: str) -> None:
        record = entry.record
        namespace, sandbox_id = record.namespace, record.sandbox_id
        if not entry.synced:
            async with entry.lock:
                if not entry.synced:
                    await self._watch.sync(entry)
        if entry.removed:
            return
        entry.ended_by = (code, reason)
        client = self._runtime.client(namespace)
        try:
            info = await client.get_sandbox(sandbox_id)
        except NotFoundError:
            info = None
        if entry.running:
            await self._watch.kill(entry)
        if info is None:  # containerd has no record of it: shut it down here
            with request_scope({NAMESPACE_HEADER: namespace}):
                await self._shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id=sandbox_id))
            return
        sandbox = client.sandbox_handle(info)
        if entry.started:  # a Wait through containerd has it publish /sandboxes/exit
            channel = await sandbox.wait(timeout=_EXIT_WAIT)
            exit_status = await channel.get()
            if exit_status.error is not None and not isinstance(exit_status.error, NotFoundError):
                _log.warning("sandbox %s: %s", record.key, exit_status.error)
        await sandbox.shutdown()

    # --- closing -----------------------------------------------------------------------------

    def cancel(self) -> None:
        """Disarm every timer and stop following execs (the sandboxes are let go of)."""
        self._closed = True
        self._timer.close()
        if self._follower is not None:
            self._follower.cancel()

    async def aclose(self) -> None:
        """:meth:`cancel`, and cancel every ending under way; return once they have ended."""
        self.cancel()
        tasks = [c.ending for c in self._clocks.values() if c.ending is not None]
        if self._follower is not None:
            tasks.append(self._follower)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._clocks.clear()
