"""Ending an isolated sandbox: Stop and Shutdown, each timed stage by stage by :mod:`._stages`.

Both signal the sandbox's first process through :mod:`._podsignal` where they can, through
containerd's Tasks.Kill where they cannot; Shutdown reads the namespace's container records
while the sandbox exits, then deletes its members and its own task and container
(:meth:`~._pods.PodRuntime.remove`). containerd makes members without asking the sandboxer:
one made after that read is refused by the client that makes it, which asks the sandbox's
Status once its record is made (see ``sandboxclient._members._ending``). Start's answer says
so (:func:`started_labels`): the client then leaves the members to this Shutdown rather than
list the namespace's containers itself first.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Mapping
from typing import Final, TypeVar

from .._members._ending import MEMBERS_REMOVED_LABEL, SHUTDOWN_INFO, SHUTDOWN_UNDER_WAY
from ._pausepoints import SHUTDOWN_LISTED, pause_point
from ._podlog import LogKeepers
from ._podnet import PodNetworks
from ._pods import PodRuntime, shielded
from ._podsignal import signal_first
from ._podspec import WAIT_FOREVER
from ._podstate import PodEntry, PodTable
from ._podwatch import PodWatch, handles_sigterm
from ._stages import mark, timing
from ._userns import IdPool

__all__ = ("PodEnd", "ending_info", "started_labels")

_T = TypeVar("_T")
_FIRST_GRACE: Final = 2.0
"""Seconds a first process signalled is given to exit before containerd kills the task (a
task paused by cgroup v1's freezer dies only once thawed, which ``runc kill --all`` does)."""


class PodEnd:
    """Stop and Shutdown of the sandboxes of one controller."""

    def __init__(
        self,
        table: PodTable,
        runtime: PodRuntime,
        watch: PodWatch,
        net: PodNetworks,
        pool: IdPool,
        logs: LogKeepers,
    ) -> None:
        self._table = table
        self._logs = logs
        self._runtime = runtime
        self._watch = watch
        self._net = net
        self._pool = pool

    async def stop(self, entry: PodEntry, timeout: float) -> None:
        """SIGTERM the sandbox's first process, SIGKILL all of its task after ``timeout``
        seconds; return once it exited (its network torn down in the background)."""
        record = entry.record
        with timing(record.sandbox_id, "stop"):
            if entry.running:
                deadline = asyncio.get_running_loop().time() + timeout
                if entry.default_process:  # a SIGTERM before its trap would be lost
                    await handles_sigterm(record.pid, WAIT_FOREVER, within=timeout)
                if not signal_first(entry.first, signal.SIGTERM):
                    ns, sid = record.namespace, record.sandbox_id
                    await self._runtime.kill(ns, sid, signal.SIGTERM, all=False)
                mark("SIGTERM")
                try:
                    async with asyncio.timeout_at(deadline):
                        await entry.settled.wait()
                except TimeoutError:
                    await self._watch.kill(entry)
                mark("the exit")
            if self._net.has_network(entry):  # torn down once it has exited, in the background
                async with entry.lock:
                    await shielded(self._net.defer(entry))
                mark("network (deferred)")

    async def _kill(self, entry: PodEntry) -> None:
        """SIGKILL the sandbox's first process alone where that ends its pid namespace (its
        members, in nested cgroups, are deleted next), else, or if it has not exited within
        a short grace, every process of its task (:meth:`PodWatch.kill`); wait for the exit."""
        if signal_first(entry.first, signal.SIGKILL):
            mark("SIGKILL")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FIRST_GRACE):
                    await entry.settled.wait()
                mark("the exit, heard through Tasks.Wait")
                return
        await self._watch.kill(entry)
        mark("SIGKILL through containerd, the exit")

    async def shutdown(self, entry: PodEntry) -> None:
        """Kill and delete the sandbox's members, then its task and container; forget it
        (its record, its id block; its network torn down in the background). The caller
        holds ``entry.lock``. From its start, the sandbox's Status says it is under way,
        so that a member made after the records are read is refused by its maker."""
        entry.ending = True  # from before the records are read: a member made since is refused
        try:
            await self._shutdown(entry)
        except BaseException:
            entry.ending = entry.removed
            raise

    async def _shutdown(self, entry: PodEntry) -> None:
        record = entry.record
        ns, sid = record.namespace, record.sandbox_id
        with timing(sid, "shutdown"):
            found = None
            if entry.running:  # the records are read while it exits, off the path
                found = await _while(self._runtime.containers(ns), self._kill(entry))
                mark("containerd: Containers.List (beside the kill): what outlasts the exit")
                pause_point(SHUTDOWN_LISTED)
            if entry.made:  # a task found stopped is deleted at once (Container.delete)
                exited = record.exit_status is not None  # heard: no Tasks.Get to delete it
                await shielded(self._runtime.remove(ns, sid, found=found, exited=exited))
            await shielded(self._net.defer(entry))  # its DEL finishes in the background
            mark("network (deferred)")
            if entry.monitor is not None:
                entry.monitor.cancel()
            self._logs.forget(self._table.remove(entry))  # its FIFO's copy too
            mark("record and directory removed")
            self._pool.release(record.key)
            mark("id block released")


def started_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` (Start's answer's) with the word that Shutdown deletes the members itself:
    :meth:`PodEnd.shutdown` does, for every sandbox that was started."""
    return {**labels, MEMBERS_REMOVED_LABEL: "true"}


def ending_info(entry: PodEntry) -> dict[str, str]:
    """What a sandbox's Status says of a Shutdown under way (nothing without one)."""
    return {SHUTDOWN_INFO: SHUTDOWN_UNDER_WAY} if entry.ending else {}


async def _while(reading: Awaitable[_T], work: Awaitable[None]) -> _T:
    """Run ``reading`` beside ``work``; its answer once both are done. Should ``work`` fail
    (or the caller be cancelled), ``reading`` is cancelled and waited for."""
    task = asyncio.ensure_future(reading)
    try:
        await work
        return await task
    finally:
        task.cancel()  # nothing once it is done
        await asyncio.gather(task, return_exceptions=True)
