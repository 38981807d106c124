"""How a :class:`~sandboxclient.sandboxer.ProcessSandboxer` runs a sandbox process: under a
supervisor (:mod:`._supervise`), in a session of its own (:class:`SupervisorLaunch`).

The supervisor is a child subreaper, so the sandbox's whole process tree stays below it
whatever it does (``setsid``, double forks), and it kills that tree when the sandbox's own
process exits or the sandboxer asks (:data:`~._supervise.KILL_TREE`). With a state directory
it outlives the server and writes the exit down, and a server that did not spawn it watches
it with :class:`ProcWatch`; without one it dies with the server, killing the tree.

Nothing is signalled on the strength of a recorded pid alone: only a process whose start
time (and, for the sandbox's, boot id) matches the record, that runs as this uid, and that
is a supervisor of this sandbox's directory or the session leader the supervisor started
(:func:`is_our_supervisor`, :func:`is_our_sandbox_process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, cast

from ._spec import ProcessSpec
from ._state import private_dir
from ._supervise import ANSWER_END, GO, KILL_TREE, exit_file, start_ticks

__all__ = (
    "ChildProtocol",
    "LaunchError",
    "ProcWatch",
    "SupervisedProcess",
    "SupervisorLaunch",
    "is_our_sandbox_process",
    "is_our_supervisor",
)

# The supervisor runs as a top-level module from this directory (_supervise.py sits next to
# this file): with -I -S and its cached bytecode it starts in about the time of a bare
# interpreter (importing the package would not).
_SUPERVISOR_BOOT: Final = (
    "import sys\n"
    f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
    "from _supervise import run\n"
    "run()\n"
)
_ABORT_GRACE: Final = 5.0


def supervisor_argv(directory: str, *, tied: bool) -> list[str]:
    """The command line of the supervisor of the sandbox whose files are in ``directory``."""
    signums = [str(int(signal.SIGPIPE)), str(int(signal.SIGXFSZ))]
    boot = ["-I", "-S", "-c", _SUPERVISOR_BOOT]
    return [sys.executable, *boot, directory, "1" if tied else "0", *signums]


def _owner_and_stat(pid: int) -> tuple[int, list[bytes]] | None:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return uid, raw[raw.rindex(b")") + 2 :].split()


def is_our_supervisor(pid: int, start: int, directory: str) -> bool:
    """Whether ``pid`` is, provably, the supervisor this sandboxer started for the sandbox
    whose files are in ``directory``: same start time, this uid, and the supervisor's
    command line for that directory."""
    if not pid or not start or start_ticks(pid) != start:
        return False
    found = _owner_and_stat(pid)
    if found is None or found[0] != os.geteuid():
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return argv[1:6] == [os.fsencode(a) for a in supervisor_argv(directory, tied=False)[1:6]]


def is_our_sandbox_process(pid: int, start: int, supervisor_start: int) -> bool:
    """Whether ``pid`` is the sandbox process a trusted supervisor (started at
    ``supervisor_start``) reported: the same start time, no earlier than the supervisor's,
    this uid, and the leader of a session of its own (as the supervisor starts it)."""
    if not pid or not start or start < supervisor_start or start_ticks(pid) != start:
        return False
    found = _owner_and_stat(pid)
    if found is None or found[0] != os.geteuid():
        return False
    fields = found[1]
    return int(fields[2]) == pid and int(fields[3]) == pid  # its own group and session


class LaunchError(Exception):
    """A sandbox process could not be started: ``what`` (a file, or the supervisor) and why."""

    def __init__(self, what: str, why: object, *, code: int = 0) -> None:
        super().__init__(f"{what}: {why}")
        self.what = what
        self.why = why
        self.code = code
        """The errno the supervisor answered with, 0 if none."""


class ChildProtocol(asyncio.SubprocessProtocol):
    """Hears of a child's exit from the event loop: no task has to wait on it.

    The exit may come before :meth:`listen` is called; it is kept and handed over then. For
    a supervisor, whose stdout is a pipe, :attr:`answer` is what it wrote there, complete
    once the pipe is closed.
    """

    def __init__(self) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._out = bytearray()
        self._listener: Callable[[int], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport, to read the return code from."""
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        """Collect what a supervisor answers on its stdout, complete at its terminator (an
        event loop may not report the end of the pipe while the child holds a copy of it)."""
        if fd == 1 and isinstance(data, bytes):
            self._out += data
            end = self._out.find(ANSWER_END)
            if end >= 0 and not self.answer.done():
                self.answer.set_result(bytes(self._out[:end]))
                self._close_transport_when_done()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """The answer is complete once stdout is closed."""
        if fd == 1 and not self.answer.done():
            self.answer.set_result(bytes(self._out))
            self._close_transport_when_done()

    def process_exited(self) -> None:
        """Note the return code and tell the listener."""
        assert self.transport is not None
        returncode = self.transport.get_returncode()
        self.returncode = -signal.SIGKILL if returncode is None else returncode
        self._close_transport_when_done()
        self.exited.set()
        if self._listener is not None:
            self._listener(self.returncode)

    def _close_transport_when_done(self) -> None:
        # Only once the process is gone and its answer read: closing the transport earlier
        # would kill the process, or cut the answer short.
        transport = self.transport
        if transport is None or self.returncode is None:
            return
        if transport.get_pipe_transport(1) is None or self.answer.done():
            transport.close()

    def listen(self, listener: Callable[[int], None]) -> None:
        """Have ``listener(returncode)`` called once the process exits (at once if it has)."""
        self._listener = listener
        if self.returncode is not None:
            listener(self.returncode)


class ProcWatch:
    """Calls ``gone`` once, soon after a process that need not be our child is gone.

    A pidfd makes the loop hear of it at once at no cost while it runs; where pidfds are not
    available, /proc is looked at every :attr:`POLL_INTERVAL` seconds. ``start`` is the
    process's start time (clock ticks since boot): a process found with another one is a
    later one that got the same pid, so the watched one is gone.
    """

    POLL_INTERVAL: ClassVar[float] = 0.1

    def __init__(self, pid: int, start: int, gone: Callable[[], None]) -> None:
        self._pid = pid
        self._start = start
        self._gone = gone
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(self._fire)
            return
        except (OSError, AttributeError):
            self._timer = self._loop.call_later(self.POLL_INTERVAL, self._poll)
            return
        self._fd = fd
        if not self._alive():
            self._loop.call_soon(self._fire)
            return
        self._loop.add_reader(fd, self._fire)

    def _alive(self) -> bool:
        return self._start != 0 and start_ticks(self._pid) == self._start

    def _poll(self) -> None:
        if self._alive():
            self._timer = self._loop.call_later(self.POLL_INTERVAL, self._poll)
        else:
            self._fire()

    def _fire(self) -> None:
        if self._done:
            return
        self.cancel()
        self._gone()

    def cancel(self) -> None:
        """Stop watching; ``gone`` will not be called. Idempotent."""
        self._done = True
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass(eq=False)
class SupervisedProcess:
    """A sandbox process under a supervisor: spawned by this controller or found running."""

    supervisor_pid: int
    supervisor_start: int
    pid: int = 0
    pid_start: int = 0
    watch: ProcWatch | None = None
    """Watches a supervisor that is not our child, or the sandbox process it left behind."""

    trusted: bool = False
    """Whether the supervisor is provably this sandboxer's: spawned by this server, or found
    running with the start time and command line of one (:func:`is_our_supervisor`). What
    the record of an untrusted one names is never signalled."""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the sandbox's process group, if its leader is still the process
        we ran; for SIGKILL, have the supervisor kill the whole tree too."""
        if not self.trusted:
            return
        if signum == signal.SIGKILL and self.supervisor_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.supervisor_pid, KILL_TREE)
        if not self.pid or not is_our_sandbox_process(
            self.pid, self.pid_start, self.supervisor_start
        ):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def supervisor_alive(self) -> bool:
        """Whether the supervisor recorded is still that process."""
        return bool(self.supervisor_start) and (
            start_ticks(self.supervisor_pid) == self.supervisor_start
        )

    def stop_watching(self) -> None:
        """Stop watching; the processes are left as they are."""
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None


class SupervisorLaunch:
    """One start of a sandbox process under a supervisor, in steps the caller records.

    :meth:`spawn` starts the supervisor and sends it the spec; :meth:`started` waits for
    its answer (the process's pid); then :meth:`confirm` tells it to go on, or
    :meth:`abandon` leaves it to kill what it started. Until it hears "go" the supervisor
    kills the process when its stdin closes, so a server that dies in between leaves
    nothing running that nobody knows of.
    """

    def __init__(
        self, protocol: ChildProtocol, stdin: asyncio.WriteTransport, process: SupervisedProcess
    ) -> None:
        self._protocol = protocol
        self._stdin = stdin
        self.process = process
        """The supervisor, and once :meth:`started` returned, the process it runs."""

    @classmethod
    async def spawn(
        cls, spec: ProcessSpec, top: str, parts: tuple[str, ...], *, tied: bool
    ) -> SupervisorLaunch:
        """Start a supervisor that writes its exit file and the process's output in the
        directory ``top``/``parts`` (made mode 0700), and send it ``spec``. ``tied``: it
        kills its sandbox if this server dies.

        Raises :class:`LaunchError` when the supervisor cannot be started.
        """
        loop = asyncio.get_running_loop()
        protocol = ChildProtocol()
        try:
            directory = private_dir(top, *parts)
            transport, _ = await loop.subprocess_exec(
                lambda: protocol,
                *supervisor_argv(directory, tied=tied),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env={},
            )
        except OSError as exc:
            raise LaunchError(exc.filename or sys.executable, exc.strerror or exc) from None
        supervisor_pid = transport.get_pid()
        process = SupervisedProcess(supervisor_pid, start_ticks(supervisor_pid) or 0, trusted=True)
        stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        with contextlib.suppress(FileNotFoundError):  # left by an earlier process with this pid
            os.unlink(exit_file(directory, supervisor_pid))
        stdin.write(spec.request())
        return cls(protocol, stdin, process)

    async def started(self) -> None:
        """Wait for the supervisor's answer and note the process's pid and start time.

        Raises :class:`LaunchError` when it could not start the process (it has then been
        waited for, a few seconds at most). Cancelling leaves the launch to :meth:`abandon`.
        """
        answer = (await asyncio.shield(self._protocol.answer)).split(b"\0")
        if answer[0] == b"started" and len(answer) == 3:
            self.process.pid = int(answer[1])
            self.process.pid_start = int(answer[2])
            return
        self._stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_ABORT_GRACE):
                await self._protocol.exited.wait()
        if answer[0] == b"failed" and len(answer) == 3:
            code = int(answer[1])
            raise LaunchError(os.fsdecode(answer[2]), os.strerror(code), code=code)
        raise LaunchError("supervisor", f"exited with {self._protocol.returncode}")

    def confirm(self, gone: Callable[[int], None], *, go: bool = True) -> None:
        """Tell the supervisor to go on (unless not ``go``); ``gone(returncode)`` is called
        once it exits."""
        if go:
            self._stdin.write(GO)
        self._stdin.close()
        self._protocol.listen(gone)

    def abandon(self, gone: Callable[[int], None]) -> None:
        """Leave without "go": the supervisor kills what it may have started, writes that
        down and exits, and then ``gone(returncode)`` is called."""
        self._stdin.close()
        self._protocol.listen(gone)
