"""Sandboxes' time limits kept through containerd: deadlines, idle clocks, and when to end.

:class:`SandboxClocks` is what a sandboxer that runs its sandboxes through containerd (the
isolating one, :mod:`._podtimes`; and the stand-in's own controller) keeps of their
``lifetime=`` and ``idle_timeout=``, keyed by (namespace, sandbox id). Its owner arms a
sandbox's limits whenever its record changes (:meth:`~SandboxClocks.arm`) and forgets it
once it is gone; the clocks say when and why to end it, by calling the owner's ``end``.

- **Lifetime.** At its deadline (at once if it has passed) the sandbox is ended, started or
  not.
- **Idle.** One subscription to containerd's ``/tasks/exec-started`` and ``/tasks/exit``
  events (every namespace, through ``client_of``'s Client) tells when an exec starts and
  ends in a sandbox's task or a member's: the sandbox is idle only while none runs, and is
  ended ``idle_timeout`` seconds after the last one ended (or after it was armed). What the
  events cannot show is not seen: activity while the owner was down or while its
  subscription lagged or was cut (every idle clock then starts again from that moment),
  and anything but an exec. Before ending a sandbox for idleness, containerd is asked
  whether an exec's process runs in it after all (one begun before a restart: the runc
  shim's ListPids marks an exec's process); if so it is looked at again one
  ``idle_timeout`` later.

An ending already decided (its owner wrote it down before killing the sandbox, and was
started again since) is armed as such (:meth:`~SandboxClocks.arm`'s ``decided``): it is
carried out at once, with that status, whatever the limits say now.

One :class:`~._timelimits.Timer` holds every due time. An ending that fails is tried again
every :data:`RETRY_AFTER` seconds until the owner forgets the sandbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from .._client import Client
from .._facts._clock import utcnow
from .._facts._lifetime import IDLE_EXIT_STATUS, LIFETIME_EXIT_STATUS, deadline_text
from ..errors import ContainerdError, NotFoundError
from ..events import Event, EventsLagged, EventsReconnected, TaskExecStarted, TaskExit
from ._timelimits import TimeLimits, Timer, loop_time_of

__all__ = ("RETRY_AFTER", "Key", "SandboxClocks")

RETRY_AFTER: Final = 5.0
"""Seconds before a sandbox whose ending failed part way is tried again."""

_HAIR: Final = 0.05
"""How far ahead of the loop's time a limit still counts as due when its timer fires."""
_MEMBERS_KEPT: Final = 4096
"""How many containers' sandboxes are remembered before the memo starts again."""
_PROCESS_DETAILS: Final = "containerd.runc.v1.ProcessDetails"
_TOPICS: Final = ('topic=="/tasks/exec-started"', 'topic=="/tasks/exit"')
_log = logging.getLogger("sandboxclient.sandboxer")

Key = tuple[str, str]
"""(namespace, sandbox id)."""

End = Callable[[Key, int, str], Awaitable[None]]


@dataclass(eq=False)
class _Clock:
    """One sandbox's limits and what the events told of its activity."""

    limits: TimeLimits
    last_active: float
    busy: set[tuple[str, str]] = field(default_factory=set)
    """The (container id, exec id) of the execs running in it, as the events tell."""
    ending: asyncio.Task[None] | None = None
    gone: bool = False
    """Forgotten while its ending ran: dropped once that is over."""
    decided: tuple[int, str] | None = None
    """An ending decided before (exit status, reason): due now, whatever the limits say."""

    def idle_at(self) -> float | None:
        """When (loop time) it becomes too idle, or None (no idle limit, or an exec runs)."""
        if self.limits.idle_timeout is None or self.busy:
            return None
        return self.last_active + self.limits.idle_timeout


class SandboxClocks:
    """The time limits of a sandboxer's sandboxes, and the call to ``end`` one past them.

    ``end(key, exit_status, reason)`` ends the sandbox (:data:`LIFETIME_EXIT_STATUS` or
    :data:`IDLE_EXIT_STATUS`); an exception from it is logged and the ending tried again.
    ``client_of(namespace)`` is a Client of containerd in that namespace.
    """

    def __init__(self, client_of: Callable[[str], Client], end: End) -> None:
        self._client_of = client_of
        self._end = end
        self._clocks: dict[Key, _Clock] = {}
        self._timer: Timer[Key] = Timer(self._due)
        self._members: dict[Key, str] = {}
        self._follower: asyncio.Task[None] | None = None
        self._closed = False

    def arm(self, key: Key, limits: TimeLimits, decided: tuple[int, str] | None = None) -> None:
        """Keep ``limits`` for sandbox ``key`` (replacing what was kept); with ``decided``
        (exit status, reason), end it now with those; needs the loop."""
        if self._closed:
            return
        clock = self._clocks.get(key)
        if clock is None or clock.gone:  # a gone one's ending is not this sandbox's
            if not limits.any and decided is None:
                if clock is not None:
                    self._drop(key)
                return
            clock = self._clocks[key] = _Clock(limits, asyncio.get_running_loop().time())
        clock.limits = limits
        clock.decided = decided
        if limits.idle_timeout is not None:
            self._follow_execs()
        self._reschedule(key, clock)

    def forget(self, key: Key) -> None:
        """Sandbox ``key`` is gone: keep nothing of it (once an ending under way is over)."""
        clock = self._clocks.get(key)
        if clock is None:
            return
        if clock.ending is not None:
            clock.gone = True
            return
        self._drop(key)

    def _drop(self, key: Key) -> None:
        del self._clocks[key]
        self._timer.set(key, None)
        self._members = {k: v for k, v in self._members.items() if (k[0], v) != key}

    def status_info(self, key: Key) -> dict[str, str]:
        """Status ``info`` entries: ``deadline``, ``idle_timeout`` and, while no exec runs,
        ``idle_deadline`` (each an RFC 3339 time in UTC, the timeout in seconds)."""
        clock = self._clocks.get(key)
        if clock is None:
            return {}
        info = clock.limits.info()
        idle_at = clock.idle_at()
        if idle_at is not None:
            left = idle_at - asyncio.get_running_loop().time()
            info["idle_deadline"] = deadline_text(utcnow() + timedelta(seconds=left))
        return info

    def _reschedule(self, key: Key, clock: _Clock) -> None:
        if clock.ending is not None:
            return  # armed again when it is over, if it must be
        times = [clock.idle_at()]
        if clock.decided is not None:
            times.append(asyncio.get_running_loop().time())
        if clock.limits.deadline is not None:
            times.append(loop_time_of(clock.limits.deadline, asyncio.get_running_loop()))
        due = [t for t in times if t is not None]
        self._timer.set(key, min(due) if due else None)

    # --- activity ----------------------------------------------------------------------------

    def _follow_execs(self) -> None:
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(
                self._follow(), name="sandboxclient.sandboxer.idle-events"
            )

    async def _follow(self) -> None:
        """Follow the execs of every namespace while a sandbox has an idle limit."""
        while not self._closed:
            keys = [k for k, c in self._clocks.items() if c.limits.idle_timeout is not None]
            if not keys:
                return
            client = self._client_of(keys[0][0])
            try:
                async with client.events(*_TOPICS, all_namespaces=True) as stream:
                    async for item in stream:
                        if isinstance(item, Event):
                            await self._heard(item)
                        elif isinstance(item, EventsLagged | EventsReconnected):
                            self._lost_track()
            except Exception as exc:  # whatever it was, idle clocks must not stop for good
                _log.warning("following execs for idle timeouts: %r", exc)
                self._lost_track()
                await asyncio.sleep(RETRY_AFTER)

    async def _heard(self, event: Event) -> None:
        payload = event.payload
        if not isinstance(payload, TaskExecStarted | TaskExit):
            return
        if isinstance(payload, TaskExit) and payload.id in ("", payload.container_id):
            return  # a task's own exit, not an exec's
        key = await self._sandbox_of(event.namespace, payload.container_id)
        clock = None if key is None else self._clocks.get(key)
        if key is None or clock is None:
            return
        exec_id = payload.exec_id if isinstance(payload, TaskExecStarted) else payload.id
        if isinstance(payload, TaskExecStarted):
            clock.busy.add((payload.container_id, exec_id))
        else:
            clock.busy.discard((payload.container_id, exec_id))
        clock.last_active = asyncio.get_running_loop().time()
        self._reschedule(key, clock)

    async def _sandbox_of(self, namespace: str, container_id: str) -> Key | None:
        """The sandbox whose task (same id) or member ``container_id`` is, if kept here."""
        if (namespace, container_id) in self._clocks:
            return (namespace, container_id)
        key = (namespace, container_id)
        if key not in self._members:
            if len(self._members) >= _MEMBERS_KEPT:  # every container execs are heard in
                self._members.clear()
            try:
                found = await self._client_of(namespace).load_container(container_id)
            except ContainerdError:
                return None  # gone already (a short exec's container), or containerd away
            self._members[key] = found.metadata.sandbox_id
        sandbox_id = self._members[key]
        return (namespace, sandbox_id) if sandbox_id else None

    def _lost_track(self) -> None:
        """Events may have been missed: no exec is known to run, and each idle clock starts
        again now (never earlier than it would have)."""
        now = asyncio.get_running_loop().time()
        for key, clock in self._clocks.items():
            if clock.limits.idle_timeout is not None:
                clock.busy.clear()
                clock.last_active = now
                self._reschedule(key, clock)

    async def _runs_an_exec(self, key: Key) -> bool:
        """Whether containerd lists an exec's process in the sandbox's task or a member's
        (the runc shim gives ProcessDetails, the exec's id, to an exec's process alone)."""
        namespace, sandbox_id = key
        client = self._client_of(namespace)
        members = await client.list_containers()
        ids = {sandbox_id} | {c.id for c in members if c.sandbox_id == sandbox_id}
        for container_id in sorted(ids):
            try:
                task = await (await client.load_container(container_id)).task()
                processes = await task.pids()
            except NotFoundError:
                continue
            if any(p.info and p.info.type_url.endswith(_PROCESS_DETAILS) for p in processes):
                return True
        return False

    # --- ending ------------------------------------------------------------------------------

    def _due(self, key: Key) -> None:
        clock = self._clocks.get(key)
        if clock is None or clock.ending is not None or self._closed:
            return
        why = self._why_due(clock)
        if why is None:  # limits moved or lifted since it was set (a retry's timer, say)
            self._reschedule(key, clock)
            return
        code, reason = why
        clock.ending = asyncio.create_task(
            self._ending(key, clock, code, reason), name=f"sandboxclient.end.{key[1]}"
        )

    def _why_due(self, clock: _Clock) -> tuple[int, str] | None:
        """The exit status and reason of the limit that is due now, or None if none is. The
        earlier of the two is why, within a hair: the wall clock a deadline is kept in may
        lag the loop's when the timer fires. An ending decided before is due, as decided."""
        if clock.decided is not None:
            return clock.decided
        deadline, idle_at = clock.limits.deadline, clock.idle_at()
        loop = asyncio.get_running_loop()
        deadline_at = None if deadline is None else loop_time_of(deadline, loop)
        due = [t for t in (deadline_at, idle_at) if t is not None]
        if not due or min(due) > loop.time() + _HAIR:
            return None
        if deadline is not None and deadline_at is not None and min(due) == deadline_at:
            return LIFETIME_EXIT_STATUS, f"its lifetime ended at {deadline_text(deadline)}"
        timeout = clock.limits.idle_timeout
        return IDLE_EXIT_STATUS, f"it was idle for its idle timeout ({timeout} s)"

    def _current(self, key: Key, clock: _Clock) -> bool:
        """Whether ``clock`` still stands for sandbox ``key`` (not one gone, replaced by a
        new sandbox of the same id)."""
        return self._clocks.get(key) is clock and not clock.gone

    async def _ending(self, key: Key, clock: _Clock, code: int, reason: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            decided = clock.decided is not None  # carried out, an exec or not
            busy = code == IDLE_EXIT_STATUS and not decided and await self._runs_an_exec(key)
            if busy:  # an exec whose start the events did not show: busy after all
                clock.last_active = loop.time()
            if busy or not self._current(key, clock) or self._why_due(clock) is None:
                clock.ending = None  # not to end (now): as if the timer had not fired
                if self._clocks.get(key) is not clock:
                    return
                if clock.gone:
                    self.forget(key)
                else:
                    self._reschedule(key, clock)
                return
            await self._end(key, code, reason)
        except Exception as exc:  # containerd away, most likely: whatever it is, try again
            _log.warning("ending sandbox %s/%s (%s): %r; trying again", *key, reason, exc)
            clock.ending = None
            if self._clocks.get(key) is not clock:
                return
            if clock.gone or self._closed:
                self.forget(key)
            else:  # what is due then is judged again (see _due)
                self._timer.set(key, loop.time() + RETRY_AFTER)
            return
        _log.info("sandbox %s/%s ended: %s", *key, reason)
        clock.ending = None
        if self._clocks.get(key) is clock:
            self.forget(key)  # ended: its owner arms it again, should it still hold it

    # --- closing -----------------------------------------------------------------------------

    def cancel(self) -> None:
        """Disarm every timer, stop following execs and cut every ending under way short
        (at its next step: each is cancelled); nothing is ended after. Its owner lets go of
        the sandboxes: whoever takes them over finishes an ending it wrote down."""
        self._closed = True
        self._timer.close()
        if self._follower is not None:
            self._follower.cancel()
        for clock in self._clocks.values():
            if clock.ending is not None:
                clock.ending.cancel()

    async def aclose(self) -> None:
        """:meth:`cancel`, and cancel every ending under way; return once they are over."""
        self.cancel()
        tasks = [c.ending for c in self._clocks.values() if c.ending is not None]
        if self._follower is not None:
            tasks.append(self._follower)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._clocks.clear()
