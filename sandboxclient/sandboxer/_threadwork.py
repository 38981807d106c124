"""Blocking work run in a thread, which the caller outlives however it is cancelled.

A thread cannot be stopped: cancelling the task awaiting ``asyncio.to_thread`` ends that task
while its thread runs on, with nobody waiting for what it makes, and ``asyncio.shield`` only
covers the first cancel (a Start cancelled by its client, then again by the controller's
close). Here the caller waits for the thread to end whatever the number of cancels, then
re-raises the cancel (the connection's ``run_to_end``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from .._plumbing._connection import run_to_end

__all__ = ("in_thread",)

_T = TypeVar("_T")


async def in_thread(func: Callable[..., _T], /, *args: Any) -> _T:
    """``func(*args)`` run in a thread; returns (or raises) only once the thread has ended.

    Cancelled (any number of times) while the thread runs, it waits for the thread, then
    raises CancelledError; the thread's own result or error is then dropped.
    """
    return await run_to_end(asyncio.ensure_future(asyncio.to_thread(func, *args)))
