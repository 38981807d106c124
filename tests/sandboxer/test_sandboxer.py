"""The Python sandbox controller, driven over its socket with the raw generated stubs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError

from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._wire._pb import (
    AnyPb,
    SandboxPb,
    SandboxRuntimePb,
    sandbox_pb,
)
from sandboxclient.sandboxer import (
    CallLog,
    ContainerSandboxer,
    ProcessSandboxer,
    SandboxController,
    StateDirBusyError,
    current_metadata,
    current_namespace,
    serve,
)
from sandboxclient.sandboxer._launch import supervisor_argv
from sandboxclient.sandboxer._state import SandboxState, StateDir, boot_id
from sandboxclient.sandboxer._supervise import start_ticks
from sandboxclient.testing import FakeContainerd, SandboxerProcess
from tests.support.constants import BAD_NAMESPACE, NO_NAMESPACE, NS, RUNTIME
from tests.support.helpers import (
    SANDBOXER_MODULE,
    expect_error,
    live_tasks,
    module_env,
    pid_gone,
    until,
    wait_pid_gone,
)

pytestmark = pytest.mark.anyio


def exists(path: str) -> bool:
    return os.path.exists(path)


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def spec(*args: str, env: list[str] | None = None, cwd: str | None = None) -> AnyPb:
    process: dict[str, Any] = {"args": list(args)}
    if env is not None:
        process["env"] = env
    if cwd is not None:
        process["cwd"] = cwd
    body = {"ociVersion": "1.2.0", "process": process}
    return AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(body).encode())


def create_request(
    sandbox_id: str, the_spec: AnyPb | None = None, labels: dict[str, str] | None = None
) -> sandbox_pb.ControllerCreateRequest:
    return sandbox_pb.ControllerCreateRequest(
        sandbox_id=sandbox_id,
        sandbox=SandboxPb(
            sandbox_id=sandbox_id,
            runtime=SandboxRuntimePb(name=RUNTIME),
            spec=the_spec,
            labels=labels or {},
        ),
        sandboxer="pysandbox",
    )


@dataclass
class Harness:
    """A ProcessSandboxer on a socket, and stubs that talk to it."""

    controller: ProcessSandboxer
    channel: Channel
    path: str
    workdir: str
    pids: list[int] = field(default_factory=list)
    calls: CallLog = field(default_factory=CallLog)
    """The calls that reached the controller's server (when it was served with it)."""

    async def arrived(self, method: str = "Wait", count: int = 1) -> None:
        """Return once ``count`` calls of ``method`` have reached the controller."""
        await asyncio.wait_for(self.calls.wait_for(method, count), 10)

    def stub(self, namespace: str | None = NS) -> sandbox_pb.ControllerStub:
        metadata = {"containerd-namespace": namespace} if namespace is not None else None
        return sandbox_pb.ControllerStub(self.channel, metadata=metadata)

    async def create(self, sandbox_id: str, the_spec: AnyPb | None = None, **kw: Any) -> None:
        await self.stub(kw.pop("namespace", NS)).create(create_request(sandbox_id, the_spec, **kw))

    async def start(
        self, sandbox_id: str, namespace: str = NS
    ) -> sandbox_pb.ControllerStartResponse:
        started = await self.stub(namespace).start(
            sandbox_pb.ControllerStartRequest(sandbox_id=sandbox_id)
        )
        self.pids.append(started.pid)
        return started

    async def run(
        self, sandbox_id: str, the_spec: AnyPb | None = None
    ) -> sandbox_pb.ControllerStartResponse:
        await self.create(sandbox_id, the_spec)
        return await self.start(sandbox_id)

    async def wait(self, sandbox_id: str, namespace: str = NS) -> sandbox_pb.ControllerWaitResponse:
        return await self.stub(namespace).wait(
            sandbox_pb.ControllerWaitRequest(sandbox_id=sandbox_id), timeout=30
        )

    async def stop(self, sandbox_id: str, timeout_secs: int = 5) -> None:
        await self.stub().stop(
            sandbox_pb.ControllerStopRequest(sandbox_id=sandbox_id, timeout_secs=timeout_secs),
            timeout=30,
        )

    async def status(
        self, sandbox_id: str, verbose: bool = False, namespace: str = NS
    ) -> sandbox_pb.ControllerStatusResponse:
        return await self.stub(namespace).status(
            sandbox_pb.ControllerStatusRequest(sandbox_id=sandbox_id, verbose=verbose)
        )

    async def shutdown(self, sandbox_id: str) -> None:
        await self.stub().shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id=sandbox_id))


def supervisors(state_dir: str) -> list[int]:
    """The live supervisor processes that work for ``state_dir``, found through /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # python -I -S (-c BOOT | .../_supervise.py) SANDBOX_DIR SIGNUM...
        if (
            any(b"_supervise" in arg for arg in argv[3:5])
            and any(arg.startswith(os.fsencode(state_dir)) for arg in argv[4:6])
            and not pid_gone(int(name))
        ):
            found.append(int(name))
    return sorted(found)


def kill_leftovers(state_dir: str) -> None:
    """SIGKILL what a failed test left running for ``state_dir``: supervisors and sandboxes."""
    for supervisor in supervisors(state_dir):
        try:
            with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
                children = [int(child) for child in f.read().split()]
        except OSError:
            children = []
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor, signal.SIGKILL)


@pytest.fixture
def state_dir(workdir: str) -> Iterator[str]:
    """A state directory; whatever still runs for it after the test is killed."""
    path = os.path.join(workdir, "state")
    yield path
    kill_leftovers(path)


@pytest.fixture(params=["memory", "state-dir"])
async def harness(
    request: pytest.FixtureRequest, workdir: str, state_dir: str
) -> AsyncIterator[Harness]:
    """The controller under test, without and with a state directory (and so supervisors);
    afterwards no sandbox or supervisor process and no task may be left."""
    before = live_tasks()
    supervised = request.param == "state-dir"
    controller = ProcessSandboxer(state_dir if supervised else None)
    path = os.path.join(workdir, "sandboxer.sock")
    calls = CallLog()
    async with serve(controller, path, calls=calls), Channel(path=path) as channel:
        h = Harness(controller, channel, path, workdir, calls=calls)
        yield h
    await controller.aclose()
    assert controller.pids() == []
    for pid in h.pids:
        assert pid_gone(pid), f"sandbox process {pid} outlived the controller"
    assert supervisors(state_dir) == []
    assert not exists(path)
    leaked = live_tasks() - before - {asyncio.current_task()}
    assert not leaked, leaked


# --- lifecycle -------------------------------------------------------------------------------


async def test_exit_code_and_a_late_wait(harness: Harness) -> None:
    started = await harness.run("exit3", spec("sh", "-c", "exit 3"))
    assert started.sandbox_id == "exit3"
    assert started.pid > 0
    assert started.created_at is not None
    assert started.created_at.tzinfo is not None
    first = await harness.wait("exit3")
    assert first.exit_status == 3
    assert first.exited_at is not None
    assert first.exited_at >= started.created_at
    status = await harness.status("exit3")
    assert status.state == "SANDBOX_NOTREADY"
    assert status.pid == started.pid
    assert status.exited_at == first.exited_at
    late = await asyncio.wait_for(harness.wait("exit3"), 5)
    assert (late.exit_status, late.exited_at) == (3, first.exited_at)
    await harness.shutdown("exit3")


async def test_stop_terminates_with_sigterm(harness: Harness) -> None:
    started = await harness.run("sleeper")  # no spec: sleeps until stopped
    status = await harness.status("sleeper")
    assert status.state == "SANDBOX_READY"
    assert status.pid == started.pid
    assert status.exited_at is None
    assert not pid_gone(started.pid)
    await harness.stop("sleeper", timeout_secs=5)
    # Stop returns once the process has exited.
    assert (await harness.status("sleeper")).state == "SANDBOX_NOTREADY"
    assert pid_gone(started.pid)
    assert (await harness.wait("sleeper")).exit_status == 128 + signal.SIGTERM
    await harness.stop("sleeper")  # stopping an exited sandbox is fine
    await harness.shutdown("sleeper")


async def _sigterm_proof(harness: Harness, sandbox_id: str) -> None:
    """Start a process that ignores SIGTERM; return once it says it does."""
    ready = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read() == b"ready":
            ready.set()
        writer.close()

    path = os.path.join(harness.workdir, f"{sandbox_id}.ready")
    code = (
        "import signal, socket, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1]); s.sendall(b'ready'); s.close()\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    server = await asyncio.start_unix_server(on_connect, path)
    try:
        await harness.run(sandbox_id, spec(sys.executable, "-c", code, path))
        async with asyncio.timeout(20):
            await ready.wait()
    finally:
        server.close()
        await server.wait_closed()


async def test_stop_escalates_to_sigkill_after_the_timeout(harness: Harness) -> None:
    await _sigterm_proof(harness, "stubborn")
    t0 = time.monotonic()
    await harness.stop("stubborn", timeout_secs=1)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 10, elapsed
    assert (await harness.wait("stubborn")).exit_status == 128 + signal.SIGKILL
    await harness.shutdown("stubborn")


async def test_stop_timeout_zero_means_the_default_grace(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ProcessSandboxer, "DEFAULT_STOP_TIMEOUT", 0.3)
    await _sigterm_proof(harness, "stubborn0")
    t0 = time.monotonic()
    await harness.stop("stubborn0", timeout_secs=0)
    assert time.monotonic() - t0 >= 0.25
    assert (await harness.wait("stubborn0")).exit_status == 137
    await harness.shutdown("stubborn0")


async def test_wait_before_exit_is_answered_at_exit(harness: Harness) -> None:
    await harness.run("w1")
    waiter = asyncio.create_task(harness.wait("w1"))
    await harness.arrived("Wait")
    assert not waiter.done()
    await harness.stop("w1")
    assert (await asyncio.wait_for(waiter, 10)).exit_status == 143
    await harness.shutdown("w1")


async def test_wait_on_a_created_sandbox_waits_for_start_and_exit(harness: Harness) -> None:
    await harness.create("later", spec("sh", "-c", "exit 4"))
    waiter = asyncio.create_task(harness.wait("later"))
    await harness.arrived("Wait")
    # A full round trip later the Wait is still unanswered, the sandbox still not started.
    assert (await harness.status("later")).state == "SANDBOX_NOTREADY"
    assert not waiter.done(), "Wait answered before the sandbox was even started"
    await harness.start("later")
    assert (await asyncio.wait_for(waiter, 10)).exit_status == 4
    await harness.shutdown("later")


async def test_shutdown_answers_pending_waits(harness: Harness) -> None:
    await harness.create("never")
    idle = asyncio.create_task(harness.wait("never"))
    started = await harness.run("busy")
    busy = asyncio.create_task(harness.wait("busy"))
    await harness.arrived("Wait", 2)
    assert not idle.done()
    assert not busy.done()

    await harness.shutdown("never")
    message = await expect_error(asyncio.wait_for(idle, 10), Status.NOT_FOUND)
    assert message.endswith(": not found")

    await harness.shutdown("busy")
    assert (await asyncio.wait_for(busy, 10)).exit_status == 128 + signal.SIGKILL
    assert pid_gone(started.pid)
    for sandbox_id in ("never", "busy"):
        await expect_error(harness.status(sandbox_id), Status.NOT_FOUND)
        await expect_error(harness.shutdown(sandbox_id), Status.NOT_FOUND)
    assert harness.controller.sandbox_ids(NS) == []


async def test_process_group_is_killed_when_its_leader_exits(harness: Harness) -> None:
    pidfile = os.path.join(harness.workdir, "child.pid")
    await harness.run("group", spec("sh", "-c", f"sleep 300 & echo $! > {pidfile}; exit 0"))
    assert (await harness.wait("group")).exit_status == 0
    orphan = read_int(pidfile)
    await wait_pid_gone(orphan)
    assert pid_gone(orphan)
    await harness.shutdown("group")


async def test_env_and_cwd_come_from_the_spec(harness: Harness) -> None:
    script = f'test "$FOO" = bar && test "$(pwd)" = "{harness.workdir}" && test -z "$HOME"'
    the_spec = spec(
        "/bin/sh", "-c", script, env=["FOO=bar", "PATH=/usr/bin:/bin"], cwd=harness.workdir
    )
    await harness.run("env1", the_spec)
    assert (await harness.wait("env1")).exit_status == 0
    await harness.run("env2", spec("/bin/sh", "-c", 'test "$FOO" = bar', env=["FOO=baz"]))
    assert (await harness.wait("env2")).exit_status == 1
    for sandbox_id in ("env1", "env2"):
        await harness.shutdown(sandbox_id)


async def test_status_start_labels_and_verbose_info(harness: Harness) -> None:
    await harness.create("lab", labels={"team": "a"})
    before = await harness.status("lab", verbose=True)
    assert before.state == "SANDBOX_NOTREADY"
    assert before.pid == 0
    assert before.created_at is not None
    assert before.info["namespace"] == NS
    assert before.info["runtime"] == RUNTIME
    started = await harness.start("lab")
    assert started.labels == {"team": "a"}
    assert started.created_at == before.created_at
    after = await harness.status("lab", verbose=True)
    assert after.state == "SANDBOX_READY"
    assert "started_at" in after.info
    assert (await harness.status("lab")).info == {}
    await harness.shutdown("lab")


async def test_platform_and_metrics(harness: Harness) -> None:
    started = await harness.run("m1")
    answer = await harness.stub().platform(sandbox_pb.ControllerPlatformRequest(sandbox_id="m1"))
    assert answer.platform is not None
    assert answer.platform.os == "linux"
    expected = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    if expected is not None:
        assert answer.platform.architecture == expected
    metrics = await harness.stub().metrics(sandbox_pb.ControllerMetricsRequest(sandbox_id="m1"))
    metric = metrics.metrics
    assert metric is not None
    assert metric.id == "m1"
    assert metric.timestamp is not None
    assert metric.timestamp.tzinfo is not None
    assert metric.timestamp <= datetime.now(UTC)
    assert metric.data is not None
    assert metric.data.type_url == ProcessSandboxer.METRICS_TYPE_URL
    data = json.loads(metric.data.value)
    assert data["pid"] == started.pid
    assert data["rss_bytes"] > 0
    assert data["cpu_seconds"] >= 0
    await harness.stop("m1")
    await expect_error(
        harness.stub().metrics(sandbox_pb.ControllerMetricsRequest(sandbox_id="m1")),
        Status.FAILED_PRECONDITION,
    )
    await harness.shutdown("m1")


async def test_update_stores_fields_and_a_new_spec_applies_to_start(harness: Harness) -> None:
    await harness.create("u1", spec("sh", "-c", "exit 1"), labels={"a": "1", "b": "2"})
    stub = harness.stub()

    async def update(sandbox: SandboxPb, *fields: str) -> None:
        # As containerd forwards it to a proxy plugin: no sandboxer (field 2) at all.
        await stub.update(
            sandbox_pb.ControllerUpdateRequest(
                sandbox_id="u1", sandbox=sandbox, fields=list(fields)
            )
        )

    await update(SandboxPb(labels={"c": "3"}), "labels.c")
    await update(SandboxPb(), "labels.a")  # an absent value removes the label
    await update(SandboxPb(spec=spec("sh", "-c", "exit 5")), "spec")
    started = await harness.start("u1")
    assert started.labels == {"b": "2", "c": "3"}
    assert (await harness.wait("u1")).exit_status == 5

    # Started: the spec it ran with stays; other fields still change.
    message = await expect_error(
        update(SandboxPb(spec=spec("sh", "-c", "exit 6")), "spec"), Status.FAILED_PRECONDITION
    )
    assert "cannot update spec of sandbox" in message
    await expect_error(update(SandboxPb(labels={"z": "9"})), Status.FAILED_PRECONDITION)
    await update(SandboxPb(spec=spec("sh", "-c", "exit 5")), "spec")  # the same: no change
    message = await expect_error(
        update(SandboxPb(runtime=SandboxRuntimePb(name="")), "runtime"), Status.FAILED_PRECONDITION
    )
    assert "cannot update runtime of sandbox" in message
    await update(SandboxPb(labels={"z": "9"}), "labels")
    info = (await harness.status("u1", verbose=True)).info
    assert info["runtime"] == RUNTIME
    message = await expect_error(
        update(SandboxPb(runtime=SandboxRuntimePb(name="io.containerd.kata.v2")), "runtime"),
        Status.INVALID_ARGUMENT,
    )
    assert "runtime.name" in message
    await expect_error(
        update(SandboxPb(), "bogus"),
        Status.INVALID_ARGUMENT,
        'cannot update "bogus" field on sandbox "u1": invalid argument',
    )
    await expect_error(
        stub.update(sandbox_pb.ControllerUpdateRequest(sandbox_id="u1")),
        Status.INVALID_ARGUMENT,
    )
    await expect_error(
        update(SandboxPb(spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b"{")), "spec"),
        Status.INVALID_ARGUMENT,
    )
    await expect_error(
        stub.update(sandbox_pb.ControllerUpdateRequest(sandbox_id="nope", sandbox=SandboxPb())),
        Status.NOT_FOUND,
    )
    await harness.shutdown("u1")


# --- refusals --------------------------------------------------------------------------------


async def test_create_and_start_refusals(harness: Harness) -> None:
    stub = harness.stub()
    await harness.create("dup")
    message = await expect_error(harness.create("dup"), Status.ALREADY_EXISTS)
    assert message.endswith(": already exists")
    no_sandbox = sandbox_pb.ControllerCreateRequest(sandbox_id="x1", sandboxer="pysandbox")
    await expect_error(stub.create(no_sandbox), Status.INVALID_ARGUMENT)
    no_runtime = sandbox_pb.ControllerCreateRequest(sandbox_id="x2", sandbox=SandboxPb())
    await expect_error(stub.create(no_runtime), Status.INVALID_ARGUMENT)
    message = await expect_error(stub.create(create_request("bad id/!")), Status.INVALID_ARGUMENT)
    assert "identifier" in message
    for bad_spec in (
        AnyPb(type_url="example.com/Other", value=b"{}"),
        AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b"not json"),
        AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b'{"process": {"args": "sh"}}'),
        AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b'{"process": {"env": ["NOEQUALS"]}}'),
    ):
        await expect_error(stub.create(create_request("x3", bad_spec)), Status.INVALID_ARGUMENT)
    assert harness.controller.sandbox_ids(NS) == ["dup"]

    message = await expect_error(
        stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="nope")), Status.NOT_FOUND
    )
    assert message.endswith(": not found")
    await harness.start("dup")
    await expect_error(harness.start("dup"), Status.ALREADY_EXISTS)

    await harness.create("noexec", spec("/nonexistent/binary"))
    await expect_error(harness.start("noexec"), Status.FAILED_PRECONDITION)
    assert (await harness.status("noexec")).state == "SANDBOX_NOTREADY"
    await harness.create("nopath", spec("no-such-program-here"))
    await expect_error(
        harness.start("nopath"),
        Status.FAILED_PRECONDITION,
        'failed to start sandbox "nopath": no-such-program-here: '
        "No such file or directory: failed precondition",
    )
    await harness.create("nocwd", spec("true", cwd="/nonexistent/dir"))
    message = await expect_error(harness.start("nocwd"), Status.FAILED_PRECONDITION)
    assert "/nonexistent/dir: No such file or directory" in message
    # A failed Start leaves the sandbox as it was: it can be given a new spec and started.
    await harness.stub().update(
        sandbox_pb.ControllerUpdateRequest(
            sandbox_id="nopath", sandbox=SandboxPb(spec=spec("sh", "-c", "exit 6")), fields=["spec"]
        )
    )
    await harness.start("nopath")
    assert (await harness.wait("nopath")).exit_status == 6
    for sandbox_id in ("dup", "noexec", "nopath", "nocwd"):
        await harness.shutdown(sandbox_id)


async def test_unknown_sandbox_is_not_found_everywhere(harness: Harness) -> None:
    stub = harness.stub()
    calls = [
        stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="nope")),
        stub.stop(sandbox_pb.ControllerStopRequest(sandbox_id="nope")),
        stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="nope")),
        stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="nope")),
        stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="nope")),
        stub.metrics(sandbox_pb.ControllerMetricsRequest(sandbox_id="nope")),
        stub.platform(sandbox_pb.ControllerPlatformRequest(sandbox_id="nope")),
    ]
    for call in calls:
        await expect_error(call, Status.NOT_FOUND, 'sandbox "nope" does not exist: not found')


async def test_namespace_header_is_required_and_validated(harness: Harness) -> None:
    request = sandbox_pb.ControllerStatusRequest(sandbox_id="x")
    await expect_error(harness.stub(None).status(request), Status.FAILED_PRECONDITION, NO_NAMESPACE)
    await expect_error(
        harness.stub("Bad_NS!").create(create_request("x")),
        Status.INVALID_ARGUMENT,
        BAD_NAMESPACE,
    )
    assert harness.controller.sandbox_ids("Bad_NS!") == []


async def test_namespaces_are_isolated(harness: Harness) -> None:
    await harness.create("same", namespace="ns-a")
    await expect_error(harness.status("same", namespace="ns-b"), Status.NOT_FOUND)
    await harness.create("same", namespace="ns-b", the_spec=spec("sh", "-c", "exit 7"))
    await harness.start("same", namespace="ns-b")
    assert (await harness.wait("same", namespace="ns-b")).exit_status == 7
    assert (await harness.status("same", namespace="ns-a")).state == "SANDBOX_NOTREADY"
    assert harness.controller.sandbox_ids("ns-a") == ["same"]
    assert harness.controller.sandbox_ids("ns-b") == ["same"]


# --- closing and serving ---------------------------------------------------------------------


async def test_aclose_kills_children_and_answers_waits(workdir: str) -> None:
    before = live_tasks()
    controller = ProcessSandboxer()
    path = os.path.join(workdir, "c.sock")
    calls = CallLog()
    async with serve(controller, path, calls=calls), Channel(path=path) as channel:
        h = Harness(controller, channel, path, workdir, calls=calls)
        one = await h.run("one")
        two = await h.run("two")
        await h.create("idle")
        waiter = asyncio.create_task(h.wait("one"))
        await h.arrived("Wait")
        assert sorted(controller.pids()) == sorted([one.pid, two.pid])
        await controller.aclose()
        await controller.aclose()  # idempotent
        assert (await asyncio.wait_for(waiter, 10)).exit_status == 137
        assert controller.pids() == []
        assert pid_gone(one.pid)
        assert pid_gone(two.pid)
        await expect_error(h.start("idle"), Status.UNAVAILABLE)
        await expect_error(h.create("new"), Status.UNAVAILABLE)
        await expect_error(h.wait("idle"), Status.UNAVAILABLE)
    assert live_tasks() - before - {asyncio.current_task()} == set()


async def test_serve_refuses_a_live_socket_and_replaces_a_stale_one(workdir: str) -> None:
    path = os.path.join(workdir, "s.sock")
    controller = SandboxController()
    async with serve(controller, path):
        with pytest.raises(OSError, match="already listening"):
            async with serve(controller, path):
                pass
        assert exists(path)
    assert not exists(path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    async with serve(controller, path), Channel(path=path) as channel:
        stub = sandbox_pb.ControllerStub(channel, metadata={"containerd-namespace": NS})
        # The base class answers UNIMPLEMENTED for what a subclass does not override.
        await expect_error(
            stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="x")),
            Status.UNIMPLEMENTED,
        )


async def test_subclass_sees_the_request_namespace(workdir: str) -> None:
    seen: list[tuple[str, str]] = []

    class Recorder(SandboxController):
        async def status(
            self, message: sandbox_pb.ControllerStatusRequest
        ) -> sandbox_pb.ControllerStatusResponse:
            seen.append((current_namespace(), current_metadata().get("x-trace", "")))
            return sandbox_pb.ControllerStatusResponse(sandbox_id=message.sandbox_id)

        async def platform(
            self, message: sandbox_pb.ControllerPlatformRequest
        ) -> sandbox_pb.ControllerPlatformResponse:
            # Never looks at the namespace: the base class must refuse bad ones first.
            seen.append(("platform", message.sandbox_id))
            return sandbox_pb.ControllerPlatformResponse()

    path = os.path.join(workdir, "r.sock")
    async with serve(Recorder(), path), Channel(path=path) as channel:
        metadata = {"containerd-namespace": "k8s.io", "x-trace": "abc"}
        stub = sandbox_pb.ControllerStub(channel, metadata=metadata)
        bare = sandbox_pb.ControllerStub(channel)
        bad = sandbox_pb.ControllerStub(channel, metadata={"containerd-namespace": "-bad"})
        await stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="s"))
        await expect_error(
            bare.status(sandbox_pb.ControllerStatusRequest()),
            Status.FAILED_PRECONDITION,
            NO_NAMESPACE,
        )
        await expect_error(
            bare.platform(sandbox_pb.ControllerPlatformRequest()),
            Status.FAILED_PRECONDITION,
            NO_NAMESPACE,
        )
        await expect_error(
            bad.platform(sandbox_pb.ControllerPlatformRequest()), Status.INVALID_ARGUMENT
        )
        await stub.platform(sandbox_pb.ControllerPlatformRequest(sandbox_id="p"))
    assert seen == [("k8s.io", "abc"), ("platform", "p")]
    with pytest.raises(RuntimeError):
        current_namespace()


async def test_module_entry_point_serves_and_stops_its_sandboxes(workdir: str) -> None:
    path = os.path.join(workdir, "main.sock")
    proc = await asyncio.create_subprocess_exec(
        *SANDBOXER_MODULE,
        "--socket",
        path,
        "--isolation",
        "none",
        stdout=subprocess.PIPE,
        env=module_env(),
    )
    unserved = ProcessSandboxer()  # the harness's; the one under test is the child's
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert path in line.decode()
        async with Channel(path=path) as channel:
            h = Harness(unserved, channel, path, workdir)
            started = await h.run("child")
            assert not pid_gone(started.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await wait_pid_gone(started.pid)
        assert not exists(path)
    finally:
        await unserved.aclose()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# --- a state directory: the sandboxes outlive the sandboxer ---------------------------------


def release(fifo: str) -> None:
    """Let a sandbox blocked in ``read line < FIFO`` go on (blocks until it reads)."""
    with open(fifo, "w") as f:
        f.write("go\n")


def record(state_dir: str, sandbox_id: str) -> dict[str, Any]:
    path = os.path.join(state_dir, "sandboxes", NS, sandbox_id, "sandbox.json")
    with open(path) as f:
        data: dict[str, Any] = json.load(f)
    return data


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


async def supervisor_of(h: Harness, sandbox_id: str) -> int:
    return int((await h.status(sandbox_id, verbose=True)).info["supervisor_pid"])


@contextlib.asynccontextmanager
async def serving(controller: ProcessSandboxer, workdir: str) -> AsyncIterator[Harness]:
    path = os.path.join(workdir, "r.sock")
    calls = CallLog()
    async with serve(controller, path, calls=calls), Channel(path=path) as channel:
        yield Harness(controller, channel, path, workdir, calls=calls)


async def test_a_new_controller_takes_back_the_sandboxes(workdir: str, state_dir: str) -> None:
    before = live_tasks()
    fifo = os.path.join(workdir, "later.fifo")
    os.mkfifo(fifo)
    first = ProcessSandboxer(state_dir)
    async with serving(first, workdir) as h:
        sleeper = await h.run("sleeper")
        later = await h.run("later", spec("sh", "-c", f"read line < {fifo}; exit 7"))
        later_supervisor = await supervisor_of(h, "later")
        await h.run("done", spec("sh", "-c", "exit 3"))
        done = await h.wait("done")
        await h.create("idle", labels={"k": "v"})
        pending = asyncio.create_task(h.wait("sleeper"))
        await h.arrived("Wait", 2)  # the one for "done", and this one
        created = (await h.status("sleeper")).created_at
        assert len(supervisors(state_dir)) == 2
        first.detach()
        # What a client retries: the controller is going away, the sandbox is not.
        await expect_error(asyncio.wait_for(pending, 10), Status.UNAVAILABLE)
        await expect_error(h.status("sleeper"), Status.UNAVAILABLE)
    # As after a SIGKILL of the sandboxer: the sandboxes run on...
    assert not pid_gone(sleeper.pid)
    assert not pid_gone(later.pid)
    # ... and one of them ends while no sandboxer runs.
    await asyncio.wait_for(asyncio.to_thread(release, fifo), 10)
    await wait_pid_gone(later_supervisor)

    second = ProcessSandboxer(state_dir)
    async with serving(second, workdir) as h:
        assert second.sandbox_ids(NS) == ["done", "idle", "later", "sleeper"]
        assert second.pids() == [sleeper.pid]
        status = await h.status("sleeper")
        assert (status.state, status.pid, status.created_at) == (
            "SANDBOX_READY",
            sleeper.pid,
            created,
        )
        assert (await h.wait("later")).exit_status == 7
        assert (await h.status("later")).state == "SANDBOX_NOTREADY"
        again = await h.wait("done")
        assert (again.exit_status, again.exited_at) == (3, done.exited_at)
        await expect_error(h.start("sleeper"), Status.ALREADY_EXISTS)
        waiter = asyncio.create_task(h.wait("sleeper"))
        await h.arrived("Wait", 3)  # after those for "later" and "done"
        assert not waiter.done()
        await h.stop("sleeper")
        assert (await asyncio.wait_for(waiter, 10)).exit_status == 128 + signal.SIGTERM
        assert pid_gone(sleeper.pid)
        idle = await h.start("idle")
        assert idle.labels == {"k": "v"}
        assert second.pids() == [idle.pid]
        for sandbox_id in ("done", "idle", "later", "sleeper"):
            await h.shutdown(sandbox_id)
        assert pid_gone(idle.pid)
        assert second.sandbox_ids(NS) == []
    await second.aclose()
    assert supervisors(state_dir) == []
    assert os.listdir(os.path.join(state_dir, "sandboxes")) == []
    assert live_tasks() - before - {asyncio.current_task()} == set()


async def test_a_killed_supervisor_means_255_and_a_reason(workdir: str, state_dir: str) -> None:
    first = ProcessSandboxer(state_dir)
    async with serving(first, workdir) as h:
        own = await h.run("own")
        waiter = asyncio.create_task(h.wait("own"))
        await h.arrived("Wait")
        os.kill(await supervisor_of(h, "own"), signal.SIGKILL)
        assert (await asyncio.wait_for(waiter, 10)).exit_status == 255
        assert pid_gone(own.pid), "the sandbox process outlived its supervisor"
        status = await h.status("own")
        assert status.state == "SANDBOX_NOTREADY"
        assert status.exited_at is not None
        reason = status.info["exit_reason"]
        assert "was killed by signal 9" in reason
        assert "still running and was killed" in reason
        # Signals sent to a supervisor go to its sandbox, whose exit status is then its own.
        termed = await h.run("termed")
        supervisor = await supervisor_of(h, "termed")
        await until(lambda: catches(supervisor, signal.SIGTERM))
        os.kill(supervisor, signal.SIGTERM)
        assert (await h.wait("termed")).exit_status == 128 + signal.SIGTERM
        assert pid_gone(termed.pid)
        assert "exit_reason" not in (await h.status("termed")).info
        await h.shutdown("termed")
        taken_back = await h.run("taken-back")
        first.detach()
    second = ProcessSandboxer(state_dir)
    async with serving(second, workdir) as h:
        assert (await h.wait("own")).exit_status == 255
        assert (await h.status("own")).info["exit_reason"] == reason
        waiter = asyncio.create_task(h.wait("taken-back"))
        await h.arrived("Wait", 2)  # after the one for "own"
        os.kill(await supervisor_of(h, "taken-back"), signal.SIGKILL)
        assert (await asyncio.wait_for(waiter, 10)).exit_status == 255
        assert pid_gone(taken_back.pid)
        reason = (await h.status("taken-back")).info["exit_reason"]
        assert "without recording the exit status" in reason
        assert "still running and was killed" in reason
        assert record(state_dir, "taken-back")["exit_reason"] == reason
        for sandbox_id in ("own", "taken-back"):
            await h.shutdown(sandbox_id)
    await second.aclose()
    assert supervisors(state_dir) == []


DEFAULT_PATH_ENV = "PATH=/usr/local/bin:/usr/bin:/bin"


def supervise_request(cwd: str, args: list[str], env: list[str]) -> bytes:
    fields = [cwd, str(len(args)), *args, *env]
    payload = "\0".join(fields).encode()
    return b"%d\n" % len(payload) + payload


async def test_a_start_cut_short_ends_with_137_and_a_reason(workdir: str, state_dir: str) -> None:
    """The sandboxer died after the supervisor started the process, before it said "go"."""
    store = StateDir(state_dir)
    directory = store.sandbox_dir(NS, "cut")
    os.makedirs(directory)
    supervisor = await asyncio.create_subprocess_exec(
        *supervisor_argv(directory, tied=False),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert supervisor.stdin is not None
        assert supervisor.stdout is not None
        supervisor.stdin.write(supervise_request("/", ["sleep", "300"], [DEFAULT_PATH_ENV]))
        await supervisor.stdin.drain()
        answer = (await asyncio.wait_for(supervisor.stdout.read(), 10)).split(b"\0")
        assert answer[0] == b"started"
        pid = int(answer[1])
        assert not pid_gone(pid)
        store.save(
            SandboxState(
                namespace=NS,
                sandbox_id="cut",
                sandbox=create_request("cut").sandbox or SandboxPb(),
                created_at=datetime.now(UTC),
                supervisor_pid=supervisor.pid,
                supervisor_start=start_ticks(supervisor.pid) or 0,
                boot_id=boot_id(),
            )
        )
        store.close()
        supervisor.stdin.close()  # the old sandboxer's end of the pipe, closed by its death
        controller = ProcessSandboxer(state_dir)
        async with serving(controller, workdir) as h:
            assert (await h.wait("cut")).exit_status == 128 + signal.SIGKILL
            status = await h.status("cut")
            assert status.pid == pid
            assert "before it recorded the start" in status.info["exit_reason"]
            assert pid_gone(pid)
            await expect_error(h.start("cut"), Status.ALREADY_EXISTS)
            await h.shutdown("cut")
        await controller.aclose()
        assert await asyncio.wait_for(supervisor.wait(), 10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            supervisor.kill()
        await supervisor.wait()


async def test_records_are_not_trusted_across_reboots_or_pid_reuse(
    workdir: str, state_dir: str
) -> None:
    bystander = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
    try:
        ticks = start_ticks(bystander.pid)
        assert ticks is not None
        store = StateDir(state_dir)
        for sandbox_id, boot, start in (
            ("rebooted", "another-boot", ticks),  # right process, but from another boot
            ("reused", boot_id(), ticks + 1),  # this boot, but a later process with the pid
        ):
            store.save(
                SandboxState(
                    namespace=NS,
                    sandbox_id=sandbox_id,
                    sandbox=create_request(sandbox_id).sandbox or SandboxPb(),
                    created_at=datetime.now(UTC),
                    pid=bystander.pid,
                    pid_start=start,
                    supervisor_pid=bystander.pid,
                    supervisor_start=start,
                    boot_id=boot,
                    started_at=datetime.now(UTC),
                )
            )
        store.close()
        controller = ProcessSandboxer(state_dir)
        async with serving(controller, workdir) as h:
            for sandbox_id in ("rebooted", "reused"):
                assert (await h.wait(sandbox_id)).exit_status == 255
                reason = (await h.status(sandbox_id)).info["exit_reason"]
                assert "without recording the exit status" in reason
                assert "killed" not in reason
                await h.shutdown(sandbox_id)
        await controller.aclose()
        assert bystander.returncode is None, "a process that merely reused a pid was signalled"
        assert not pid_gone(bystander.pid)
    finally:
        bystander.kill()
        await bystander.wait()


async def test_records_on_disk_the_lock_and_aclose(workdir: str, state_dir: str) -> None:
    first = ProcessSandboxer(state_dir)
    assert first.state_dir == state_dir  # absolute already
    with pytest.raises(StateDirBusyError):
        ProcessSandboxer(state_dir)
    async with serving(first, workdir) as h:
        await h.create("rec", spec("sleep", "300"), labels={"team": "a"})
        data = record(state_dir, "rec")
        assert (data["namespace"], data["sandbox_id"], data["state"]) == (NS, "rec", "created")
        assert data["labels"] == {"team": "a"}
        started = await h.start("rec")
        data = record(state_dir, "rec")
        assert data["state"] == "running"
        assert data["pid"] == data["pgid"] == started.pid
        assert data["pid_start"] == start_ticks(started.pid)
        assert data["supervisor_pid"] == await supervisor_of(h, "rec")
        assert supervisors(state_dir) == [data["supervisor_pid"]]
        await h.stop("rec")
        data = record(state_dir, "rec")
        assert (data["state"], data["exit_status"]) == ("exited", 143)
        await h.shutdown("rec")
        assert not exists(os.path.join(state_dir, "sandboxes", NS))

        killed = await h.run("killed")
        await h.create("unstarted")
    await first.aclose()
    assert pid_gone(killed.pid)
    assert supervisors(state_dir) == []
    # aclose() killed the sandboxes but kept their records, and let go of the directory.
    second = ProcessSandboxer(state_dir)
    async with serving(second, workdir) as h:
        assert (await h.wait("killed")).exit_status == 128 + signal.SIGKILL
        assert (await h.status("unstarted")).state == "SANDBOX_NOTREADY"
        await h.start("unstarted")
        await h.shutdown("unstarted")
        await h.shutdown("killed")
    await second.aclose()
    assert supervisors(state_dir) == []


async def test_detach_needs_a_state_dir() -> None:
    controller = ProcessSandboxer()
    with pytest.raises(RuntimeError, match="state directory"):
        controller.detach()
    await controller.aclose()


async def test_module_entry_point_with_a_state_dir_survives_sigkill(
    workdir: str, state_dir: str
) -> None:
    fifo = os.path.join(workdir, "slow.fifo")
    os.mkfifo(fifo)
    # python -m sandboxclient.sandboxer --socket ... --state-dir ... --trace-calls ...
    sandboxer = SandboxerProcess(os.path.join(workdir, "main.sock"), state_dir, isolation="none")
    path = sandboxer.socket_path
    unserved = ProcessSandboxer()  # the harness's; the one under test is the child's
    sandboxer.start()
    try:
        async with Channel(path=path) as channel:
            h = Harness(unserved, channel, path, workdir)
            slow = await h.run("slow", spec("sh", "-c", f"read line < {fifo}; exit 9"))
            sleepy = await h.run("sleepy")
            pending = asyncio.create_task(h.wait("slow"))
            await sandboxer.wait_for_call("Wait", timeout=10)
            assert sandboxer.kill() == -signal.SIGKILL
            with pytest.raises(StreamTerminatedError, match="Connection lost"):
                await asyncio.wait_for(pending, 10)
        assert not pid_gone(slow.pid)
        assert not pid_gone(sleepy.pid)
        assert len(supervisors(state_dir)) == 2

        sandboxer.start()
        async with Channel(path=path) as channel:
            h = Harness(unserved, channel, path, workdir)
            waiter = asyncio.create_task(h.wait("slow"))
            await sandboxer.wait_for_call("Wait", 2, timeout=10)
            assert (await h.status("sleepy")).state == "SANDBOX_READY"
            assert not waiter.done()
            await asyncio.wait_for(asyncio.to_thread(release, fifo), 10)
            assert (await asyncio.wait_for(waiter, 10)).exit_status == 9
        assert sandboxer.stop() == 0  # SIGTERM: it stops its sandboxes and exits cleanly
        await wait_pid_gone(sleepy.pid)
        assert supervisors(state_dir) == []
    finally:
        await unserved.aclose()
        sandboxer.kill()


# --- the isolating sandboxer, when containerd fails it in the middle of a Start ---------------


@contextlib.asynccontextmanager
async def isolating_over_the_stand_in(
    workdir: str, timeout: float
) -> AsyncIterator[tuple[FakeContainerd, ContainerSandboxer, sandbox_pb.ControllerStub]]:
    """A ContainerSandboxer whose containerd is the stand-in (tasks run as host processes
    there), with ``timeout`` on each of its calls to it."""
    async with FakeContainerd() as fake:
        controller = ContainerSandboxer(containerd=fake.address, timeout=timeout)
        path = os.path.join(workdir, "isolating.sock")
        try:
            async with serve(controller, path), Channel(path=path) as channel:
                stub = sandbox_pb.ControllerStub(channel, metadata={"containerd-namespace": NS})
                yield fake, controller, stub
        finally:
            await controller.aclose()


def rooted(workdir: str) -> AnyPb:
    """A spec with a root of its own (no default root to build) and a long-lived process."""
    body = {"root": {"path": workdir}, "process": {"args": ["sleep", "600"]}}
    return AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(body).encode())


async def let_through(fake: FakeContainerd, method: str, count: int = 1) -> None:
    """Once the ``count``-th call of ``method`` is held by the stalled stand-in, let that
    call (only the calls held) go on; later ones are held again."""
    await fake.wait_for_call(method, count)
    fake.stall = False
    fake.stall = True


async def test_what_a_failed_start_could_not_undo_is_removed_later(workdir: str) -> None:
    async with isolating_over_the_stand_in(workdir, timeout=1.0) as (fake, controller, stub):
        ids = ("left1", "left2", "left3")
        for n, sandbox_id in enumerate(ids, 1):
            await stub.create(create_request(sandbox_id, rooted(workdir)))
            # Its container and task are made; then every call is held: the task's start,
            # and the undo, run out of time (as when containerd restarts meanwhile).
            fake.stall = True
            try:
                starting = stub.start(sandbox_pb.ControllerStartRequest(sandbox_id=sandbox_id))
                pending = asyncio.ensure_future(starting)
                await let_through(fake, "Containers/Create", n)
                await let_through(fake, "Tasks/Create", n)
                await fake.wait_for_call("Tasks/Start", n)
                await expect_error(pending, Status.FAILED_PRECONDITION)
            finally:
                fake.stall = False
        assert fake.container_ids(NS) == list(ids)  # what the undo could not delete
        assert fake.task_ids(NS) == list(ids)

        await stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="left1"))
        assert fake.container_ids(NS) == ["left2", "left3"]
        assert fake.task_ids(NS) == ["left2", "left3"]
        started = await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="left2"))
        assert started.pid > 0
        assert (
            await stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="left2"))
        ).pid == started.pid
        await stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="left2"))
        assert fake.container_ids(NS) == ["left3"]
        await controller.aclose()  # without a state directory it deletes what is left
        assert fake.container_ids(NS) == []
        assert fake.task_ids(NS) == []


async def test_a_start_that_ends_after_aclose_leaves_nothing(workdir: str) -> None:
    async with isolating_over_the_stand_in(workdir, timeout=20.0) as (fake, controller, stub):
        await stub.create(create_request("cut1", rooted(workdir)))
        fake.stall = True
        try:
            pending = asyncio.ensure_future(
                stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="cut1"))
            )
            await let_through(fake, "Containers/Create")
            await let_through(fake, "Tasks/Create")
            await fake.wait_for_call("Tasks/Start")
            closing = asyncio.ensure_future(controller.aclose())  # the Start is in flight
            for _ in range(10):  # event-loop turns, not time: aclose runs as far as it can
                await asyncio.sleep(0)
            assert not closing.done()  # it lets the Start finish first
        finally:
            fake.stall = False
        await asyncio.wait_for(closing, 20)
        message = await expect_error(pending, Status.UNAVAILABLE)
        assert "the sandbox controller is closed" in message
        assert fake.container_ids(NS) == []
        assert fake.task_ids(NS) == []


async def test_aclose_lets_a_shutdown_under_way_finish_and_leaves_nothing(workdir: str) -> None:
    async with isolating_over_the_stand_in(workdir, timeout=20.0) as (fake, controller, stub):
        await stub.create(create_request("shut1", rooted(workdir)))
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="shut1"))
        await stub.stop(sandbox_pb.ControllerStopRequest(sandbox_id="shut1", timeout_secs=0))
        await stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="shut1"))
        listed = fake.call_count("Containers/List")
        fake.stall = True
        try:
            pending = asyncio.ensure_future(
                stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="shut1"))
            )
            # The task has exited: removing its container is held at the first call.
            await fake.wait_for_call("Containers/List", listed + 1)
            closing = asyncio.ensure_future(controller.aclose())
            for _ in range(10):  # event-loop turns, not time: aclose runs as far as it can
                await asyncio.sleep(0)
            assert not closing.done()  # it waits for the Shutdown under way
        finally:
            fake.stall = False
        await asyncio.wait_for(pending, 20)
        await asyncio.wait_for(closing, 20)
        assert fake.container_ids(NS) == []
        assert fake.task_ids(NS) == []
