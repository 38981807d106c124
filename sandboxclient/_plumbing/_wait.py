"""Waiting for an exit: the channel users hold, and one shared Wait call per waited thing.

Sandboxes, tasks and processes are all waited on the same way: :meth:`WaitRegistry.channel`
returns an :class:`ExitChannel` at once; behind it, one background Wait call per key (a
sandbox, a task, an exec) that every channel on that key shares, retried with backoff while
the daemon or the controller is unreachable, so a wait rides out a restart. Each channel has
its own small task for its own deadline, so closing one channel ends that channel alone; the
Wait call ends when its last channel lets go, or when it answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Hashable
from typing import Any

from .._models import UNKNOWN_EXIT_STATUS, ExitStatus
from .._wire._errdefs import map_error
from ..errors import (
    CanceledError,
    ClientClosedError,
    ContainerdError,
    DeadlineExceededError,
    UnavailableError,
    UnknownError,
)
from ._connection import Connection

__all__ = ("ExitChannel", "WaitRegistry")

_log = logging.getLogger("sandboxclient")

# Backoff of a wait whose daemon or controller went away, as containerd's proxy does it.
_RETRY_FIRST = 0.128
_RETRY_MAX = 4.096


class ExitChannel:
    """The one exit status of a sandbox, task or process, delivered by a task its Client owns.

    Made by ``wait()``. Await it, call ``get()``, or iterate it with ``async for`` (one item);
    any number of readers, at once or one after another, get the same ``ExitStatus``.
    ``queue`` is an ``asyncio.Queue`` that receives that status too, exactly once, for code
    that selects over queues.
    """

    __slots__ = ("_arrived", "_queue", "_result", "_task")

    def __init__(
        self,
        source: asyncio.Future[ExitStatus],
        *,
        what: str,
        timeout: float | None,
        connection: Connection,
        release: Callable[[], None],
    ) -> None:
        self._queue: asyncio.Queue[ExitStatus] = asyncio.Queue(maxsize=1)
        self._arrived = asyncio.Event()
        self._result: ExitStatus | None = None
        self._task = connection.spawn(
            self._follow(source, what, timeout), f"sandboxclient-exit-{what}"
        )

        def done(task: asyncio.Task[None]) -> None:
            release()
            if task.cancelled():
                error: ContainerdError = (
                    ClientClosedError("the client was closed while waiting")
                    if connection.closed
                    else CanceledError("the wait channel was closed")
                )
                self._deliver(ExitStatus(UNKNOWN_EXIT_STATUS, None, error))
            elif (exc := task.exception()) is not None:
                failure = UnknownError(f"wait failed: {exc!r}")
                self._deliver(ExitStatus(UNKNOWN_EXIT_STATUS, None, failure))

        self._task.add_done_callback(done)

    async def _follow(
        self, source: asyncio.Future[ExitStatus], what: str, timeout: float | None
    ) -> None:
        if timeout is None:
            status = await asyncio.shield(source)
        else:
            try:
                async with asyncio.timeout(timeout):
                    status = await asyncio.shield(source)
            except TimeoutError:
                error = DeadlineExceededError(f"{what} did not exit within {timeout} s")
                status = ExitStatus(UNKNOWN_EXIT_STATUS, None, error)
        self._deliver(status)

    def _deliver(self, status: ExitStatus) -> None:
        if self._result is not None:
            return
        self._result = status
        self._queue.put_nowait(status)
        self._arrived.set()

    @property
    def queue(self) -> asyncio.Queue[ExitStatus]:
        """The queue the status is put on, once."""
        return self._queue

    async def get(self) -> ExitStatus:
        """Wait for the exit status and return it."""
        if self._result is None:
            await self._arrived.wait()
        assert self._result is not None
        return self._result

    def result(self) -> ExitStatus:
        """The exit status if it has arrived; raise ``asyncio.InvalidStateError`` if not."""
        if self._result is None:
            raise asyncio.InvalidStateError("exit status not available yet")
        return self._result

    def done(self) -> bool:
        """Whether the exit status has arrived."""
        return self._result is not None

    def close(self) -> None:
        """Stop waiting. If no status had arrived, the channel then yields one whose error is
        a ``CanceledError`` saying it was closed."""
        if not self._task.done():
            self._task.cancel()

    def __await__(self) -> Generator[Any, None, ExitStatus]:
        return self.get().__await__()

    async def __aiter__(self) -> AsyncIterator[ExitStatus]:
        yield await self.get()

    def __repr__(self) -> str:
        state = repr(self._result) if self._result is not None else "pending"
        return f"<ExitChannel {state}>"


class _Shared:
    """The Wait call in flight for one key, and how many channels use it."""

    __slots__ = ("task", "users")

    def __init__(self, task: asyncio.Task[ExitStatus]) -> None:
        self.task = task
        self.users = 0


class WaitRegistry:
    """The Wait calls in flight on one connection, one per key."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._shared: dict[Hashable, _Shared] = {}

    def channel(
        self,
        key: Hashable,
        wait: Callable[[], Awaitable[ExitStatus]],
        *,
        what: str,
        timeout: float | None,
    ) -> ExitChannel:
        """A channel on the Wait call for ``key``, started with ``wait()`` if none runs.

        ``wait`` makes one Wait call and returns the status; it is retried while the daemon
        is unreachable. ``what`` names the waited thing in errors; ``timeout`` bounds this
        channel alone.
        """
        shared = self._shared.get(key)
        if shared is None or shared.task.done():
            task = self._connection.spawn(_retrying(wait, what), f"sandboxclient-wait-{what}")
            shared = self._shared[key] = _Shared(task)
            task.add_done_callback(lambda _: self._forget(key, shared))
        shared.users += 1
        entry = shared

        def release() -> None:
            entry.users -= 1
            if entry.users == 0 and not entry.task.done():
                self._forget(key, entry)
                entry.task.cancel()

        return ExitChannel(
            shared.task, what=what, timeout=timeout, connection=self._connection, release=release
        )

    def _forget(self, key: Hashable, shared: _Shared) -> None:
        if self._shared.get(key) is shared:
            del self._shared[key]


async def _retrying(wait: Callable[[], Awaitable[ExitStatus]], what: str) -> ExitStatus:
    """``wait()`` until it answers, through daemon and controller restarts; never raises."""
    delay = _RETRY_FIRST
    while True:
        try:
            return await wait()
        except UnavailableError as exc:
            _log.info("wait for %s: %s; retrying in %.3f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
        except Exception as exc:
            mapped = map_error(exc) or UnknownError(f"wait failed: {exc!r}")
            return ExitStatus(UNKNOWN_EXIT_STATUS, None, mapped)
