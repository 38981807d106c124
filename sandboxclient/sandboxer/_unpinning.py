"""Unpinning a started sandbox's user namespace off its Start's path.

Once a Start is done the sandbox's process holds its user namespace and the pin is
unmounted (:meth:`._userns.SandboxUsers.drop_pin`). When that process has exited already (a
one-shot's command), the unmount lets the namespace itself go, which took about 3 ms on the
Start's path before its answer. For a sandbox whose process is the caller's command (which
may have ended already) the unmount now runs just after, in a thread, under the same
lock as every pin made (``SandboxUsers._making``), and only if the block's pin is still the
one of the Start's end: a pin of the same block made since (its sandbox shut down, which
unpins it, the block claimed again or made a spare) is another namespace, and is left alone.
Which pin is which is told by the block's generation (:class:`PinGenerations`), bumped at
every pin made and every unpin, not by the pin's device and inode: the kernel hands a new
namespace the inode number of one just gone. A sandbox whose process is the sandboxer's own
(it runs until stopped) is unpinned on the path as before, where it costs little. The
unpins under way are owned here and waited for at close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

IdBlock = TypeVar("IdBlock")
"""A block of the pool (``_userns.IdBlock``; not imported: that module imports this one)."""

__all__ = ("LaterUnpins", "PinGenerations")


class PinGenerations:
    """A number per block of the pool, bumped at every pin made and every unpin of it."""

    def __init__(self) -> None:
        self._numbers: dict[int, int] = {}

    def bump(self, index: int) -> None:
        """Note a pin made or let go for the block at ``index``."""
        self._numbers[index] = self._numbers.get(index, 0) + 1

    def of(self, index: int) -> int:
        """The block's generation now."""
        return self._numbers.get(index, 0)


class LaterUnpins(Generic[IdBlock]):
    """The unpins started after their Start's answer, each under the pins' lock."""

    def __init__(self, generation: Callable[[IdBlock], int]) -> None:
        self._generation = generation
        self._under_way: set[asyncio.Task[None]] = set()

    @property
    def under_way(self) -> int:
        """How many unpins are not done yet."""
        return len(self._under_way)

    def drop(
        self,
        spec: Mapping[str, Any] | None,
        lock: asyncio.Lock,
        drop: Callable[[IdBlock], None],
        block: IdBlock,
    ) -> None:
        """``drop(block)`` now for a sandbox whose own process is the sandboxer's (``spec``,
        as the client gave it, names no command: it runs until stopped), else later (see
        :meth:`start`)."""
        if ((spec or {}).get("process") or {}).get("args"):
            self.start(lock, drop, block)
        else:
            drop(block)

    def start(self, lock: asyncio.Lock, drop: Callable[[IdBlock], None], block: IdBlock) -> None:
        """Run ``drop(block)`` in a thread once ``lock`` is free, if the block's pin is still
        the one pinned now (not a pin made since, once this one was let go)."""
        now = self._generation(block)
        task = asyncio.get_running_loop().create_task(self._drop(lock, drop, block, now))
        self._under_way.add(task)
        task.add_done_callback(self._under_way.discard)

    async def _drop(
        self,
        lock: asyncio.Lock,
        drop: Callable[[IdBlock], None],
        block: IdBlock,
        generation: int,
    ) -> None:
        async with lock:  # no pin is made meanwhile
            if self._generation(block) == generation:
                await asyncio.to_thread(drop, block)

    async def drain(self) -> None:
        """Wait until every unpin started is done (called without the lock held)."""
        while self._under_way:
            await asyncio.gather(*self._under_way, return_exceptions=True)
