"""A sandbox controller whose sandboxes are plain processes on this host.

Without a state directory each sandbox is a child process of the server, and the sandboxes
live and die with it. With one, each sandbox runs under a small supervisor process
(:mod:`._supervise`) in a session of its own, which writes down how the sandbox ended; the
controller writes its sandboxes down there too, so a sandboxer that was killed and started
again over the same directory finds them, watches the ones still running and answers every
Wait with the real exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final, cast

from grpclib.exceptions import GRPCError

from .._common import (
    RUNTIME_SPEC_TYPE_URL,
    STATE_NOTREADY,
    STATE_READY,
    UNKNOWN_EXIT_STATUS,
    go_arch,
    utcnow,
)
from .._errdefs import (
    already_exists,
    failed_precondition,
    go_quote,
    invalid_argument,
    not_found,
    unavailable,
)
from .._fields import SANDBOX_FIELDS, copy_message, required, required_sandbox
from .._pb import AnyPb, MetricPb, PlatformPb, sandbox_pb
from .._server import current_namespace
from .._validation import identifier_problem
from . import _supervise
from ._base import SandboxController
from ._state import SandboxState, StateDir, boot_id, read_exit
from ._supervise import exit_file, start_ticks

__all__ = ("ProcessSandboxer",)

_log = logging.getLogger("sandboxclient.sandboxer")

DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SLEEP_FOREVER: Final = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    "import signal\nwhile True:\n    signal.pause()",
)
# The supervisor runs as a top-level module from this directory: with -I -S and its cached
# bytecode it starts in about the time of a bare interpreter (importing the package would not).
_SUPERVISOR_BOOT: Final = (
    "import sys\n"
    f"sys.path.insert(0, {os.path.dirname(os.path.abspath(_supervise.__file__))!r})\n"
    "from _supervise import run\n"
    "run()\n"
)
# Empty labels are dropped, and named entries the update lacks are removed.
_UPDATABLE: Final = dataclasses.replace(SANDBOX_FIELDS, drop_empty=True)
_CLOSE_GRACE: Final = 10.0
_ABORT_GRACE: Final = 5.0


@dataclass(frozen=True)
class _ProcessSpec:
    """The part of an OCI runtime spec this controller acts on."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str

    @classmethod
    def parse(cls, spec: AnyPb | None) -> _ProcessSpec:
        """Read ``process.args``/``env``/``cwd``; no spec or no args means sleep until stopped.

        Raises INVALID_ARGUMENT when the spec is not a JSON runtime spec of that shape.
        """
        if spec is None or (not spec.type_url and not spec.value):
            return cls(_SLEEP_FOREVER, (DEFAULT_PATH,), "/")
        if spec.type_url != RUNTIME_SPEC_TYPE_URL:
            raise invalid_argument(
                f"spec type {go_quote(spec.type_url)} is not supported, "
                f"only {RUNTIME_SPEC_TYPE_URL}"
            )
        try:
            decoded = json.loads(spec.value)
        except ValueError as exc:
            raise invalid_argument(f"spec is not valid JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise invalid_argument("spec must be a JSON object")
        process = decoded.get("process") or {}
        if not isinstance(process, dict):
            raise invalid_argument("spec process must be an object")
        args = _strings(process.get("args"), "process.args")
        env = _strings(process.get("env"), "process.env")
        if any("=" not in item for item in env):
            raise invalid_argument("spec process.env entries must be KEY=VALUE")
        cwd = process.get("cwd") or "/"
        if not isinstance(cwd, str):
            raise invalid_argument("spec process.cwd must be a string")
        if "\0" in cwd:
            raise invalid_argument("spec process.cwd must not contain NUL")
        if "env" not in process:
            env = (DEFAULT_PATH,)
        return cls(args or _SLEEP_FOREVER, env, cwd)

    def request(self) -> bytes:
        """The request that tells a supervisor what to run (see :mod:`._supervise`)."""
        fields = [os.fsencode(self.cwd), str(len(self.args)).encode()]
        fields += [os.fsencode(arg) for arg in self.args]
        fields += [os.fsencode(item) for item in self.env]
        payload = b"\0".join(fields)
        return b"%d\n" % len(payload) + payload


def _strings(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_argument(f"spec {what} must be a list of strings")
    if any("\0" in item for item in value):
        raise invalid_argument(f"spec {what} must not contain NUL")
    return tuple(value)


class _ChildProtocol(asyncio.SubprocessProtocol):
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
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd == 1 and isinstance(data, bytes):
            self._out += data

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and not self.answer.done():
            self.answer.set_result(bytes(self._out))
            self._release()

    def process_exited(self) -> None:
        assert self.transport is not None
        returncode = self.transport.get_returncode()
        self.returncode = -signal.SIGKILL if returncode is None else returncode
        self._release()
        self.exited.set()
        if self._listener is not None:
            self._listener(self.returncode)

    def _release(self) -> None:
        # Once the process is gone and its answer read, this only releases the transport
        # (closing it earlier would kill the process, or cut the answer short).
        transport = self.transport
        if transport is None or self.returncode is None:
            return
        if transport.get_pipe_transport(1) is None or self.answer.done():
            transport.close()

    def listen(self, listener: Callable[[int], None]) -> None:
        self._listener = listener
        if self.returncode is not None:
            listener(self.returncode)


class _ProcWatch:
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
class _Direct:
    """A sandbox process that is the server's own child (no state directory)."""

    transport: asyncio.SubprocessTransport
    pid: int

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process group, or to the process if it left its group."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self.transport.send_signal(signum)

    def release(self) -> None:
        """Nothing to let go of: the event loop's child watcher holds the process."""


@dataclass(eq=False)
class _Supervised:
    """A sandbox process under a supervisor: spawned by this controller or found running."""

    supervisor_pid: int
    supervisor_start: int
    pid: int = 0
    pid_start: int = 0
    watch: _ProcWatch | None = None
    """Watches a supervisor that is not our child, or the sandbox process it left behind."""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process group, if its leader is still the process we ran.

        Once the leader is gone its supervisor kills the rest of the group at once.
        """
        if not self.pid or start_ticks(self.pid) != self.pid_start:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def release(self) -> None:
        """Stop watching; the processes are left as they are."""
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None


@dataclass(eq=False)
class _Entry:
    """A sandbox's state plus the live objects that cannot be written down."""

    state: SandboxState
    spec: _ProcessSpec
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the process has exited, or the sandbox was forgotten before it did."""
    process: _Direct | _Supervised | None = None
    removed: bool = False

    @property
    def started(self) -> bool:
        return self.process is not None

    @property
    def running(self) -> bool:
        return self.process is not None and self.state.exit_status is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the sandbox's process group if it runs."""
        if self.process is not None and self.state.exit_status is None:
            self.process.signal(signum)


def _read_proc(pid: int) -> dict[str, Any]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    user = int(fields[11]) / ticks
    system = int(fields[12]) / ticks
    return {
        "pid": pid,
        "rss_bytes": _exact_rss(pid) or int(fields[21]) * page,
        "threads": int(fields[17]),
        "cpu_user_seconds": user,
        "cpu_system_seconds": system,
        "cpu_seconds": user + system,
    }


def _exact_rss(pid: int) -> int | None:
    """Resident bytes counted from the page tables. The figure in /proc/PID/stat comes from
    counters that lag by up to a batch per CPU: a process that just started may show 0 there.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class ProcessSandboxer(SandboxController):
    """A :class:`SandboxController` that runs each sandbox as a real process on this host.

    The process comes from the OCI runtime spec in ``ControllerCreateRequest.sandbox.spec``
    (``process.args``, ``process.env``, ``process.cwd``; without a spec or args it sleeps
    until stopped) and runs in a session and process group of its own. Sandboxes are keyed
    by (namespace, id). Stop sends SIGTERM to the group and SIGKILL after ``timeout_secs``
    (10 s when 0); a process killed by signal N exits with 128 + N. :meth:`aclose` kills
    every sandbox still running. Exits are heard through the event loop, so a running
    sandbox leaves no task behind.

    Without ``state_dir`` the sandboxes are the server's children and exist only in memory.
    With it, the controller keeps a record of every sandbox there (see :mod:`._state`) and
    runs each process under a supervisor that survives the server and writes down the exit
    status; a new ``ProcessSandboxer`` over the same directory (after the old one was
    killed, or :meth:`detach` ed) takes the sandboxes back: a Wait gets the real exit
    status, also of a sandbox that ended while no sandboxer ran. When that status cannot
    be known (the supervisor itself died) the sandbox ends with 255 and Status ``info``
    says why under ``exit_reason``. Only one live sandboxer can use a directory at a time
    (:class:`~._state.StateDirBusyError` otherwise).
    """

    METRICS_TYPE_URL: ClassVar[str] = "types.sandboxclient.io/process-metrics"
    """type_url of ``Metric.data``: JSON with pid, rss_bytes, threads and cpu seconds."""

    DEFAULT_STOP_TIMEOUT: ClassVar[float] = 10.0
    """Seconds between SIGTERM and SIGKILL when a Stop asks for 0."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._closed = False
        self._detached = False
        self._store: StateDir | None = None
        self._writing = False
        self._boot_id = ""
        self._unwatched: list[_Entry] = []
        if state_dir is not None:
            self._store = StateDir(state_dir)
            self._writing = True
            self._boot_id = boot_id()
            self._recover()
            with contextlib.suppress(RuntimeError):  # no loop yet: watch from the first call
                self._watch_recovered()

    @property
    def state_dir(self) -> str | None:
        """The state directory (absolute), or None when the sandboxes live in memory only."""
        return None if self._store is None else self._store.path

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandboxes this controller holds in ``namespace``, sorted."""
        return sorted(sid for ns, sid in self._entries if ns == namespace)

    def pids(self) -> list[int]:
        """The pids of the sandbox processes still running, in every namespace."""
        return [e.state.pid for e in self._entries.values() if e.running and e.state.pid]

    # --- the state directory -----------------------------------------------------------------

    def _recover(self) -> None:
        """Take back the sandboxes recorded in the state directory."""
        assert self._store is not None
        for state in self._store.load():
            try:
                spec = _ProcessSpec.parse(state.sandbox.spec)
            except GRPCError as exc:
                _log.warning("skipping sandbox %s/%s: %s", state.namespace, state.sandbox_id, exc)
                continue
            entry = _Entry(state, spec)
            if state.supervisor_pid:
                entry.process = _Supervised(
                    state.supervisor_pid, state.supervisor_start, state.pid, state.pid_start
                )
                if state.exit_status is None:
                    self._unwatched.append(entry)
            if state.exit_status is not None:
                entry.settled.set()
            self._entries[(state.namespace, state.sandbox_id)] = entry

    def _watch_recovered(self) -> None:
        """Watch the supervisors of recovered sandboxes; RuntimeError outside the event loop."""
        if not self._unwatched:
            return
        loop = asyncio.get_running_loop()
        entries, self._unwatched = self._unwatched, []
        for entry in entries:
            proc = entry.process
            assert isinstance(proc, _Supervised)
            if entry.state.boot_id != self._boot_id:  # the machine rebooted since
                loop.call_soon(self._supervisor_gone, entry, proc, None)
                continue
            gone = functools.partial(self._supervisor_gone, entry, proc, None)
            proc.watch = _ProcWatch(proc.supervisor_pid, proc.supervisor_start, gone)

    def _save(self, entry: _Entry) -> None:
        """Write the sandbox's record down; a failure is logged, the sandbox carries on."""
        if self._store is None or not self._writing or entry.removed:
            return
        try:
            self._store.save(entry.state)
        except OSError as exc:
            _log.error("cannot record sandbox %s: %s", entry.state.sandbox_id, exc)

    def _sandbox_dir(self, entry: _Entry) -> str:
        assert self._store is not None
        return self._store.sandbox_dir(entry.state.namespace, entry.state.sandbox_id)

    # --- exits -------------------------------------------------------------------------------

    def _exited(self, entry: _Entry, status: int, exited_at: datetime, reason: str = "") -> None:
        """Record the exit and wake the waiters."""
        if entry.state.exit_status is not None:
            return
        entry.state.exit_status = status
        entry.state.exited_at = exited_at
        entry.state.exit_reason = reason
        self._save(entry)
        entry.settled.set()

    def _direct_exited(self, entry: _Entry, returncode: int) -> None:
        """A child without supervisor exited: 128 + N for signal N, as runc reports it."""
        status = 128 - returncode if returncode < 0 else returncode
        # Like a container whose init died: whatever it left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(entry.state.pid, signal.SIGKILL)
        self._exited(entry, status, utcnow())

    def _supervisor_gone(self, entry: _Entry, proc: _Supervised, returncode: int | None) -> None:
        """A sandbox's supervisor is gone: take the exit it wrote down, or report 255."""
        if entry.process is not proc or entry.state.exit_status is not None:
            return
        if not self._writing or entry.removed:  # detached or closed: not ours any more
            return
        proc.release()
        record = read_exit(exit_file(self._sandbox_dir(entry), proc.supervisor_pid))
        if record is not None:
            if not entry.state.pid and record.pid:
                entry.state.pid = proc.pid = record.pid
            self._exited(entry, record.exit_status, record.exited_at, record.reason)
            return
        if returncode is None:
            how = "exited"
        elif returncode < 0:
            how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with status {returncode}"
        reason = (
            f"the supervisor (pid {proc.supervisor_pid}) {how} without recording the exit "
            f"status of the sandbox process (pid {proc.pid or 'unknown'})"
        )
        same_boot = entry.state.boot_id == self._boot_id
        if same_boot and proc.pid and start_ticks(proc.pid) == proc.pid_start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            reason += "; the process was still running and was killed"
            final = reason
            proc.watch = _ProcWatch(
                proc.pid,
                proc.pid_start,
                lambda: self._exited(entry, UNKNOWN_EXIT_STATUS, utcnow(), final),
            )
            return
        self._exited(entry, UNKNOWN_EXIT_STATUS, utcnow(), reason)

    # --- calls -------------------------------------------------------------------------------

    def _lookup(self, sandbox_id: str) -> _Entry:
        if self._detached:  # what it knows of the sandboxes is no longer kept up to date
            raise unavailable("the sandbox controller has let go of its sandboxes")
        if self._unwatched:
            self._watch_recovered()
        entry = self._entries.get((current_namespace(), sandbox_id))
        if entry is None:
            raise not_found(f"sandbox {go_quote(sandbox_id)} does not exist")
        return entry

    def _check_open(self) -> None:
        if self._closed:
            raise unavailable("the sandbox controller is closed")

    async def create(
        self, message: sandbox_pb.ControllerCreateRequest
    ) -> sandbox_pb.ControllerCreateResponse:
        """Record a sandbox; its process starts with :meth:`start`."""
        namespace = current_namespace()
        self._check_open()
        sandbox = required_sandbox(message.sandbox)
        sandbox_id = message.sandbox_id or sandbox.sandbox_id
        problem = identifier_problem(sandbox_id)
        if problem is not None:
            raise invalid_argument(f"invalid sandbox ID: {problem}")
        spec = _ProcessSpec.parse(sandbox.spec)
        key = (namespace, sandbox_id)
        if key in self._entries:
            raise already_exists(f"sandbox {go_quote(sandbox_id)}")
        record = copy_message(sandbox)
        record.sandbox_id = sandbox_id
        state = SandboxState(
            namespace=namespace,
            sandbox_id=sandbox_id,
            sandbox=record,
            created_at=utcnow(),
            netns_path=message.netns_path,
            annotations=dict(message.annotations),
        )
        if self._store is not None:
            try:
                self._store.save(state)
            except OSError as exc:
                raise failed_precondition(
                    f"cannot record sandbox {go_quote(sandbox_id)}: {exc}"
                ) from None
        self._entries[key] = _Entry(state, spec)
        return sandbox_pb.ControllerCreateResponse(sandbox_id=sandbox_id)

    async def start(
        self, message: sandbox_pb.ControllerStartRequest
    ) -> sandbox_pb.ControllerStartResponse:
        """Spawn the sandbox's process; a second Start answers ALREADY_EXISTS."""
        entry = self._lookup(message.sandbox_id)
        async with entry.lock:
            if entry.removed:
                raise not_found(f"sandbox {go_quote(message.sandbox_id)} does not exist")
            if entry.started:
                raise already_exists(f"sandbox {go_quote(message.sandbox_id)} was already started")
            self._check_open()
            if self._store is None:
                await self._spawn_direct(entry)
            else:
                await self._spawn_supervised(entry)
            if self._closed:
                # aclose() ran while the process was being spawned: it must not outlive it.
                entry.signal(signal.SIGKILL)
                await entry.settled.wait()
                raise unavailable("the sandbox controller is closed")
        state = entry.state
        return sandbox_pb.ControllerStartResponse(
            sandbox_id=state.sandbox_id,
            pid=state.pid,
            created_at=state.created_at,
            labels=dict(state.sandbox.labels),
        )

    async def _spawn_direct(self, entry: _Entry) -> None:
        spec = entry.spec
        env = dict(item.split("=", 1) for item in spec.env)
        watch = _ChildProtocol()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: watch,
                *spec.args,
                env=env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise _start_failed(entry, exc.filename or spec.args[0], exc.strerror or exc) from None
        entry.process = _Direct(transport, transport.get_pid())
        entry.state.pid = transport.get_pid()
        entry.state.started_at = utcnow()
        watch.listen(lambda returncode: self._direct_exited(entry, returncode))

    async def _spawn_supervised(self, entry: _Entry) -> None:
        """Start the process under a supervisor, recording each step.

        The record says ``starting`` (the supervisor's pid) before the supervisor answers,
        then ``running`` (the process's pid) before it is told to go on: a sandboxer that
        dies in between leaves a supervisor that kills what it started and writes down
        137 with the reason, which the next sandboxer then reports.
        """
        state = entry.state
        directory = self._sandbox_dir(entry)
        loop = asyncio.get_running_loop()
        protocol = _ChildProtocol()
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            transport, _ = await loop.subprocess_exec(
                lambda: protocol,
                sys.executable,
                "-I",
                "-S",
                "-c",
                _SUPERVISOR_BOOT,
                directory,
                str(int(signal.SIGPIPE)),
                str(int(signal.SIGXFSZ)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env={},
            )
        except OSError as exc:
            what = exc.filename or sys.executable
            raise _start_failed(entry, what, exc.strerror or exc) from None
        supervisor_pid = transport.get_pid()
        proc = _Supervised(supervisor_pid, start_ticks(supervisor_pid) or 0)
        stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        with contextlib.suppress(FileNotFoundError):  # left by an earlier process with this pid
            os.unlink(exit_file(directory, supervisor_pid))
        stdin.write(entry.spec.request())
        entry.process = proc
        state.supervisor_pid = proc.supervisor_pid
        state.supervisor_start = proc.supervisor_start
        state.boot_id = self._boot_id
        self._save(entry)
        try:
            answer = (await asyncio.shield(protocol.answer)).split(b"\0")
        except BaseException:
            stdin.close()  # no "go": the supervisor kills what it may have started
            protocol.listen(lambda returncode: self._supervisor_gone(entry, proc, returncode))
            raise
        if answer[0] != b"started" or len(answer) != 3:
            stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ABORT_GRACE):
                    await protocol.exited.wait()
            entry.process = None
            state.supervisor_pid = state.supervisor_start = 0
            self._save(entry)
            if answer[0] == b"failed" and len(answer) == 3:
                code = int(answer[1])
                raise _start_failed(entry, os.fsdecode(answer[2]), os.strerror(code))
            raise _start_failed(entry, "supervisor", f"exited with {protocol.returncode}")
        proc.pid = state.pid = int(answer[1])
        proc.pid_start = state.pid_start = int(answer[2])
        state.started_at = utcnow()
        self._save(entry)
        if not self._closed:
            stdin.write(_supervise.GO)
        stdin.close()
        protocol.listen(lambda returncode: self._supervisor_gone(entry, proc, returncode))

    async def platform(
        self, message: sandbox_pb.ControllerPlatformRequest
    ) -> sandbox_pb.ControllerPlatformResponse:
        """This host's platform, named as containerd names it (``linux``/``amd64``...)."""
        self._lookup(message.sandbox_id)
        arch, variant = go_arch()
        return sandbox_pb.ControllerPlatformResponse(
            platform=PlatformPb(os=sys.platform, architecture=arch, variant=variant)
        )

    async def stop(
        self, message: sandbox_pb.ControllerStopRequest
    ) -> sandbox_pb.ControllerStopResponse:
        """SIGTERM the process group, SIGKILL it after the timeout; return once it exited."""
        entry = self._lookup(message.sandbox_id)
        if entry.running:
            timeout = message.timeout_secs or self.DEFAULT_STOP_TIMEOUT
            entry.signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await entry.settled.wait()
            except TimeoutError:
                entry.signal(signal.SIGKILL)
                await entry.settled.wait()
        return sandbox_pb.ControllerStopResponse()

    async def wait(
        self, message: sandbox_pb.ControllerWaitRequest
    ) -> sandbox_pb.ControllerWaitResponse:
        """Block until the process exits (started or not yet); answer its exit status."""
        entry = self._lookup(message.sandbox_id)
        await entry.settled.wait()
        state = entry.state
        if state.exit_status is None:
            if self._closed:
                raise unavailable("the sandbox controller is closed")
            raise not_found(
                f"sandbox {go_quote(message.sandbox_id)} was shut down before it exited"
            )
        return sandbox_pb.ControllerWaitResponse(
            exit_status=state.exit_status, exited_at=state.exited_at
        )

    async def status(
        self, message: sandbox_pb.ControllerStatusRequest
    ) -> sandbox_pb.ControllerStatusResponse:
        """SANDBOX_READY while the process runs, SANDBOX_NOTREADY before and after.

        ``info`` holds ``exit_reason`` when the exit status is not the process's own; with
        ``verbose``, also the namespace, runtime, args, cwd, start time, exit status, netns
        path and the supervisor's pid.
        """
        entry = self._lookup(message.sandbox_id)
        state = entry.state
        info: dict[str, str] = {}
        if message.verbose:
            info = {
                "namespace": state.namespace,
                "runtime": state.sandbox.runtime.name if state.sandbox.runtime else "",
                "args": json.dumps(list(entry.spec.args)),
                "cwd": entry.spec.cwd,
            }
            if state.started_at is not None:
                info["started_at"] = state.started_at.isoformat()
            if state.exit_status is not None:
                info["exit_status"] = str(state.exit_status)
            if state.netns_path:
                info["netns_path"] = state.netns_path
            if state.supervisor_pid:
                info["supervisor_pid"] = str(state.supervisor_pid)
        if state.exit_reason:
            info["exit_reason"] = state.exit_reason
        return sandbox_pb.ControllerStatusResponse(
            sandbox_id=state.sandbox_id,
            pid=state.pid,
            state=STATE_READY if entry.running else STATE_NOTREADY,
            info=info,
            created_at=state.created_at,
            exited_at=state.exited_at,
        )

    async def shutdown(
        self, message: sandbox_pb.ControllerShutdownRequest
    ) -> sandbox_pb.ControllerShutdownResponse:
        """Kill the process if it runs, then forget the sandbox and its record.

        Pending Waits are answered.
        """
        entry = self._lookup(message.sandbox_id)
        async with entry.lock:
            if entry.removed:
                raise not_found(f"sandbox {go_quote(message.sandbox_id)} does not exist")
            if entry.running:
                entry.signal(signal.SIGKILL)
                await entry.settled.wait()
            entry.removed = True
            self._entries.pop((entry.state.namespace, entry.state.sandbox_id), None)
            if entry.process is not None:
                entry.process.release()
            if self._store is not None and self._writing:
                self._store.remove(entry.state.namespace, entry.state.sandbox_id)
            entry.settled.set()
        return sandbox_pb.ControllerShutdownResponse()

    async def metrics(
        self, message: sandbox_pb.ControllerMetricsRequest
    ) -> sandbox_pb.ControllerMetricsResponse:
        """CPU time and resident memory of the sandbox's process, read from /proc."""
        entry = self._lookup(message.sandbox_id)
        if not entry.running or not entry.state.pid:
            raise failed_precondition(f"sandbox {go_quote(message.sandbox_id)} is not running")
        try:
            data = _read_proc(entry.state.pid)
        except (OSError, ValueError, IndexError):
            raise failed_precondition(
                f"sandbox {go_quote(message.sandbox_id)} is not running"
            ) from None
        return sandbox_pb.ControllerMetricsResponse(
            metrics=MetricPb(
                timestamp=utcnow(),
                id=message.sandbox_id,
                data=AnyPb(type_url=self.METRICS_TYPE_URL, value=json.dumps(data).encode()),
            )
        )

    async def update(
        self, message: sandbox_pb.ControllerUpdateRequest
    ) -> sandbox_pb.ControllerUpdateResponse:
        """Store new sandbox fields (``labels[.k]``, ``extensions[.k]``, ``spec``, ``runtime``).

        No fields means all four. A new spec applies to a Start that has not happened yet.
        """
        sandbox = required(message.sandbox, "sandbox")
        sandbox_id = message.sandbox_id or sandbox.sandbox_id
        entry = self._lookup(sandbox_id)
        current = entry.state.sandbox
        if sandbox.runtime is None:  # an unset runtime leaves the one there is
            sandbox = copy_message(sandbox)
            sandbox.runtime = current.runtime
        updated = _UPDATABLE.apply(
            current, sandbox, message.fields, f"sandbox {go_quote(sandbox_id)}"
        )
        spec = _ProcessSpec.parse(updated.spec)
        entry.state.sandbox = updated
        entry.spec = spec
        self._save(entry)
        return sandbox_pb.ControllerUpdateResponse()

    async def aclose(self) -> None:
        """Kill (SIGKILL) every sandbox process still running and wait for it to exit.

        Waits still pending are answered; later calls that would create or start a sandbox
        answer UNAVAILABLE. The state directory keeps the records (the exits included) and
        is released for another sandboxer. Idempotent.
        """
        self._closed = True
        with contextlib.suppress(RuntimeError):
            self._watch_recovered()
        running = [entry for entry in self._entries.values() if entry.running]
        for entry in running:
            entry.signal(signal.SIGKILL)
        if running:
            waits = [
                asyncio.create_task(entry.settled.wait(), name="sandboxclient.sandboxer.close")
                for entry in running
            ]
            try:
                await asyncio.wait(waits, timeout=_CLOSE_GRACE)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        self._let_go()

    def detach(self) -> None:
        """Let go of every sandbox without stopping it, and of the state directory.

        Leaves things as the death of this process would: the sandboxes keep running under
        their supervisors, and a new ``ProcessSandboxer`` over the same directory takes them
        back. Later calls answer UNAVAILABLE. Needs a state directory (RuntimeError without,
        as the processes would be left with nobody to know of them). Idempotent.
        """
        if self._store is None:
            raise RuntimeError("detach() needs a state directory")
        self._closed = self._detached = True
        self._unwatched.clear()
        self._let_go()

    def _let_go(self) -> None:
        self._writing = False
        for entry in self._entries.values():
            if entry.process is not None:
                entry.process.release()
            entry.settled.set()
        if self._store is not None:
            self._store.close()


def _start_failed(entry: _Entry, what: str, why: object) -> GRPCError:
    return failed_precondition(
        f"failed to start sandbox {go_quote(entry.state.sandbox_id)}: {what}: {why}"
    )
