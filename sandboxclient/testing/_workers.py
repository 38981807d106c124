"""The stand-in's blocking work (copying a snapshot, unpacking a layer, reading an archive)
run in threads that are never left behind.

A thread cannot be cancelled: when the call that started one is cancelled (its client went
away, or the stand-in is closing), :meth:`Workers.run` sets the work's stop flag, waits for
the thread to end and only then lets the cancellation go on, so that what the caller removes
on its way out (a snapshot's directory, a spool) is no longer written to. :meth:`Workers.aclose`
stops every thread still running and waits for them, for the stand-in to call before it
removes its directory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ("Stopped", "Workers")

T = TypeVar("T")


class Stopped(Exception):
    """Raised by blocking work that saw its stop flag set."""


class Workers:
    """The threads the stand-in runs blocking work in."""

    def __init__(self) -> None:
        self._running: dict[asyncio.Future[Any], threading.Event] = {}

    async def run(self, work: Callable[[threading.Event], T]) -> T:
        """``work(stop)`` in a thread; on cancellation, ``stop`` is set and the thread is
        waited for before the cancellation goes on."""
        stop = threading.Event()
        future: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(work, stop))
        self._running[future] = stop
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()
            await _settle(future)
            raise
        finally:
            self._running.pop(future, None)

    async def aclose(self) -> None:
        """Stop every thread still running and wait for each to end."""
        for stop in self._running.values():
            stop.set()
        for future in list(self._running):
            await _settle(future)


async def _settle(future: asyncio.Future[Any]) -> None:
    """Wait for ``future`` to finish, whatever its outcome and however often the waiter is
    cancelled meanwhile (a cancellation of the waiter is not lost: it was already taken)."""
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # retrieved: not reported as never retrieved
