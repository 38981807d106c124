"""Blocking work run in a thread, which the caller outlives however it is cancelled.

A thread cannot be stopped: cancelling the task awaiting ``asyncio.to_thread`` ends that task
while its thread runs on, with nobody waiting for what it makes. ``asyncio.shield`` only
covers the first cancel: a second one (a Start cancelled by its client, then again by the
controller's close) cancels the awaiting task and so leaves the thread unowned. Here the
caller waits for the thread to end whatever the number of cancels, then re-raises the cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ("in_thread",)

_T = TypeVar("_T")


async def in_thread(func: Callable[..., _T], /, *args: Any) -> _T:
    """``func(*args)`` run in a thread; returns (or raises) only once the thread has ended.

    Cancelled (any number of times) while the thread runs, it waits for the thread, then
    raises the (last) CancelledError; the thread's own result or error is then dropped.
    """
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: not logged as never retrieved
        raise cancelled
    return task.result()
