"""The isolating sandboxer's enforcement of its sandboxes' time limits.

A sandbox's limits are labels of its record (:mod:`._timelimits`), which the sandboxer keeps
in its state directory: :class:`PodTimes` arms them whenever the record is written (Create,
Update, a sandboxer started again over its state: a deadline that passed while it was down
fires at once) in its :class:`~._clocks.SandboxClocks`, which also say when a sandbox has
been idle for too long (see there).

Ending a sandbox, whether or not a client is connected: why is written down in its record
first (:attr:`~._podstate.PodRecord.ended_by`), so that its exit is recorded as
:data:`~sandboxclient.LIFETIME_EXIT_STATUS` or :data:`~sandboxclient.IDLE_EXIT_STATUS` (with
the reason in Status' ``exit_reason``) even by a sandboxer started again after a crash,
which finishes the ending at once; then its task is killed (SIGKILL, every process); a
Wait is made through containerd, so that containerd publishes ``/sandboxes/exit`` with that
status; then it is shut down as a client's ``Sandbox.shutdown()`` does, through containerd:
its members (with their snapshots), its own task and container, network, user namespace
pin, shim, and its record in containerd's store. When containerd has no record of it any
more, the sandboxer shuts it down itself. A step that fails (containerd away) is tried
again until the sandbox is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from grpclib.exceptions import GRPCError

from .._facts._wirenames import NAMESPACE_HEADER
from .._serve._server import request_scope
from .._wire._pb import sandbox_pb
from ..errors import NotFoundError
from ._clocks import Key, SandboxClocks
from ._pausepoints import ENDING_KILLED, pause_point
from ._pods import PodRuntime
from ._podstate import PodEntry, PodTable
from ._podwatch import PodWatch
from ._timelimits import TimeLimits, time_limits

__all__ = ("PodTimes",)

_EXIT_WAIT: Final = 10.0
_log = logging.getLogger("sandboxclient.sandboxer")

Shutdown = Callable[[sandbox_pb.ControllerShutdownRequest], Awaitable[object]]


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
        self._clocks = SandboxClocks(runtime.client, self._end)
        self._unarmed = True
        table.changed = self.arm
        with contextlib.suppress(RuntimeError):  # without a loop yet: at the first write
            self._arm_all()

    def _arm_all(self) -> None:
        asyncio.get_running_loop()  # RuntimeError outside the event loop, before any change
        self._unarmed = False
        for entry in self._table.entries():
            self.arm(entry)

    def arm(self, entry: PodEntry) -> None:
        """(Re)arm ``entry``'s limits from its record; forget them once it is removed."""
        if self._unarmed:
            self._arm_all()
        key = (entry.record.namespace, entry.record.sandbox_id)
        if entry.removed:
            self._clocks.forget(key)
            return
        try:
            limits = time_limits(entry.record.sandbox)
        except GRPCError as exc:  # refused at Create and Update: only a record edited by hand
            _log.warning("sandbox %s: ignoring its time limits: %s", entry.record.key, exc.message)
            limits = TimeLimits()
        self._clocks.arm(key, limits, entry.record.ended_by)

    def status_info(self, entry: PodEntry) -> dict[str, str]:
        """Status ``info`` entries of its limits (see :meth:`SandboxClocks.status_info`)."""
        if self._unarmed:
            self._arm_all()
        return self._clocks.status_info((entry.record.namespace, entry.record.sandbox_id))

    async def _end(self, key: Key, code: int, reason: str) -> None:
        entry = self._table.get(*key)
        if entry is None:
            return
        namespace, sandbox_id = key
        if not entry.synced:
            async with entry.lock:
                if not entry.synced:
                    await self._watch.sync(entry)
        if entry.removed:
            return
        client = self._runtime.client(namespace)
        try:
            info = await client.get_sandbox(sandbox_id)
        except NotFoundError:
            info = None
        if entry.running:
            record = entry.record
            ours = record.ended_by is None  # else decided before (its SIGKILL may be on its way)
            if ours:  # its exit, once recorded (by any sandboxer), says why
                record.ended_by = (code, reason)
                self._table.save(entry)
            try:
                await self._runtime.stop(namespace, sandbox_id)
            except Exception:  # cut short (cancelled), it stays decided: the kill may land
                if ours and entry.running:  # not killed: a later exit is not this limit's doing
                    record.ended_by = None
                    self._table.save(entry)
                raise
            pause_point(ENDING_KILLED)  # tests only: the sandboxer may be killed here
            await self._watch.killed(entry)  # sent: whenever the exit comes, it is the limit's
        if info is None:  # containerd has no record of it: shut it down here
            with request_scope({NAMESPACE_HEADER: namespace}):
                await self._shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id=sandbox_id))
            return
        sandbox = client.sandbox_handle(info)
        if entry.started:  # a Wait through containerd has it publish /sandboxes/exit
            channel = await sandbox.wait(timeout=_EXIT_WAIT)
            exit_status = await channel.get()
            if exit_status.error is not None and not isinstance(exit_status.error, NotFoundError):
                _log.warning("sandbox %s: %s", entry.record.key, exit_status.error)
        await sandbox.shutdown()

    def cancel(self) -> None:
        """Disarm every timer, stop following execs and cut every ending under way short
        (the sandboxes are let go of: a sandboxer that takes them over finishes an ending
        whose record says so, and judges the others' limits afresh)."""
        self._clocks.cancel()

    async def aclose(self) -> None:
        """:meth:`cancel`, and cancel every ending under way; return once they are over."""
        await self._clocks.aclose()
