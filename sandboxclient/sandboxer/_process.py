"""A sandbox controller whose sandboxes are plain child processes of the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform as _platform
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final, cast

from .._convert import (
    RUNTIME_SPEC_TYPE_URL,
    AnyPb,
    MetricPb,
    PlatformPb,
    SandboxPb,
    sandbox_pb,
    utcnow,
)
from .._validation import identifier_problem
from ._base import (
    SandboxController,
    already_exists,
    current_namespace,
    failed_precondition,
    go_quote,
    invalid_argument,
    not_found,
    unavailable,
)

__all__ = ("ProcessSandboxer",)

STATE_READY: Final = "SANDBOX_READY"
STATE_NOTREADY: Final = "SANDBOX_NOTREADY"
DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SLEEP_FOREVER: Final = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    "import signal\nwhile True:\n    signal.pause()",
)
_UPDATABLE: Final = ("labels", "extensions", "spec", "runtime")
_CLOSE_GRACE: Final = 10.0


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
        if "env" not in process:
            env = (DEFAULT_PATH,)
        return cls(args or _SLEEP_FOREVER, env, cwd)


def _strings(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_argument(f"spec {what} must be a list of strings")
    return tuple(value)


@dataclass
class SandboxState:
    """What there is to know about one sandbox, in a form that can be written down."""

    namespace: str
    sandbox_id: str
    sandbox: SandboxPb
    created_at: datetime
    netns_path: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    started_at: datetime | None = None
    exit_status: int | None = None
    exited_at: datetime | None = None


class _ExitWatch(asyncio.SubprocessProtocol):
    """Hears of the child's exit from the event loop: no task has to wait on it.

    The exit may come before :meth:`listen` is called; it is kept and handed over then.
    """

    def __init__(self) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        self.returncode: int | None = None
        self._listener: Callable[[int], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def process_exited(self) -> None:
        assert self.transport is not None
        returncode = self.transport.get_returncode()
        self.returncode = -signal.SIGKILL if returncode is None else returncode
        self.transport.close()  # the process is gone; this only releases the transport
        if self._listener is not None:
            self._listener(self.returncode)

    def listen(self, listener: Callable[[int], None]) -> None:
        self._listener = listener
        if self.returncode is not None:
            listener(self.returncode)


@dataclass(eq=False)
class _Entry:
    """A sandbox's state plus the live objects that cannot be written down."""

    state: SandboxState
    spec: _ProcessSpec
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the process has exited, or the sandbox was forgotten before it did."""
    transport: asyncio.SubprocessTransport | None = None
    removed: bool = False

    @property
    def started(self) -> bool:
        return self.transport is not None

    @property
    def running(self) -> bool:
        return self.transport is not None and self.state.exit_status is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process group, or to the process if it left its group."""
        if not self.running:
            return
        try:
            os.killpg(self.state.pid, signum)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                assert self.transport is not None
                self.transport.send_signal(signum)

    def exited(self, returncode: int) -> None:
        """Record the exit (128 + N for signal N, as runc reports it) and wake the waiters."""
        self.state.exit_status = 128 - returncode if returncode < 0 else returncode
        self.state.exited_at = utcnow()
        # Like a container whose init died: whatever it left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.state.pid, signal.SIGKILL)
        self.settled.set()


def _go_arch() -> tuple[str, str]:
    machine = _platform.machine().lower()
    table = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", ""),
        "arm64": ("arm64", ""),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i386": ("386", ""),
        "i686": ("386", ""),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }
    return table.get(machine, (machine, ""))


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
        "rss_bytes": int(fields[21]) * page,
        "threads": int(fields[17]),
        "cpu_user_seconds": user,
        "cpu_system_seconds": system,
        "cpu_seconds": user + system,
    }


class ProcessSandboxer(SandboxController):
    """A :class:`SandboxController` that runs each sandbox as a real child process.

    The process comes from the OCI runtime spec in ``ControllerCreateRequest.sandbox.spec``
    (``process.args``, ``process.env``, ``process.cwd``; without a spec or args it sleeps
    until stopped) and runs in a session and process group of its own. Sandboxes are keyed
    by (namespace, id). Stop sends SIGTERM to the group and SIGKILL after ``timeout_secs``
    (10 s when 0); a process killed by signal N exits with 128 + N. :meth:`aclose` kills
    every child still running. Exits are heard through the event loop's child watcher, so
    a running sandbox leaves no task behind.
    """

    METRICS_TYPE_URL: ClassVar[str] = "types.sandboxclient.io/process-metrics"
    """type_url of ``Metric.data``: JSON with pid, rss_bytes, threads and cpu seconds."""

    DEFAULT_STOP_TIMEOUT: ClassVar[float] = 10.0
    """Seconds between SIGTERM and SIGKILL when a Stop asks for 0."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._closed = False

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandboxes this controller holds in ``namespace``, sorted."""
        return sorted(sid for ns, sid in self._entries if ns == namespace)

    def pids(self) -> list[int]:
        """The pids of the sandbox processes still running, in every namespace."""
        return [e.state.pid for e in self._entries.values() if e.running]

    def _lookup(self, sandbox_id: str) -> _Entry:
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
        sandbox = message.sandbox
        if sandbox is None:
            raise invalid_argument("sandbox must be set")
        if sandbox.runtime is None:
            raise invalid_argument("sandbox.Runtime must be set")
        sandbox_id = message.sandbox_id or sandbox.sandbox_id
        problem = identifier_problem(sandbox_id)
        if problem is not None:
            raise invalid_argument(f"invalid sandbox ID: {problem}")
        spec = _ProcessSpec.parse(sandbox.spec)
        key = (namespace, sandbox_id)
        if key in self._entries:
            raise already_exists(f"sandbox {go_quote(sandbox_id)}")
        record = SandboxPb.parse(bytes(sandbox))
        record.sandbox_id = sandbox_id
        state = SandboxState(
            namespace=namespace,
            sandbox_id=sandbox_id,
            sandbox=record,
            created_at=utcnow(),
            netns_path=message.netns_path,
            annotations=dict(message.annotations),
        )
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
            spec = entry.spec
            env = dict(item.split("=", 1) for item in spec.env)
            watch = _ExitWatch()
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
                what = exc.filename or spec.args[0]
                raise failed_precondition(
                    f"failed to start sandbox {go_quote(message.sandbox_id)}: "
                    f"{what}: {exc.strerror or exc}"
                ) from None
            entry.transport = transport
            entry.state.pid = transport.get_pid()
            entry.state.started_at = utcnow()
            watch.listen(entry.exited)
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

    async def platform(
        self, message: sandbox_pb.ControllerPlatformRequest
    ) -> sandbox_pb.ControllerPlatformResponse:
        """This host's platform, named as containerd names it (``linux``/``amd64``...)."""
        self._lookup(message.sandbox_id)
        arch, variant = _go_arch()
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
        """SANDBOX_READY while the process runs, SANDBOX_NOTREADY before and after."""
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
        """Kill the process if it runs, then forget the sandbox; pending Waits are answered."""
        entry = self._lookup(message.sandbox_id)
        async with entry.lock:
            if entry.removed:
                raise not_found(f"sandbox {go_quote(message.sandbox_id)} does not exist")
            if entry.running:
                entry.signal(signal.SIGKILL)
                await entry.settled.wait()
            entry.removed = True
            self._entries.pop((entry.state.namespace, entry.state.sandbox_id), None)
            entry.settled.set()
        return sandbox_pb.ControllerShutdownResponse()

    async def metrics(
        self, message: sandbox_pb.ControllerMetricsRequest
    ) -> sandbox_pb.ControllerMetricsResponse:
        """CPU time and resident memory of the sandbox's process, read from /proc."""
        entry = self._lookup(message.sandbox_id)
        if not entry.running:
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
        sandbox = message.sandbox
        if sandbox is None:
            raise invalid_argument("sandbox must be set")
        sandbox_id = message.sandbox_id or sandbox.sandbox_id
        entry = self._lookup(sandbox_id)
        updated = _apply_fields(entry.state.sandbox, sandbox, message.fields, sandbox_id)
        spec = _ProcessSpec.parse(updated.spec)
        entry.state.sandbox = updated
        entry.spec = spec
        return sandbox_pb.ControllerUpdateResponse()

    async def aclose(self) -> None:
        """Kill (SIGKILL) every sandbox process still running and wait for it to exit.

        Waits still pending are answered; later calls that would create or start a sandbox
        answer UNAVAILABLE. Idempotent.
        """
        self._closed = True
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
        for entry in self._entries.values():
            entry.settled.set()


def _apply_fields(
    current: SandboxPb, new: SandboxPb, fields: Sequence[str], sandbox_id: str
) -> SandboxPb:
    """``current`` with the named fields taken from ``new``; INVALID_ARGUMENT for others."""
    updated = SandboxPb.parse(bytes(current))
    for path in fields or _UPDATABLE:
        if path.startswith("labels."):
            key = path.removeprefix("labels.")
            if new.labels.get(key):
                updated.labels[key] = new.labels[key]
            else:
                updated.labels.pop(key, None)
        elif path.startswith("extensions."):
            key = path.removeprefix("extensions.")
            if key in new.extensions:
                updated.extensions[key] = new.extensions[key]
            else:
                updated.extensions.pop(key, None)
        elif path == "labels":
            updated.labels = {k: v for k, v in new.labels.items() if v}
        elif path == "extensions":
            updated.extensions = dict(new.extensions)
        elif path == "spec":
            updated.spec = new.spec
        elif path == "runtime":
            if new.runtime is not None:
                updated.runtime = new.runtime
        else:
            raise invalid_argument(
                f"cannot update {go_quote(path)} field on sandbox {go_quote(sandbox_id)}"
            )
    return updated
