"""A sandbox's time limits as a sandboxer reads them, and the one timer that keeps them.

The limits are labels of the sandbox's record (see :mod:`sandboxclient._facts._lifetime`): the
record comes with Create and with an Update, and the sandboxer keeps it in its state
directory, so a sandboxer started again finds every deadline there. :func:`time_limits`
reads them, refusing a label that names no limit (INVALID_ARGUMENT, naming it).

:class:`Timer` is the single owner of every sandbox's timer: one heap of due times and one
``loop.call_at`` handle for the earliest, so that a thousand sandboxes cost one pending
callback, not a thousand sleeping tasks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from .._facts._clock import utcnow
from .._facts._lifetime import (
    DEADLINE_LABEL,
    IDLE_TIMEOUT_LABEL,
    deadline_text,
    parse_deadline,
    parse_idle_timeout,
)
from .._serve._refusals import invalid_argument
from .._wire._pb import SandboxPb

__all__ = ("TimeLimits", "Timer", "loop_time_of", "time_limits")

_K = TypeVar("_K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """What a sandbox's labels ask: a deadline, an idle timeout (seconds), or neither."""

    deadline: datetime | None = None
    idle_timeout: float | None = None

    @property
    def any(self) -> bool:
        """Whether either limit is set."""
        return self.deadline is not None or self.idle_timeout is not None

    def info(self) -> dict[str, str]:
        """Status ``info`` entries for the limits (``deadline``, ``idle_timeout``)."""
        found: dict[str, str] = {}
        if self.deadline is not None:
            found["deadline"] = deadline_text(self.deadline)
        if self.idle_timeout is not None:
            found["idle_timeout"] = repr(self.idle_timeout)
        return found


def time_limits(sandbox: SandboxPb | None) -> TimeLimits:
    """The limits a sandbox record's labels ask for; INVALID_ARGUMENT naming a bad label."""
    labels = {} if sandbox is None else sandbox.labels
    deadline = labels.get(DEADLINE_LABEL)
    idle = labels.get(IDLE_TIMEOUT_LABEL)
    try:
        return TimeLimits(
            None if deadline is None else parse_deadline(deadline),
            None if idle is None else parse_idle_timeout(idle),
        )
    except ValueError as exc:
        raise invalid_argument(str(exc)) from None


def loop_time_of(when: datetime, loop: asyncio.AbstractEventLoop) -> float:
    """The event loop's time at the wall-clock moment ``when`` (now if it has passed)."""
    return loop.time() + max((when - utcnow()).total_seconds(), 0.0)


class Timer(Generic[_K]):
    """Calls ``fire(key)`` once each key's due time (event loop time) has come.

    :meth:`set` (re)arms a key or, with None, disarms it; a key fires at most once per
    arming. One ``call_at`` handle, for the earliest due time, is pending at any moment;
    stale heap entries are dropped as they come up. :meth:`close` cancels it: nothing
    fires after.
    """

    def __init__(self, fire: Callable[[_K], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int, _K]] = []
        self._due: dict[_K, tuple[float, int]] = {}
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._due)

    def due(self, key: _K) -> float | None:
        """When ``key`` fires (event loop time), or None when it is not armed."""
        found = self._due.get(key)
        return None if found is None else found[0]

    def set(self, key: _K, when: float | None) -> None:
        """Fire ``key`` at loop time ``when`` (replacing any earlier arming), or never."""
        if self._closed:
            return
        if when is None:
            self._due.pop(key, None)
        else:
            seq = next(self._seq)
            self._due[key] = (when, seq)
            heapq.heappush(self._heap, (when, seq, key))
        if len(self._heap) > 2 * len(self._due) + 64:  # keep the stale entries bounded
            self._heap = [(w, s, k) for k, (w, s) in self._due.items()]
            heapq.heapify(self._heap)
        self._schedule()

    def _schedule(self) -> None:
        while self._heap:
            when, seq, key = self._heap[0]
            if self._due.get(key) == (when, seq):
                break
            heapq.heappop(self._heap)
        if self._handle is not None:
            if self._heap and self._handle.when() == self._heap[0][0]:
                return
            self._handle.cancel()
            self._handle = None
        if self._heap:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(self._heap[0][0], self._run)

    def _run(self) -> None:
        self._handle = None
        now = asyncio.get_running_loop().time()
        ready: list[_K] = []
        while self._heap and self._heap[0][0] <= now:
            when, seq, key = heapq.heappop(self._heap)
            if self._due.get(key) == (when, seq):
                del self._due[key]
                ready.append(key)
        for key in ready:
            if not self._closed:
                self._fire(key)
        self._schedule()

    def close(self) -> None:
        """Disarm everything; nothing fires after. Idempotent."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
        self._due.clear()
