"""The isolating sandboxer's Starts in flight, and what closing does with them.

A Start makes a container, a task, a root mount and a user namespace's pin, through
connections to containerd. Closing the sandboxer must leave none of them, nor let a Start
make them once it is closed. So every Start runs as a task of :class:`StartsInFlight`:

- once the controller is closed, no Start begins: UNAVAILABLE, saying so;
- closing first waits for the Starts in flight (:data:`START_GRACE` seconds at most), then
  cancels those left (all of them at once if the wait itself is cancelled); a Start cancelled
  before its process runs undoes what it made, or leaves it marked as made (its record
  ``starting``), as any failed Start does; one cancelled after (while it waits for a default
  process to trap SIGTERM) leaves a started sandbox. Only once every Start has ended does
  closing go on to kill and delete the sandboxes (those the Starts made among them) and close
  the connections: nothing reaches containerd after that.

A Start so cut answers UNAVAILABLE; a caller that cancels its own Start cancels the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from grpclib.exceptions import GRPCError

from .._facts._golang import go_quote
from .._serve._refusals import unavailable

__all__ = ("START_GRACE", "StartsInFlight", "closed_while_starting")

START_GRACE: Final = 10.0
"""Seconds closing waits for the Starts in flight before it cancels them."""

_T = TypeVar("_T")


def closed_while_starting(sandbox_id: str, how: str = "") -> GRPCError:
    """UNAVAILABLE for a Start of ``sandbox_id`` that closing overtook (``how``: and then)."""
    return unavailable(
        f"the sandbox controller is closed: it closed while sandbox {go_quote(sandbox_id)} "
        f"was starting{how}"
    )


class StartsInFlight:
    """The Starts under way; none begins once ``closed()`` says the controller is closed."""

    def __init__(self, closed: Callable[[], bool]) -> None:
        self._closed = closed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """How many Starts are under way."""
        return len(self._tasks)

    async def run(
        self,
        sandbox_id: str,
        work: Coroutine[Any, Any, _T],
        launched: Callable[[], bool] = lambda: False,
    ) -> _T:
        """Run the Start ``work`` of ``sandbox_id`` as a task :meth:`close` waits for;
        UNAVAILABLE if the controller is closed (``work`` is not begun), or if closing
        cancelled it, saying whether the Start was undone or, ``launched()`` (its process
        ran), its sandbox is left to closing. Cancelling the caller cancels the Start."""
        if self._closed():
            work.close()
            raise unavailable(
                f"the sandbox controller is closed: sandbox {go_quote(sandbox_id)} is not started"
            )
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task in self._cut and (current is None or not current.cancelling()):
                how = ", after its process ran: closing kills it" if launched() else ""
                raise closed_while_starting(
                    sandbox_id, how or ", and the Start was undone"
                ) from None
            raise
        finally:
            self._cut.discard(task)

    async def close(self, grace: float | None = None) -> None:
        """Wait ``grace`` seconds (:data:`START_GRACE` by default) at most for the Starts in
        flight, cancel those left, and return once every one of them has ended (a cancelled
        Start's undo is bounded by the timeout of its calls to containerd). Cancelled while
        it waits, it cancels every Start left and waits for them before it propagates: no
        Start outlives a close."""
        tasks = list(self._tasks)
        if not tasks:
            return
        try:
            await asyncio.wait(tasks, timeout=START_GRACE if grace is None else grace)
        finally:
            left = [task for task in tasks if not task.done()]
            for task in left:
                self._cut.add(task)
                task.cancel()
            if left:
                await asyncio.wait(left)
