"""Warm pools: started sandboxes kept ready, handed out at once and never reused.

Each sandbox of a pool lives in one task the Client owns (:meth:`Client.create_task`): it
creates and starts the sandbox inside ``client.sandbox(...)``, offers it, waits until it is
released (or dies while idle), and leaves the block, which shuts it down to its end even when
cancelled. Closing the pool, or the Client, cancels those tasks; so nothing a pool made
outlives either, and a sandbox is shut down by the task that made it, whoever gave it back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._creation._oneshot import checked_command
from ._facts._validation import checked_identifier
from ._plumbing._connection import ClientState, run_to_end
from ._run import shown_command
from .errors import ClientClosedError, WarmUpError

if TYPE_CHECKING:
    from ._client import Client
    from ._plumbing._wait import ExitChannel
    from ._sandbox import Sandbox

__all__ = ("PoolStats", "SandboxPool")

_WARM_UP_OUTPUT = 4096
"""What a warm-up's output may take of the client's memory: it is read and dropped."""
_WARM_UP_SHOWN = 200
"""How much of a failed warm-up's stderr its error shows."""
_log = logging.getLogger("sandboxclient")

# new_sandbox's keywords a template may not carry: the pool names its sandboxes itself.
_NOT_TEMPLATE = frozenset({"self", "sandbox_id"})


@dataclass(frozen=True)
class PoolStats:
    """A pool's sandboxes by where they are, and what it has done so far."""

    idle: int
    """Started and waiting to be acquired."""
    starting: int
    """Being created and started (and warmed up, with ``warm_up``)."""
    in_use: int
    """Acquired and not yet released."""
    stopping: int
    """Released (or dead) and being shut down."""
    waiting: int
    """Callers of ``acquire()`` waiting for a sandbox."""
    made: int
    """Sandboxes started (and warmed up) so far."""
    died_idle: int
    """Sandboxes that exited while idle and were replaced rather than handed out."""
    failed: int
    """Creations, starts or warm-ups that failed."""


class _Slot:
    """One pooled sandbox and the task that keeps it."""

    __slots__ = ("exited", "in_use", "released", "sandbox", "task")

    def __init__(self) -> None:
        self.sandbox: Sandbox | None = None
        self.exited: ExitChannel | None = None
        self.released = asyncio.Event()
        self.in_use = False
        self.task: asyncio.Task[None] | None = None


class SandboxPool:
    """Sandboxes started ahead of need: ``async with pool.acquire() as sb`` hands one out.

    ``template`` holds the keyword arguments of :meth:`Client.new_sandbox` every sandbox
    is made with (not its id: the pool names them ``<prefix>-<random>``). The pool starts
    ``size`` sandboxes; ``acquire()`` hands out an idle one without a call to the daemon,
    and the release shuts it down (it is never handed out again) and starts its
    replacement, both in the background: once all are given back, ``size`` are idle again.
    Replacing on release rather than on acquire keeps a start from competing with the
    caller's own work. An ``acquire()`` that finds none idle waits, starting one while
    fewer than ``max_size`` (by default ``size``, at least 1) are alive (idle, starting,
    in use or shutting down). A sandbox that exits while idle is replaced, not handed out
    (seen through its wait channel, so one that dies in the instant before an
    ``acquire()`` can still be handed out: ``run`` on it then fails).

    Use it as ``async with SandboxPool(client, size=2, template={...}) as pool:``, or call
    :meth:`fill` and :meth:`aclose`. Closing the pool shuts down every sandbox it made,
    those in use too; closing the Client closes its pools' sandboxes as well. A creation
    that fails is raised to the oldest waiting ``acquire()``; the pool then starts no other
    until the next ``acquire()`` asks, so a bad template does not loop.

    ``warm_up`` is a command (a sequence of strings, as for ``run``) each sandbox runs once,
    through ``run``, before it is offered, its output dropped: what a caller's first
    command would otherwise pay is paid in the background (an interpreter or a tool read
    into the page cache, a file made; and the first exec into a new sandbox is a few ms
    slower than the next, see the benchmarks). A warm-up that exits non-zero fails that
    sandbox's creation with :class:`~sandboxclient.errors.WarmUpError` naming the command
    and its exit code, one that does not end within the Client's default ``timeout`` with
    ``CommandTimeoutError`` (raised to a waiting ``acquire()``, the sandbox shut down, as for
    any failed creation); a Client with ``timeout=None`` leaves the warm-up unbounded.
    """

    def __init__(
        self,
        client: Client,
        *,
        size: int = 1,
        max_size: int | None = None,
        template: Mapping[str, Any] | None = None,
        prefix: str = "pool",
        warm_up: Sequence[str] | None = None,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size= must be an int, not {type(size).__name__}")
        if size < 0:
            raise ValueError(f"size= must be 0 or more, not {size}")
        if max_size is None:
            max_size = max(size, 1)
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise TypeError(f"max_size= must be an int, not {type(max_size).__name__}")
        if max_size < max(size, 1):
            raise ValueError(f"max_size= must be at least size= and 1, not {max_size}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix= must be a str, not {type(prefix).__name__}")
        checked_identifier(f"{prefix}-{'0' * 16}", "prefix=")
        self._client = client
        self._size = size
        self._max_size = max_size
        self._template = _checked_template(client, template)
        self._prefix = prefix
        self._warm_up = _checked_warm_up(warm_up)
        self._slots: set[_Slot] = set()
        self._idle: collections.deque[_Slot] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Slot]] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._failing: Exception | None = None
        self._made = self._died_idle = self._failed = 0

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<SandboxPool size={self._size} max_size={self._max_size} idle={s.idle} "
            f"starting={s.starting} in_use={s.in_use}{' closed' if self._closed else ''}>"
        )

    @property
    def size(self) -> int:
        """How many started sandboxes the pool keeps idle."""
        return self._size

    @property
    def max_size(self) -> int:
        """How many sandboxes of the pool may be alive at once (idle, starting, in use or
        shutting down)."""
        return self._max_size

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    def stats(self) -> PoolStats:
        """The pool's sandboxes by where they are, as of now."""
        started = sum(1 for s in self._slots if s.sandbox is not None)
        in_use = sum(1 for s in self._slots if s.in_use and not s.released.is_set())
        idle = len(self._idle)
        return PoolStats(
            idle=idle,
            starting=len(self._slots) - started,
            in_use=in_use,
            stopping=started - idle - in_use,
            waiting=sum(1 for w in self._waiters if not w.done()),
            made=self._made,
            died_idle=self._died_idle,
            failed=self._failed,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> SandboxPool:
        self.fill()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def fill(self) -> None:
        """Start the sandboxes the pool is short of, in the background (``acquire()`` does
        this too); :meth:`ready` waits for them."""
        self._check_open()
        self._failing = None
        self._refill()

    async def ready(self) -> None:
        """Fill the pool and return once ``size`` sandboxes are idle and none is starting
        or shutting down: the pool is doing nothing in the background.

        Raises the error of a creation that failed meanwhile instead of waiting on.
        """
        self.fill()
        while True:
            self._check_open()
            if self._failing is not None:
                raise self._failing
            stats = self.stats()
            if stats.idle >= self._size and not stats.starting and not stats.stopping:
                return
            self._ready.clear()
            await self._ready.wait()

    async def aclose(self) -> None:
        """Shut down every sandbox the pool made (in use or not) and stop refilling.

        Waiting ``acquire()`` calls raise ``ClientClosedError``. Idempotent; a cancelled
        ``aclose()`` still finishes the shutdowns before raising the cancellation.
        """
        self._closed = True
        self._ready.set()
        self._fail_waiters(ClientClosedError("the sandbox pool was closed"))
        tasks = [s.task for s in self._slots if s.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await run_to_end(asyncio.ensure_future(asyncio.wait(tasks)))

    # -- handing out -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[Sandbox]:
        """Hand out a started sandbox for the ``async with`` block, and shut it down after.

        An idle sandbox is handed out at once; else the call waits (at most ``timeout``
        seconds, then ``TimeoutError``) for one the pool starts. The sandbox is the caller's
        alone; on leaving the block it is shut down in the background and replaced.
        """
        slot = await self._take(timeout)
        assert slot.sandbox is not None
        try:
            yield slot.sandbox
        finally:
            slot.released.set()
            self._refill()

    async def _take(self, timeout: float | None) -> _Slot:
        self._check_open()
        self._failing = None
        while self._idle:
            slot = self._idle.popleft()
            if _alive(slot):
                slot.in_use = True
                return slot
        waiter: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._refill()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter)
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed to us as we were cancelled: unused, so the next caller's.
                waiter.result().in_use = False
                self._offer(waiter.result())
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _offer(self, slot: _Slot) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                slot.in_use = True
                waiter.set_result(slot)
                return
        self._idle.append(slot)
        self._ready.set()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the sandbox pool is closed")
        if self._client.state is ClientState.CLOSED:
            raise ClientClosedError("the pool's client is closed")

    # -- keeping -----------------------------------------------------------------------------

    def _refill(self) -> None:
        if self._client.state is ClientState.CLOSED:
            # Its tasks were cancelled with it: nobody will hand a waiter anything.
            self._fail_waiters(ClientClosedError("the pool's client was closed"))
            return
        if self._closed or self._failing is not None:
            return
        waiting = sum(1 for w in self._waiters if not w.done())
        starting = sum(1 for s in self._slots if s.sandbox is None)
        while (
            len(self._slots) < self._max_size and len(self._idle) + starting < self._size + waiting
        ):
            slot = _Slot()
            self._slots.add(slot)
            sandbox_id = f"{self._prefix}-{uuid.uuid4().hex[:16]}"
            slot.task = self._client.create_task(
                self._keep(slot, sandbox_id), name=f"sandboxclient-pool-{sandbox_id}"
            )
            starting += 1

    async def _keep(self, slot: _Slot, sandbox_id: str) -> None:
        try:
            async with self._client.sandbox(sandbox_id, **self._template) as sb:
                if self._warm_up is not None:
                    await _warm(sb, self._warm_up, self._client.timeout)
                self._made += 1
                slot.exited = await sb.wait()
                slot.sandbox = sb
                try:
                    self._offer(slot)
                    await self._until_released(slot)
                finally:
                    slot.exited.close()
                    slot.released.set()
                    with contextlib.suppress(ValueError):
                        self._idle.remove(slot)
        except Exception as exc:
            if slot.sandbox is None:
                self._failed += 1
                self._failing = exc
                self._fail_one(exc)
                self._ready.set()
            else:
                _log.warning("shutting down pooled sandbox %s: %s", sandbox_id, exc)
        finally:
            self._slots.discard(slot)
            self._refill()
            self._ready.set()

    async def _until_released(self, slot: _Slot) -> None:
        assert slot.exited is not None
        released = asyncio.ensure_future(slot.released.wait())
        exited = asyncio.ensure_future(slot.exited.get())
        try:
            await asyncio.wait([released, exited], return_when=asyncio.FIRST_COMPLETED)
            if not released.done() and not slot.in_use:
                self._died_idle += 1  # never handed out: replaced by the refill
            elif not released.done():
                await released  # its user's to notice; shut down once given back
        finally:
            released.cancel()
            exited.cancel()

    def _fail_waiters(self, exc: Exception) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def _fail_one(self, exc: Exception) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
                return


async def _warm(sb: Sandbox, command: tuple[str, ...], timeout: float | None) -> None:
    """Run the pool's warm-up ``command`` in ``sb`` within ``timeout`` (the Client's
    default deadline); WarmUpError when it exits non-zero, CommandTimeoutError when it
    does not end in time."""
    done = await sb.run(*command, max_output=_WARM_UP_OUTPUT, timeout=timeout)
    if done.returncode != 0:
        shown = done.stderr[:_WARM_UP_SHOWN]
        cut = " (cut)" if len(done.stderr) > _WARM_UP_SHOWN or done.stderr_truncated else ""
        raise WarmUpError(
            f"the pool's warm_up command {shown_command(command)} exited with "
            f"{done.returncode} in sandbox {sb.id}; its stderr began {shown!r}{cut}",
            command=command,
            returncode=done.returncode,
            sandbox_id=sb.id,
            stdout=done.stdout,
            stderr=done.stderr,
        )


def _checked_warm_up(warm_up: Sequence[str] | None) -> tuple[str, ...] | None:
    if warm_up is None:
        return None
    if isinstance(warm_up, str | bytes):
        raise TypeError(
            "warm_up= must be a command, a sequence of strings, not one string: "
            'warm_up=("true",) or warm_up=shlex.split(...)'
        )
    try:
        return checked_command(warm_up)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"warm_up= {exc}") from None


def _alive(slot: _Slot) -> bool:
    return slot.exited is not None and not slot.exited.done()


def _checked_template(client: Client, template: Mapping[str, Any] | None) -> dict[str, Any]:
    if template is None:
        return {}
    if not isinstance(template, Mapping):
        raise TypeError(f"template= must be a mapping, not {type(template).__name__}")
    allowed = set(inspect.signature(client.new_sandbox).parameters) - _NOT_TEMPLATE
    for key in template:
        if key not in allowed:
            raise TypeError(
                f"template= has {key!r}, which is not a keyword of new_sandbox()"
                + (" (the pool names its sandboxes)" if key in _NOT_TEMPLATE else "")
            )
    return dict(template)
