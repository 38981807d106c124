"""An isolated sandbox's output log, bounded: its task writes to a FIFO that the sandboxer's
keeper process (:mod:`._logcap`, one for all of its sandboxes) copies to the log up to a
limit, counting what it drops.

The keeper is started on the first Start and detached from the sandboxer, so the logs go on
being kept (and bounded) while the sandboxer is restarted. A Start costs a FIFO, three opens
and one message, no process. The count of dropped bytes is in the sandbox's directory
(:data:`DROPPED_FILE`) and shows in Status as ``info["log_dropped_bytes"]``.

The keeper is no single point of failure:

- The sandboxer keeps its own descriptor of each live log's FIFO's read end (it never reads
  it): with the keeper gone, the task's writers never lack a reader (no ``EPIPE``, no lost
  output); they block on a full pipe until a keeper reads again.
- It watches the keeper's socket: when it ends (the keeper died), or a Start's message does
  not fit in it (the keeper does not read: it is killed first), it starts another (tried
  again until one starts) and hands it every live log again (a fresh writer, the log
  reopened; the count of bytes dropped goes on from :data:`DROPPED_FILE`). What the dead
  keeper had read but not yet written, and its count of the last 0.1 s, are what is lost:
  what was in flight. A log whose handover fails (its log cannot be opened just then, the
  keeper does not take the message: then it is replaced) is handed over again later, until
  it is or its sandbox is gone; its writers block meanwhile, losing nothing.
- The keeper's pid is in :data:`KEEPER_FILE` of the sandboxer's directory. A sandboxer
  started again over it opens the FIFO of every sandbox it takes back, ends the old keeper
  (SIGTERM: it writes its counts and exits without losing anything, the rest being in the
  FIFOs) and hands them to a keeper of its own.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Final

from .._plumbing._pipes import readable
from ._stages import mark
from ._supervise import start_ticks

__all__ = (
    "DEFAULT_LOG_LIMIT",
    "DROPPED_FILE",
    "KEEPER_FILE",
    "LOG_PIPE",
    "LogKeep",
    "LogKeepers",
    "dropped_bytes",
)

DEFAULT_LOG_LIMIT: Final = 16 * 2**20
"""Bytes of a sandbox's output kept in its log unless the sandboxer is told otherwise."""
LOG_PIPE: Final = "output.pipe"
"""The FIFO the sandbox's task writes its output to, in its directory."""
DROPPED_FILE: Final = "output.dropped"
"""How many bytes of output were dropped past the limit, in the sandbox's directory."""
KEEPER_FILE: Final = "logkeeper.pid"
"""The keeper's pid and start time (clock ticks since boot), in the sandboxer's directory."""

# Loaded from its file, not through sys.path: the package's own _socket.py would shadow the
# standard library's _socket module.
_BOOT: Final = (
    "import importlib.util as u\n"
    "s = u.spec_from_file_location('_logcap', "
    f"{os.path.join(os.path.dirname(os.path.abspath(__file__)), '_logcap.py')!r})\n"
    "m = u.module_from_spec(s)\n"
    "s.loader.exec_module(m)\n"
    "m.run()\n"
)
_START_TIMEOUT: Final = 10.0
_HANDOVER_TIMEOUT: Final = 5.0
_RETRY_FIRST: Final = 0.5
_RETRY_MAX: Final = 30.0
_OPEN: Final = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_log = logging.getLogger("sandboxclient.sandboxer")


def dropped_bytes(directory: str) -> int:
    """The bytes the sandbox whose files are in ``directory`` had dropped (0 when none)."""
    try:
        with open(os.path.join(directory, DROPPED_FILE), "rb") as f:
            text = f.read(32)
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


@dataclass(eq=False)
class _Held:
    """A live log as the sandboxer holds it: its FIFO's read end, and how to hand it over."""

    directory: str
    log: str
    limit: int
    fifo: int
    """The sandboxer's own descriptor of the FIFO's read end (never read)."""
    number: int
    """Its number with the keeper (``keep``, ``release``)."""
    released: bool = False

    @property
    def gone(self) -> bool:
        """Whether its FIFO was removed (the sandbox with it)."""
        try:
            return os.fstat(self.fifo).st_nlink == 0
        except OSError:
            return True


class LogKeep:
    """A sandbox's log in the keeper's hands: :attr:`fifo` is what the task's output goes
    to; :meth:`release` once the task started (or failed to)."""

    def __init__(self, keepers: LogKeepers, held: _Held, fifo: str) -> None:
        self._keepers: LogKeepers | None = keepers
        self._held = held
        self.fifo = fifo

    def release(self) -> None:
        """Tell the keeper the task's writers are open, or will never be: it lets go of the
        log once they are all closed. Idempotent."""
        keepers, self._keepers = self._keepers, None
        if keepers is not None:
            self._held.released = True
            keepers.send({"release": self._held.number})


class LogKeepers:
    """The keeper of one sandboxer's logs (started on first use; see the module's
    docstring); :meth:`close` when the sandboxer lets go of its sandboxes.

    With ``base`` (the sandboxer's directory) its keeper's pid is kept there, and the logs
    in ``live`` ((sandbox directory, log) of each sandbox it took back that was started)
    are taken over from the keeper the sandboxer before it left, kept to ``limit`` bytes.
    """

    def __init__(
        self, base: str | None = None, live: Iterable[tuple[str, str]] = (), limit: int = 0
    ) -> None:
        self._base = base
        self._control: socket.socket | None = None
        self._pidfd: int | None = None
        """The keeper's pidfd, with :attr:`_control`."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting = asyncio.Lock()
        self._count = 0
        self._held: dict[str, _Held] = {}
        """By the sandbox's directory."""
        self._pruned_at = 0
        self._unhanded: set[str] = set()
        """The directories of the held logs the keeper was not handed (a failed handover)."""
        self._handing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._taking_over: asyncio.Task[None] | None = None
        self._pending: tuple[list[tuple[str, str]], int] | None = None
        if base is not None and (live or os.path.exists(os.path.join(base, KEEPER_FILE))):
            self._pending = (list(live), limit)
            with contextlib.suppress(RuntimeError):  # without a loop: at the first keep()
                asyncio.get_running_loop()
                self._begin_takeover()

    def _spawn(self, work: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name="sandboxclient.log-keeper")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _begin_takeover(self) -> None:
        if self._pending is not None:
            live, limit = self._pending
            self._pending = None
            self._taking_over = self._spawn(self._take_over(live, limit))

    async def keep(self, directory: str, log: str, limit: int) -> LogKeep:
        """Make the FIFO in ``directory`` and hand it to the keeper, which appends what comes
        through it to ``log`` (an existing file) up to ``limit`` bytes; OSError when that
        cannot be done."""
        await self._took_over()
        fifo = os.path.join(directory, LOG_PIPE)
        for stale in (fifo, os.path.join(directory, DROPPED_FILE)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        os.mkfifo(fifo, 0o600)
        fds: list[int] = []
        try:
            # Both ends, before the task exists: in flight to the keeper, they keep the FIFO
            # open, so the shim's opening it never waits and no gap reads as the end.
            fds.append(os.open(fifo, os.O_RDONLY | _OPEN))
            fds.append(os.open(fifo, os.O_WRONLY | _OPEN))
            fds.append(os.open(log, os.O_WRONLY | os.O_APPEND | _OPEN))
            self._count += 1
            message = {"keep": self._count, "dropped": os.path.join(directory, DROPPED_FILE),
                       "limit": limit}  # fmt: skip
            try:
                self._send(await self._connected(), message, fds)
            except OSError:  # the keeper is gone, or does not read: a new one for all
                self._lost(stuck=True)
                self._send(await self._connected(), message, fds)
            held = _Held(directory, log, limit, fds.pop(0), self._count)  # its own reader
        finally:
            for fd in fds:
                os.close(fd)
        self._hold(held)
        mark("log keeper")
        return LogKeep(self, held, fifo)

    def _hold(self, held: _Held) -> None:
        old = self._held.pop(held.directory, None)
        if old is not None:
            os.close(old.fifo)
        self._held[held.directory] = held
        if len(self._held) > 2 * self._pruned_at + 64:  # those of removed sandboxes go
            for found in [h for h in self._held.values() if h.gone]:
                os.close(self._held.pop(found.directory).fifo)
            self._pruned_at = len(self._held)

    def _send(self, control: socket.socket, message: object, fds: list[int]) -> None:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        control.sendmsg([json.dumps(message).encode()], rights)

    def send(self, message: object) -> None:
        """Send the keeper ``message`` (without descriptors); a keeper gone is let be (its
        successor is handed the log as released)."""
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._send(self._control, message, [])

    async def _connected(self) -> socket.socket:
        """The keeper's socket: a new keeper, handed every live log, if there is none."""
        async with self._starting:
            if self._control is None:
                control = await self._start()
                self._control = control
                self._loop = asyncio.get_running_loop()
                self._loop.add_reader(control.fileno(), self._ended, control)
                for held in list(self._held.values()):
                    self._hand_over(control, held)
            return self._control

    def _hand_over(self, control: socket.socket, held: _Held) -> OSError | None:
        """Give a new keeper a log another had: the FIFO's read end, a fresh writer (let go
        of after the grace once released: a Start under way releases it as usual) and the
        log reopened; the error when that failed (it is tried again)."""
        fifo = os.path.join(held.directory, LOG_PIPE)
        fds: list[int] = []
        try:
            if held.gone:
                raise FileNotFoundError(fifo)
            fds.append(os.open(fifo, os.O_WRONLY | _OPEN))
            fds.append(os.open(held.log, os.O_WRONLY | os.O_APPEND | _OPEN))
            message = {"keep": held.number, "dropped": os.path.join(held.directory, DROPPED_FILE),
                       "limit": held.limit, "released": held.released}  # fmt: skip
            self._send(control, message, [held.fifo, fds[0], fds[1]])
        except FileNotFoundError:  # the sandbox is gone
            os.close(self._held.pop(held.directory).fifo)
        except OSError as exc:
            _log.warning("handing the output log in %s to a keeper (tried again): %s",
                         held.directory, exc)  # fmt: skip
            self._unhanded.add(held.directory)
            if self._handing is None or self._handing.done():
                self._handing = self._spawn(self._hand_over_again())
            return exc
        finally:
            for fd in fds:
                os.close(fd)
        return None

    async def _hand_over_again(self) -> None:
        """Hand the keeper the logs whose handover failed, after :data:`_RETRY_FIRST` s, twice
        as long each time up to :data:`_RETRY_MAX`, until none is left (a new keeper is
        handed every log anyway). A keeper that does not take the message (its socket
        full) is killed and replaced, as a Start replaces it."""
        delay = _RETRY_FIRST
        while self._unhanded:
            await asyncio.sleep(delay)
            delay = min(2 * delay, _RETRY_MAX)
            try:
                control = await self._connected()
            except OSError:  # _replaced() tries again too; so do we, later
                continue
            for directory in list(self._unhanded):
                self._unhanded.discard(directory)
                held = self._held.get(directory)
                if held is not None and isinstance(self._hand_over(control, held), BlockingIOError):
                    self._lost(stuck=True)
                    self._spawn(self._replaced())  # handed every log, this one too
                    return

    def _ended(self, control: socket.socket) -> None:
        """The keeper's socket is readable: it sends nothing after its pid, so it is gone."""
        try:
            if control.recv(64):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        if control is self._control:
            self._lost()
            if self._held:
                self._spawn(self._replaced())

    async def _replaced(self) -> None:
        """Start a keeper for the live logs: a failure is tried again (their writers block
        meanwhile), after :data:`_RETRY_FIRST` s, twice as long each time up to
        :data:`_RETRY_MAX`, until one starts or no log is left."""
        delay = _RETRY_FIRST
        while self._held:
            try:
                await self._connected()
                return
            except OSError as exc:
                _log.error("no output log keeper could be started (again in %g s): %s",
                           delay, exc)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(2 * delay, _RETRY_MAX)

    def _lost(self, *, stuck: bool = False) -> None:
        """Let go of the keeper's socket; ``stuck`` (it is to be replaced): SIGKILL it too, so
        that two keepers never copy the same FIFOs (a no-op if it is gone)."""
        control, self._control = self._control, None
        pidfd, self._pidfd = self._pidfd, None
        self._unhanded.clear()  # the next keeper is handed every log
        if pidfd is not None:
            if stuck:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        if control is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(control.fileno())
            control.close()

    async def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", _BOOT, stdin=theirs.fileno(),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                cwd="/", env={},
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # A keeper that stops reading must fail a Start, not block the sandboxer.
        ours.setblocking(False)
        said = b""
        try:
            async with asyncio.timeout(_START_TIMEOUT):  # its parent exits once it is detached
                await process.wait()
                if process.returncode != 0:
                    raise OSError(f"the log keeper did not start (exit {process.returncode})")
                said = await asyncio.get_running_loop().sock_recv(ours, 64)
            pid = int(json.loads(said)["pid"])
        except BaseException as exc:
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())  # reaped (its transport closed), even if cut
            if isinstance(exc, ValueError | KeyError | TypeError):
                raise OSError(f"the log keeper did not start: it said {said!r}") from None
            raise
        try:  # pinned, to kill it if it stops reading (not another process with its pid)
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone already: its socket says so at once
            pidfd = None
        self._pidfd = pidfd
        self._remember(pid)
        return ours

    def _remember(self, pid: int) -> None:
        """Write the keeper's pid down for a sandboxer started again; and let this one hold
        a descriptor per live log (as many as the hard limit allows)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if self._base is None:
            return
        path = os.path.join(self._base, KEEPER_FILE)
        try:
            with open(path + ".tmp", "w", encoding="ascii", opener=_private) as f:
                f.write(f"{pid} {start_ticks(pid)}")
            os.rename(path + ".tmp", path)
        except OSError as exc:
            _log.warning("cannot write the log keeper's pid down: %s", exc)

    async def _took_over(self) -> None:
        """Return once the logs of the sandboxer before are this one's (see __init__)."""
        self._begin_takeover()
        if self._taking_over is not None and not self._taking_over.done():
            await asyncio.shield(self._taking_over)

    async def _take_over(self, live: list[tuple[str, str]], limit: int) -> None:
        """Hold every live log's FIFO, end the last sandboxer's keeper, hand them to ours."""
        for directory, log in live:
            try:
                fifo = os.open(os.path.join(directory, LOG_PIPE), os.O_RDONLY | _OPEN)
            except OSError:  # its task never had one, or it is gone
                continue
            self._count += 1
            self._held[directory] = _Held(directory, log, limit, fifo, self._count, True)
        assert self._base is not None
        await _end_keeper(os.path.join(self._base, KEEPER_FILE))
        if self._held and self._control is None:
            self._spawn(self._replaced())  # not awaited by a Start: tried again until it is

    def forget(self, directory: str) -> None:
        """Let go of the FIFO of the sandbox in ``directory`` (shut down: its log ends with
        its last writer, the keeper lets go of it then)."""
        held = self._held.pop(directory, None)
        if held is not None:
            os.close(held.fifo)

    def close(self) -> None:
        """Let go of the keeper: it releases every log not yet released and ends after the
        last one; and of the logs held. The next :meth:`keep` starts another. Idempotent."""
        for task in list(self._tasks):
            task.cancel()
        self._lost()
        for held in self._held.values():
            os.close(held.fifo)
        self._held.clear()

    async def aclose(self) -> None:
        """:meth:`close`, and return once what it cut short (a keeper's start, a takeover)
        is over."""
        tasks = list(self._tasks)
        self.close()
        await asyncio.gather(*tasks, return_exceptions=True)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)


def _keeper_of(path: str) -> tuple[int, int] | None:
    """The pid and start time ``path`` names (written by :meth:`LogKeepers._remember`)."""
    try:
        with open(path, "rb", opener=_private) as f:
            pid_text, ticks_text = f.read(64).split()
        pid, ticks = int(pid_text), int(ticks_text)
    except (OSError, ValueError):
        return None
    return (pid, ticks) if pid > 1 else None


async def _end_keeper(path: str) -> None:
    """End the keeper whose pid ``path`` holds, if it still runs (SIGTERM; SIGKILL after
    :data:`_HANDOVER_TIMEOUT` s), and return once it is gone.

    The pid is pinned (a pidfd) before its start time is compared with the one written
    down: a keeper that exited and whose pid was reused by an unrelated process is never
    signalled, even when the reuse falls between reading the file and opening the pidfd."""
    named = _keeper_of(path)
    if named is None:
        return
    pid, ticks = named
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    if start_ticks(pid) != ticks:  # another process (or none): not ours to signal
        os.close(pidfd)
        return
    try:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signum)
            with contextlib.suppress(TimeoutError):  # a pidfd stays readable once it exited
                async with asyncio.timeout(_HANDOVER_TIMEOUT):
                    await readable(pidfd)
                return
    finally:
        os.close(pidfd)
