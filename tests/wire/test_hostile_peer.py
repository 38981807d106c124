"""The client against a hostile or broken server: every outcome typed, every answer bounded.

A raw HTTP/2 server (``tests._rawh2``) answers every call of every public Client method
with what a hypothesis strategy draws (random bytes, cut-short and compressed messages,
wrong wire types, invalid UTF-8, out-of-range values, trailing garbage, a 4 GiB length
prefix, resets, closed connections, broken headers): the method returns a value of its
documented type or raises a ``ContainerdError``, never anything else. A 100 MB claimed
answer costs the client no more than a flow-control window of memory, and a silent peer
is found out by the keepalive PINGs within their bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given

from sandboxclient import (
    AnyValue,
    Client,
    CompletedProcess,
    Container,
    ContainerdError,
    ContainerInfo,
    ExitStatus,
    Platform,
    Process,
    RuntimeInfo,
    Sandbox,
    SandboxInfo,
    SandboxMetrics,
    SandboxStatus,
    StartResult,
    Task,
    UnavailableError,
)
from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._plumbing._server_info import SandboxerInfo, ServerVersion
from sandboxclient._process_models import ProcessInfo, ProcessStatus
from sandboxclient.errors import (
    CanceledError,
    DeadlineExceededError,
    InternalError,
    NotFoundError,
    ResourceExhaustedError,
    UnknownError,
)
from sandboxclient.events import Event, EventsLagged, EventsReconnected
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.constants import RUNTIME
from tests.support.hostile_answers import (
    NAMED,
    TASK_RUNNING,
    WAIT_EXIT_7,
    answers,
    fuzz_settings,
    hooked,
)
from tests.support.rawh2 import Answer, RawRequest, RawServer, frame

pytestmark = pytest.mark.anyio
_SETTINGS = fuzz_settings(12)
_ROOT = Path(__file__).resolve().parents[2]
_HARD_LIMIT = 20.0  # no call may take longer, whatever the answer: a test failure


@dataclasses.dataclass
class Env:
    """The handles a target calls through, on a fresh Client per example."""

    client: Client
    rootfs: Path
    sandbox: Sandbox
    container: Container
    task: Task
    process: Process


class Peer:
    """The hostile server of one test, answering as ``answer`` says (setup calls validly)."""

    def __init__(self, path: str) -> None:
        self.answer: Answer = Answer()
        self.setup = False
        self.server = RawServer(path, self._answer)

    def _answer(self, request: RawRequest) -> Answer:
        if self.setup and request.path.endswith("Tasks/Get"):
            return Answer(data=frame(TASK_RUNNING))
        return self.answer


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[Peer]:
    hostile = Peer(f"{tmp_path}/c.sock")
    async with hostile.server:
        yield hostile


def list_of(kind: type | tuple[type, ...]) -> Callable[[Any], bool]:
    """A check that the value is a list of ``kind``."""
    return lambda value: isinstance(value, list) and all(isinstance(v, kind) for v in value)


def exit_status(value: Any) -> bool:
    """An ExitStatus whose error, if any, is typed."""
    return isinstance(value, ExitStatus) and (
        value.error is None or isinstance(value.error, ContainerdError)
    )


def is_none(value: Any) -> bool:
    """None, for the calls that return nothing."""
    return value is None


def kind(*types: Any) -> Callable[[Any], bool]:
    """A check that the value is one of ``types``."""
    return lambda value: isinstance(value, types)


async def _events(env: Env) -> Any:
    stream = env.client.events()
    try:
        async with asyncio.timeout(1.5):
            return await anext(stream)
    except TimeoutError:
        return None  # still subscribing: a subscription rides out failures (documented)
    finally:
        await stream.aclose()


async def _subscribed(env: Env) -> Any:
    stream = env.client.events()
    try:
        async with asyncio.timeout(1.5):
            await stream.subscribed()
    except TimeoutError:
        pass  # still subscribing, as above
    finally:
        await stream.aclose()


async def _sandbox_block(env: Env) -> Any:
    async with env.client.sandbox("s2", runtime="io.containerd.runc.v2") as sb:
        return sb


async def _wait(channel: Awaitable[Any]) -> Any:
    return await channel


async def _wait_channel(channel: Awaitable[Any]) -> Any:
    return await (await channel)


Target = tuple[str, Callable[[Env], Awaitable[Any]], Callable[[Any], bool]]

TARGETS: list[Target] = [
    # Client
    ("Client.new_sandbox", lambda e: e.client.new_sandbox("s2", runtime=RUNTIME), kind(Sandbox)),
    ("Client.sandbox", _sandbox_block, kind(Sandbox)),
    ("Client.load_sandbox", lambda e: e.client.load_sandbox("s1"), kind(Sandbox)),
    ("Client.get_sandbox", lambda e: e.client.get_sandbox("s1"), kind(SandboxInfo)),
    ("Client.list_sandboxes", lambda e: e.client.list_sandboxes(), list_of(SandboxInfo)),
    ("Client.delete_sandbox", lambda e: e.client.delete_sandbox("s1"), is_none),
    (
        "Client.new_container",
        lambda e: e.client.new_container("c2", rootfs=e.rootfs),
        kind(Container),
    ),
    ("Client.load_container", lambda e: e.client.load_container("c1"), kind(Container)),
    ("Client.get_container", lambda e: e.client.get_container("c1"), kind(ContainerInfo)),
    ("Client.list_containers", lambda e: e.client.list_containers(), list_of(ContainerInfo)),
    (
        "Client.delete_container",
        lambda e: e.client.delete_container("c1", force=True),
        is_none,
    ),
    ("Client.version", lambda e: e.client.version(), kind(ServerVersion)),
    ("Client.sandboxers", lambda e: e.client.sandboxers(), list_of(SandboxerInfo)),
    ("Client.events", _events, kind(Event, EventsLagged, EventsReconnected, type(None))),
    ("EventStream.subscribed", _subscribed, is_none),
    # Controller
    (
        "Controller.create",
        lambda e: e.client.controller().create(e.sandbox.metadata),
        is_none,
    ),
    ("Controller.start", lambda e: e.client.controller().start("s1"), kind(StartResult)),
    ("Controller.stop", lambda e: e.client.controller().stop("s1"), is_none),
    (
        "Controller.wait",
        lambda e: _wait(e.client.controller().wait("s1", timeout=1.0)),
        exit_status,
    ),
    ("Controller.status", lambda e: e.client.controller().status("s1"), kind(SandboxStatus)),
    ("Controller.platform", lambda e: e.client.controller().platform("s1"), kind(Platform)),
    ("Controller.metrics", lambda e: e.client.controller().metrics("s1"), kind(SandboxMetrics)),
    (
        "Controller.update",
        lambda e: e.client.controller().update(e.sandbox.metadata, ["labels"]),
        is_none,
    ),
    ("Controller.shutdown", lambda e: e.client.controller().shutdown("s1"), is_none),
    # Sandbox
    ("Sandbox.start", lambda e: e.sandbox.start(), kind(StartResult)),
    ("Sandbox.stop", lambda e: e.sandbox.stop(grace=1), is_none),
    ("Sandbox.wait", lambda e: _wait_channel(e.sandbox.wait(timeout=1.0)), exit_status),
    ("Sandbox.shutdown", lambda e: e.sandbox.shutdown(), is_none),
    ("Sandbox.labels", lambda e: e.sandbox.labels(), kind(dict)),
    ("Sandbox.set_labels", lambda e: e.sandbox.set_labels({"a": "b"}), kind(dict)),
    ("Sandbox.status", lambda e: e.sandbox.status(verbose=True), kind(SandboxStatus)),
    ("Sandbox.platform", lambda e: e.sandbox.platform(), kind(Platform)),
    ("Sandbox.metrics", lambda e: e.sandbox.metrics(), kind(SandboxMetrics)),
    ("Sandbox.update", lambda e: e.sandbox.update(labels={"a": "b"}), kind(SandboxInfo)),
    (
        "Sandbox.new_container",
        lambda e: e.sandbox.new_container("c3", rootfs=e.rootfs),
        kind(Container),
    ),
    ("Sandbox.list_containers", lambda e: e.sandbox.list_containers(), list_of(ContainerInfo)),
    ("Sandbox.task", lambda e: e.sandbox.task(), kind(Task)),
    ("Sandbox.run", lambda e: e.sandbox.run("true", timeout=2.0), kind(CompletedProcess)),
    ("Sandbox.spawn", lambda e: e.sandbox.spawn("true"), kind(Process)),
    # Container
    ("Container.info", lambda e: e.container.info(), kind(ContainerInfo)),
    ("Container.labels", lambda e: e.container.labels(), kind(dict)),
    ("Container.set_labels", lambda e: e.container.set_labels({"a": "b"}), kind(dict)),
    ("Container.spec", lambda e: e.container.spec(), kind(dict, type(None))),
    ("Container.new_task", lambda e: e.container.new_task(), kind(Task)),
    ("Container.task", lambda e: e.container.task(), kind(Task)),
    ("Container.delete", lambda e: e.container.delete(force=True), is_none),
    # Task
    ("Task.pause", lambda e: e.task.pause(), is_none),
    ("Task.resume", lambda e: e.task.resume(), is_none),
    ("Task.pids", lambda e: e.task.pids(), list_of(ProcessInfo)),
    ("Task.metrics", lambda e: e.task.metrics(), kind(SandboxMetrics)),
    ("Task.update", lambda e: e.task.update(resources={}), is_none),
    ("Task.exec", lambda e: e.task.exec("e2", ["true"]), kind(Process)),
    ("Task.spawn", lambda e: e.task.spawn("true"), kind(Process)),
    ("Task.run", lambda e: e.task.run("true", timeout=2.0), kind(CompletedProcess)),
    # Process (the task's own, and an exec's)
    ("Process.start", lambda e: e.process.start(), kind(int)),
    ("Process.wait", lambda e: _wait_channel(e.process.wait(timeout=1.0)), exit_status),
    ("Process.wait_exit", lambda e: e.task.wait_exit(timeout=1.0), exit_status),
    ("Process.kill", lambda e: e.process.kill(), is_none),
    ("Process.terminate", lambda e: e.process.terminate(), is_none),
    ("Process.send_signal", lambda e: e.process.send_signal(10, all_processes=True), is_none),
    ("Process.status", lambda e: e.process.status(), kind(ProcessStatus)),
    ("Process.delete", lambda e: e.process.delete(force=True), exit_status),
    ("Process.close_stdin", lambda e: e.process.close_stdin(), is_none),
    ("Process.resize", lambda e: e.process.resize(80, 24), is_none),
    ("Process.discard", lambda e: e.process.discard(), is_none),
]


async def _env(peer: Peer, client: Client, rootfs: Path) -> Env:
    info = SandboxInfo("s1", RuntimeInfo(RUNTIME), "shim", None, None, labels={"a": "b"})
    sandbox = client.sandbox_handle(info)
    # A root path, so that new_task gets as far as the wire (the client refuses a record
    # with no root filesystem before any call).
    root = AnyValue(RUNTIME_SPEC_TYPE_URL, b'{"root": {"path": "/"}}')
    container = client.container_handle(
        ContainerInfo("c1", "", RuntimeInfo(RUNTIME), spec_any=root)
    )
    peer.setup = True
    try:
        task = await container.task()
    finally:
        peer.setup = False
    process = await _exec_handle(task)
    return Env(client, rootfs, sandbox, container, task, process)


async def _exec_handle(task: Task) -> Process:
    """An exec's handle, without asking the server anything."""
    return Process(task._connection, task._waits, task.container_id, "e1")


async def _outcome(peer: Peer, answer: Answer, name: str, run: Any, check: Any, root: Path) -> None:
    async with Client(peer.server.path, timeout=2.0, keepalive_time=None) as client:
        env = await _env(peer, client, root)
        peer.answer = answer
        try:
            async with asyncio.timeout(_HARD_LIMIT):
                value = await run(env)
        except ContainerdError:
            return
        assert check(value), f"{name} returned {value!r} for {answer!r}"


@hooked
@pytest.mark.parametrize(("name", "run", "check"), TARGETS, ids=[t[0] for t in TARGETS])
@_SETTINGS
@given(answer=answers)
async def test_every_call_gives_its_type_or_a_containerd_error(
    peer: Peer, tmp_path: Path, name: str, run: Any, check: Any, answer: Answer
) -> None:
    await _outcome(peer, answer, name, run, check, tmp_path)


# -- each hostile case, and the class it must give (containerd's Go client's) --------------

EXPECTED: dict[str, type[ContainerdError] | None] = {
    "random bytes": InternalError,
    "cut-short message": InternalError,
    "cut-short prefix": InternalError,
    "wrong wire type": InternalError,
    "length past the end": InternalError,
    "overlong varint": InternalError,
    "out-of-range timestamp": InternalError,
    "invalid UTF-8": InternalError,
    "compressed flag": InternalError,
    "unknown flag": InternalError,
    "trailing garbage": InternalError,
    "a second message": InternalError,
    "length prefix of 4 GiB": ResourceExhaustedError,
    "100 MB claimed": ResourceExhaustedError,
    "no message": InternalError,
    "trailers-only OK": InternalError,
    "no trailers": InternalError,
    "reset mid-message": InternalError,
    "reset CANCEL": CanceledError,
    "reset REFUSED_STREAM": UnavailableError,
    "closed mid-message": UnavailableError,
    "closed before headers": UnavailableError,
    "no :status": InternalError,
    "HTTP 503": UnavailableError,
    "wrong content-type": UnknownError,
    "bad binary metadata": InternalError,
    "non-ASCII header": UnavailableError,
    "bad grpc-status": InternalError,
    "unknown grpc-status": UnknownError,
    "NOT_FOUND": NotFoundError,
    "empty DATA frames": None,
    "empty message": None,
}
# The cases that are about the message's content, not its framing: the record reader of
# the sandbox store (get_sandbox) reads other fields than Controller.Status's.
_CONTENT = {
    "wrong wire type",
    "length past the end",
    "overlong varint",
    "out-of-range timestamp",
    "invalid UTF-8",
    "empty message",
}


async def _status_outcome(peer: Peer, answer: Answer, call: str) -> BaseException | None:
    peer.answer = answer
    async with Client(peer.server.path, timeout=5.0, keepalive_time=None) as client:
        try:
            if call == "status":
                await client.controller().status("s1")
            else:
                await client.get_sandbox("s1")
        except ContainerdError as exc:
            return exc
    return None


@hooked
@pytest.mark.parametrize("case", sorted(EXPECTED))
async def test_each_hostile_answer_is_the_class_go_would_give(peer: Peer, case: str) -> None:
    got = await _status_outcome(peer, NAMED[case], "status")
    expected = EXPECTED[case]
    if expected is None:
        assert got is None, got
    else:
        assert type(got) is expected, (case, got)
    if case in _CONTENT:
        return
    got = await _status_outcome(peer, NAMED[case], "get_sandbox")
    if expected is None:
        assert got is None or isinstance(got, NotFoundError), got
    else:
        assert type(got) is expected, (case, got)


def test_every_named_case_has_its_expected_class() -> None:
    generic = {"a record without a sandboxer", "a container with a broken spec"}
    assert set(NAMED) - generic == set(EXPECTED)


async def test_the_limit_names_the_size_and_the_limit(peer: Peer) -> None:
    peer.answer = Answer(data=frame(b"", length=70_000), fill=70_000)
    async with Client(peer.server.path, max_message_size=65_536) as client:
        with pytest.raises(ResourceExhaustedError, match=r"larger than max \(70000 vs\. 65536\)"):
            await client.controller().status("s1")
    peer.answer = Answer(data=frame(b"\x0a\x01x" + b"\x00" * 0))
    async with Client(peer.server.path, max_message_size=3) as client:
        status = await client.controller().status("s1")
        assert status.id == "x"


def test_the_client_options_are_checked() -> None:
    for bad, error in (
        ({"max_message_size": 0}, ValueError),
        ({"max_message_size": 2**32}, ValueError),
        ({"max_message_size": 1.5}, TypeError),
        ({"max_message_size": True}, TypeError),
        ({"keepalive_time": 0}, ValueError),
        ({"keepalive_time": float("nan")}, ValueError),
        ({"keepalive_time": "10"}, TypeError),
        ({"keepalive_timeout": None}, TypeError),
        ({"keepalive_timeout": -1}, ValueError),
    ):
        with pytest.raises(error):
            Client("/nowhere", **bad)
    with pytest.raises(TypeError):  # keyword-only
        cast(Any, Client)("/nowhere", "default", "shim", 30.0, 5)
    Client("/nowhere", keepalive_time=None, max_message_size=1, keepalive_timeout=0.1)


# -- memory: a 100 MB claimed answer costs a window, not 100 MB ---------------------------


@hooked
async def test_a_100_mb_claimed_answer_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    from tests.support.backends import SUMMARY_LINES

    path = f"{tmp_path}/big.sock"
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.rawh2",
        path,
        str(100_000_000),
        cwd=_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        assert (await server.stdout.readline()).strip() == b"ready"
        async with Client(path, timeout=20) as client:
            tracemalloc.start()
            try:
                with pytest.raises(ResourceExhaustedError, match=r"\(100000000 vs\. 16777216\)"):
                    await client.controller().status("s1")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        server.kill()
        await server.wait()
    SUMMARY_LINES.append(
        f"hostile peer: 100 MB claimed answer refused, peak {peak / 2**20:.2f} MiB"
    )
    # At most the flow-control window (4 MiB) could have been let in.
    assert peak < 8 << 20, peak


# -- keepalive: a silent peer is found out within the bound --------------------------------

_INFO = SandboxInfo("s1", RuntimeInfo(RUNTIME), "shim", None, None)
_KEEPALIVE: dict[str, Any] = {"keepalive_time": 0.3, "keepalive_timeout": 0.3}
_BOUND = 0.3 + 0.3  # keepalive_time + keepalive_timeout
_SLACK = 1.0


@hooked
async def test_a_no_deadline_call_on_a_silent_peer_fails_within_the_bound(peer: Peer) -> None:
    peer.server.deaf = True
    async with Client(peer.server.path, timeout=None, **_KEEPALIVE) as client:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="keepalive: no answer to a PING"):
            await client.controller().create(_INFO)
        # Not resent (Create is not idempotent): one bound.
        assert time.monotonic() - started < _BOUND + _SLACK
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="keepalive"):
            await client.controller().status("s1")
        # Status is idempotent: it goes once more on a new connection, so twice the bound.
        assert time.monotonic() - started < 2 * _BOUND + _SLACK
        assert len(peer.server.connections) == 3


@hooked
async def test_a_wait_on_a_silent_peer_retries_and_gets_the_real_status(
    peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandboxclient")
    peer.answer = Answer(data=frame(WAIT_EXIT_7))
    peer.server.deaf = True
    async with Client(peer.server.path, timeout=None, **_KEEPALIVE) as client:
        started = time.monotonic()
        channel = client.controller().wait("s1")
        # The first Wait failed, and was retried on a new connection.
        await asyncio.wait_for(peer.server.wait_for_connections(2), 10)
        assert time.monotonic() - started < _BOUND + _SLACK
        assert not channel.done()
        assert any("keepalive" in r.getMessage() for r in caplog.records)
        peer.server.deaf = False  # the peer answers again: the retried wait gets the status
        status = await asyncio.wait_for(channel.get(), 10)
        assert status.error is None
        assert status.returncode == 7


async def test_a_peer_that_answers_pings_keeps_a_no_deadline_call_alive(peer: Peer) -> None:
    peer.answer = Answer(end="hang")
    async with Client(peer.server.path, timeout=None, **_KEEPALIVE) as client:
        call = asyncio.ensure_future(client.controller().status("s1"))
        await asyncio.sleep(3 * _BOUND)
        assert not call.done()
        assert len(peer.server.connections) == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_no_pings_without_calls_or_when_switched_off(peer: Peer) -> None:
    peer.server.deaf = True
    async with Client(peer.server.path, timeout=1.0, keepalive_time=None) as client:
        with pytest.raises(DeadlineExceededError):
            await client.controller().create(
                SandboxInfo("s1", RuntimeInfo(RUNTIME), "x", None, None)
            )


async def test_the_schedule_spaces_pings_as_grpc_go_requires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandboxclient._wire import _keepalive

    monkeypatch.setattr(_keepalive, "PEER_MIN_INTERVAL", 0.6)
    sent: list[float] = []
    failed: list[str] = []
    keepalive: _keepalive.Keepalive

    def ping() -> None:
        sent.append(time.monotonic())
        asyncio.get_running_loop().call_soon(lambda: keepalive.heard(data=False))

    keepalive = _keepalive.Keepalive(
        interval=0.05, timeout=5.0, busy=lambda: True, ping=ping, fail=failed.append
    )
    start = time.monotonic()
    keepalive.call_started()
    await asyncio.sleep(0.9)
    gaps = [round(b - a, 2) for a, b in zip([start, *sent], sent, strict=False)]
    # BURST pings at the interval, then the peer's minimum interval between them.
    assert len(sent) == _keepalive.BURST + 1, gaps
    assert all(g < 0.2 for g in gaps[: _keepalive.BURST]), gaps
    assert gaps[_keepalive.BURST] >= 0.6, gaps
    keepalive.heard(data=True)  # the peer sent data: the burst is allowed again
    before = len(sent)
    await asyncio.sleep(0.15)
    assert len(sent) > before
    keepalive.stop()
    assert failed == []


def test_the_documented_defaults() -> None:
    from sandboxclient import _client

    assert _client.DEFAULT_KEEPALIVE_TIME == 10.0
    assert _client.DEFAULT_KEEPALIVE_TIMEOUT == 10.0
    assert _client.DEFAULT_MAX_MESSAGE_SIZE == 16 * 2**20


_PLAIN_SCRIPT = """
import asyncio, sys, tempfile, time
from sandboxclient import Client, ContainerdError
from sandboxclient._wire import _transport
from tests.support.rawh2 import Answer, RawServer, frame

assert not _transport.BATCHING
CASES = {
    "over the limit": Answer(data=frame(bytes(20 << 20)), end="trailers"),
    "cut short": Answer(data=frame(b"ab", length=10)),
    "compressed": Answer(data=frame(b"", flag=1)),
    "no trailers": Answer(data=frame(b""), end="data"),
}

async def main():
    path = tempfile.mkdtemp() + "/p.sock"
    current = {}
    async with RawServer(path, lambda request: current["answer"]) as server:
        for name, answer in CASES.items():
            current["answer"] = answer
            async with Client(path, timeout=3, keepalive_time=None) as client:
                try:
                    await client.controller().status("s1")
                    print(name, "ok")
                except ContainerdError as exc:
                    print(name, type(exc).__name__, str(exc)[:60].replace(" ", "_"))
        server.deaf = True
        async with Client(path, timeout=None, keepalive_time=0.3, keepalive_timeout=0.3) as c:
            started = time.monotonic()
            try:
                await c.controller().status("s1")
            except ContainerdError as exc:
                print("silent", type(exc).__name__, round(time.monotonic() - started, 1))

asyncio.run(main())
"""


async def test_the_plain_path_enforces_the_limit_after_the_fact_and_types_failures() -> None:
    env = dict(os.environ, SANDBOXCLIENT_PLAIN_WIRE="1")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PLAIN_SCRIPT,
        cwd=_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, err.decode()
    seen = {" ".join(line.split()[:-2]): line.split()[-2:] for line in out.decode().splitlines()}
    assert seen["over the limit"][0] == "ResourceExhaustedError"
    assert "larger_than_max" in seen["over the limit"][1]
    assert seen["cut short"][0] == "InternalError"
    assert seen["compressed"][0] == "InternalError"
    assert seen["silent"][0] == "UnavailableError"
    # grpclib's own keepalive, twice (Status is resent once), within its first PING's bound.
    assert float(seen["silent"][1]) < 2 * (0.3 + 0.3) + 1.0 + 0.6


# -- against a real containerd: its gRPC server's ping policy -----------------------------


def _channel(client: Client) -> Any:
    """The client's channel (a test's look inside)."""
    return client._connection._channel


@hooked
@pytest.mark.real
async def test_keepalive_stays_within_containerds_ping_policy(
    real_containerd: RealContainerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandboxclient._wire import _keepalive

    real = real_containerd
    real.ensure_running()
    async with Client(
        real.daemon.address,
        namespace=new_namespace(),
        sandboxer=PLUGIN_NAME,
        keepalive_time=0.2,
        keepalive_timeout=5.0,
    ) as client:
        sb = await client.new_sandbox(
            "ka1", runtime=RUNTIME, spec={"process": {"args": ["sh", "-c", "sleep 30"]}}
        )
        try:
            await sb.start()
            seen = real.sandboxer.call_count("Wait")
            channel = await sb.wait()
            await real.sandboxer.wait_for_call("Wait", seen + 1)
            protocol: Any = _channel(client)._protocol
            # A quiet Wait for well over four PING intervals: the schedule's spacing keeps
            # containerd from answering GOAWAY too_many_pings (it would after four).
            await asyncio.sleep(2.0)
            assert protocol.keepalive.pings_sent == _keepalive.BURST
            assert _channel(client)._protocol is protocol
            assert real.sandboxer.call_count("Wait") == seen + 1
            # Without the spacing containerd does cut the connection off; the Wait is
            # retried, and the channel pings half as often from then on.
            monkeypatch.setattr(_keepalive, "BURST", 100)
            async with Client(
                real.daemon.address, namespace=client.namespace, keepalive_time=0.2
            ) as eager:
                other = eager.controller(PLUGIN_NAME).wait("ka1")
                await real.sandboxer.wait_for_call("Wait", seen + 3)
                assert _channel(eager).keepalive_time == 0.4
                assert not other.done()
            await sb.stop(grace=1)
            status = await asyncio.wait_for(channel.get(), 20)
            assert status.error is None, status.error
        finally:
            await sb.shutdown()
