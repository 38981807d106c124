"""The servers against hostile clients: the stand-in and the sandboxer's socket.

A raw HTTP/2 client (``tests._rawclient``) sends what hypothesis draws to every route
(random and mutated bodies, cut-short and compressed messages, oversized claims, broken
headers) and garbage below HTTP/2. Each call gets a gRPC status (or its stream reset, or the
connection closed when the client broke HTTP/2 itself); the server keeps serving, logs no
traceback, leaves no process behind, and its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from hypothesis import given
from hypothesis import strategies as st

from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._wire import _h2proto
from sandboxclient._wire._grpcframe import HOOKED
from sandboxclient._wire._pb import (
    AnyPb,
    SandboxPb,
    SandboxRuntimePb,
    containers_pb,
    sandbox_pb,
)
from sandboxclient.testing import FakeContainerd, SandboxerProcess
from tests.support.constants import RUNTIME
from tests.support.host import loaded_argv
from tests.support.hostile_answers import fuzz_settings, hooked, key, protobuf, varint
from tests.support.mutations import mutated
from tests.support.rawclient import RawClient, RawReply, request_headers
from tests.support.rawh2 import frame

pytestmark = pytest.mark.anyio
_SETTINGS = fuzz_settings(40)
_STORE = "/containerd.services.sandbox.v1.Store/"
_CONTROLLER = "/containerd.services.sandbox.v1.Controller/"
_CONTAINERS = "/containerd.services.containers.v1.Containers/"
_TOKEN = f"hostile-{uuid.uuid4().hex[:10]}"
_SHIM = "shim"


def _spec(*args: str) -> AnyPb:
    body = {"ociVersion": "1.2.0", "process": {"args": list(args)}}
    return AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(body).encode())


def _sandbox(sandbox_id: str) -> SandboxPb:
    return SandboxPb(
        sandbox_id=sandbox_id,
        runtime=SandboxRuntimePb(name=RUNTIME),
        spec=_spec("sh", "-c", f"sleep 300 # {_TOKEN}"),
        sandboxer="shim",
    )


# Valid requests, to mutate: what the hostile client starts from.
SEEDS: dict[str, bytes] = {
    _STORE + "Create": bytes(sandbox_pb.StoreCreateRequest(sandbox=_sandbox("h1"))),
    _STORE + "Get": bytes(sandbox_pb.StoreGetRequest(sandbox_id="h1")),
    _STORE + "List": bytes(sandbox_pb.StoreListRequest(filters=["labels.a==b"])),
    _STORE + "Update": bytes(
        sandbox_pb.StoreUpdateRequest(sandbox=_sandbox("h1"), fields=["labels"])
    ),
    _STORE + "Delete": bytes(sandbox_pb.StoreDeleteRequest(sandbox_id="h1")),
    _CONTROLLER + "Create": bytes(
        sandbox_pb.ControllerCreateRequest(
            sandbox_id="h1", sandbox=_sandbox("h1"), sandboxer="shim"
        )
    ),
    _CONTROLLER + "Start": bytes(
        sandbox_pb.ControllerStartRequest(sandbox_id="h1", sandboxer="shim")
    ),
    _CONTROLLER + "Status": bytes(
        sandbox_pb.ControllerStatusRequest(sandbox_id="h1", verbose=True, sandboxer="shim")
    ),
    _CONTROLLER + "Stop": bytes(
        sandbox_pb.ControllerStopRequest(sandbox_id="h1", timeout_secs=1, sandboxer="shim")
    ),
    _CONTROLLER + "Metrics": bytes(sandbox_pb.ControllerMetricsRequest(sandbox_id="h1")),
    _CONTROLLER + "Platform": bytes(sandbox_pb.ControllerPlatformRequest(sandbox_id="h1")),
    _CONTROLLER + "Update": bytes(
        sandbox_pb.ControllerUpdateRequest(
            sandbox_id="h1", sandbox=_sandbox("h1"), fields=["labels"]
        )
    ),
    _CONTROLLER + "Shutdown": bytes(sandbox_pb.ControllerShutdownRequest(sandbox_id="h1")),
    _CONTAINERS + "Create": bytes(
        containers_pb.CreateContainerRequest(
            container=containers_pb.Container(
                id="c1", runtime=containers_pb.ContainerRuntime(name=RUNTIME)
            )
        )
    ),
    _CONTAINERS + "Get": bytes(containers_pb.GetContainerRequest(id="c1")),
    _CONTAINERS + "List": bytes(containers_pb.ListContainersRequest(filters=["id==c1"])),
    _CONTAINERS + "Delete": bytes(containers_pb.DeleteContainerRequest(id="c1")),
}
_ROUTES = sorted(SEEDS)
_NO_NS = request_headers(_STORE + "Get", None)
_NOBODY_GET = bytes(sandbox_pb.StoreGetRequest(sandbox_id="nobody"))
_NOBODY_STATUS = bytes(sandbox_pb.ControllerStatusRequest(sandbox_id="nobody"))


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[str, str]] | None, bool]:
    """(route, DATA bytes, headers or None for well-formed ones, whether the stream ends)."""
    route = draw(st.sampled_from([*_ROUTES, "/x.Y/Z", "/", "bogus"]))
    seed = SEEDS.get(route, b"")
    body = draw(
        st.one_of(
            st.just(frame(seed)),
            mutated((seed,)).map(frame),
            protobuf().map(frame),
            st.binary(max_size=48).map(frame),
            st.binary(max_size=48),
            st.builds(
                lambda flag, length, tail: struct.pack(">BI", flag, length) + tail,
                st.integers(0, 255),
                st.integers(0, 2**32 - 1),
                st.binary(max_size=16),
            ),
            st.just(frame(seed) + frame(seed)),
            st.just(frame(key(1, 2) + varint(3) + b"\xc3\x28\xff")),
            st.just(b""),
        )
    )
    headers = None
    variant = draw(st.sampled_from(["ok", "ok", "ok", "no-ns", "bad-ns", "gzip", "bin", "bare"]))
    if variant != "ok":
        headers = request_headers(route, None if variant == "no-ns" else "default")
        if variant == "bad-ns":
            headers.append(("containerd-namespace", "Bad_NS!"))
        elif variant == "gzip":
            headers.append(("grpc-encoding", "gzip"))
        elif variant == "bin":
            headers.append(("x-trace-bin", draw(st.sampled_from(["a", "!!!!", "YQ"]))))
        elif variant == "bare":
            headers = [(":method", "POST"), ("content-type", "application/grpc")]
    return route, body, headers, draw(st.booleans()) or not body


def _typed(reply: RawReply) -> bool:
    """A gRPC status of the table, a reset stream, or a closed connection."""
    if reply.status is not None:
        return reply.status in {s.value for s in Status}
    return reply.reset_code is not None or reply.closed


async def _healthy(path: str) -> None:
    """The stand-in still answers a well-formed call as it should."""
    async with RawClient(path) as raw:
        reply = await raw.call(_STORE + "Get", frame(_NOBODY_GET))
        assert reply.status == Status.NOT_FOUND.value, reply


async def _sandboxer_healthy(sandboxer: SandboxerProcess) -> None:
    """The sandboxer still answers a well-formed call as it should."""
    async with RawClient(sandboxer.socket_path) as raw:
        reply = await raw.call(_CONTROLLER + "Status", frame(_NOBODY_STATUS))
        assert reply.status == Status.NOT_FOUND.value, reply


# -- the stand-in, in process ------------------------------------------------------------


@contextlib.contextmanager
def _no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    caplog.clear()
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.fixture
async def bare_fake() -> AsyncIterator[FakeContainerd]:
    """A stand-in with no sandboxer of its own, checked for processes left behind."""
    async with FakeContainerd() as server:
        yield server
    # Its controller runs sandboxes as processes: what hostile calls started went with it.
    leaked = _alive(set(_marked(_TOKEN)))
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leaked, f"processes left behind: {leaked}"


@hooked
@_SETTINGS
@given(request=hostile_requests())
async def test_the_stand_in_answers_every_hostile_request_with_a_status(
    bare_fake: FakeContainerd,
    caplog: pytest.LogCaptureFixture,
    request: tuple[str, bytes, list[tuple[str, str]] | None, bool],
) -> None:
    route, body, headers, end = request
    with _no_error_logs(caplog):
        async with RawClient(bare_fake.address) as raw:
            future = raw.start(route, body, headers=headers, end=end)
            if not end:  # a request that never ends: the client gives up on it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), 0.2)
                if not future.done():
                    return
            reply = await asyncio.wait_for(future, 10)
        assert _typed(reply), reply
        await _healthy(bare_fake.address)


@pytest.mark.parametrize(
    ("name", "body", "headers", "status"),
    [
        ("no message", b"", None, Status.INTERNAL),
        ("cut-short message", frame(b"\x0a\x02h1", length=40), None, Status.INTERNAL),
        ("cut-short prefix", b"\x00\x00", None, Status.INTERNAL),
        ("compressed, no encoding", frame(b"", flag=1), None, Status.INTERNAL),
        (
            "compressed, gzip",
            frame(b"", flag=1),
            [*request_headers(_STORE + "Get"), ("grpc-encoding", "gzip")],
            Status.UNIMPLEMENTED,
        ),
        ("unknown flag", frame(b"", flag=9), None, Status.INTERNAL),
        ("4 GiB claimed", frame(b"", length=2**32 - 1), None, Status.RESOURCE_EXHAUSTED),
        ("wrong wire type", frame(key(1, 0) + varint(1)), None, Status.INTERNAL),
        ("invalid UTF-8", frame(key(1, 2) + varint(2) + b"\xc3\x28"), None, Status.INTERNAL),
        (
            "no namespace",
            frame(b""),
            request_headers(_STORE + "Get", None),
            Status.FAILED_PRECONDITION,
        ),
    ],
)
@hooked
async def test_each_hostile_request_gets_the_status_containerd_gives(
    bare_fake: FakeContainerd,
    caplog: pytest.LogCaptureFixture,
    name: str,
    body: bytes,
    headers: list[tuple[str, str]] | None,
    status: Status,
) -> None:
    with _no_error_logs(caplog):
        async with RawClient(bare_fake.address) as raw:
            reply = await raw.call(_STORE + "Get", body, headers=headers)
    assert reply.status == status.value, (name, reply)


@hooked
async def test_a_request_over_16_mib_is_refused_before_it_is_read(
    bare_fake: FakeContainerd,
) -> None:
    from tests.support.backends import SUMMARY_LINES

    # The prefix claims 100 MB; 32 MiB of it really follows (made before the count).
    body = frame(bytes(32 << 20), length=100_000_000)
    async with RawClient(bare_fake.address) as raw:
        tracemalloc.start()
        try:
            reply = await raw.call(_STORE + "Get", body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert reply.status == Status.RESOURCE_EXHAUSTED.value, reply
    assert reply.message == "grpc: received message larger than max (100000000 vs. 16777216)"
    # What the server let in (and the raw client's frames in flight): about a window.
    assert peak < 8 << 20, peak
    SUMMARY_LINES.append(
        f"hostile requests: a 100 MB request refused by the stand-in, peak {peak / 2**20:.2f} MiB"
    )
    # Just under the limit is read and decoded (and answered for what it asks).
    async with RawClient(bare_fake.address) as raw:
        big = bytes(sandbox_pb.StoreGetRequest(sandbox_id="x" * ((16 << 20) - 8)))
        reply = await raw.call(_STORE + "Get", frame(big))
    assert reply.status == Status.NOT_FOUND.value, reply


@hooked
async def test_what_one_connection_reads_at_once_is_bounded(bare_fake: FakeContainerd) -> None:
    from sandboxclient._wire._grpcframe import REQUEST_BYTES_PER_CONNECTION

    size = 15 << 20
    body = bytes(sandbox_pb.StoreGetRequest(sandbox_id="x" * (size - 5)))
    assert len(body) == size
    tracemalloc.start()
    try:
        async with RawClient(bare_fake.address) as raw:
            # Five requests announce 15 MiB each before any of it is sent: four fit.
            calls = []
            for _ in range(5):
                calls.append(
                    (raw.start(_STORE + "Get", frame(body)[:5], end=False), raw.last_stream)
                )
            refused = await asyncio.wait_for(calls[-1][0], 10)
            assert refused.status == Status.RESOURCE_EXHAUSTED.value, refused
            assert refused.message is not None
            assert "in flight on one connection" in refused.message
            for _, stream_id in calls[:-1]:
                raw.send(stream_id, body)
            replies = await asyncio.wait_for(asyncio.gather(*(f for f, _ in calls[:-1])), 30)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.status for r in replies] == [Status.NOT_FOUND.value] * 4
    assert 4 * size <= REQUEST_BYTES_PER_CONNECTION < 5 * size
    # The four bodies on both sides of the socket, and their decoding: bounded by the budget.
    assert peak < 4 * REQUEST_BYTES_PER_CONNECTION, peak


@hooked
async def test_concurrent_streams_are_bounded_per_connection(bare_fake: FakeContainerd) -> None:
    bare_fake.stall = True
    request = frame(SEEDS[_STORE + "Get"])
    async with RawClient(bare_fake.address) as raw:
        await raw.settled()
        assert raw.max_streams == _h2proto.SERVER_MAX_STREAMS == 1000
        pending = [raw.start(_STORE + "Get", request) for _ in range(raw.max_streams)]
        await bare_fake.wait_for_call("Store/Get", raw.max_streams)
        raw.ignore_stream_limit()
        extra = raw.start(_STORE + "Get", request)
        # h2 takes a client that opens more than it was allowed for a broken one.
        reply = await asyncio.wait_for(extra, 10)
        assert reply.closed
        await asyncio.wait_for(raw.closed.wait(), 10)
        assert all(f.done() for f in pending)
    bare_fake.stall = False
    await _healthy(bare_fake.address)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00" * 64,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 40,
        # A valid preface, then a HEADERS frame whose block does not decode.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff",
        # A DATA frame on a stream never opened, then a giant frame length.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x02\x00\x00\x00\x00\x00\x07ab\xff\xff\xff\x00\x00\x00\x00\x00\x01",
    ],
    ids=["http1", "zeros", "bad frames", "bad hpack", "data on no stream"],
)
@hooked
async def test_garbage_below_http2_closes_that_connection_only(
    bare_fake: FakeContainerd, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    with _no_error_logs(caplog):
        async with RawClient(bare_fake.address) as other:
            reader, writer = await asyncio.open_unix_connection(bare_fake.address)
            writer.write(garbage)
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.read(), 10)  # to its end: the server closed it
            writer.close()
            reply = await other.call(_STORE + "Get", frame(_NOBODY_GET))
            assert reply.status == Status.NOT_FOUND.value


@hooked
async def test_a_peer_that_makes_the_server_answer_and_never_reads_is_cut_off(
    bare_fake: FakeContainerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_h2proto, "MAX_UNSENT", 256 << 10)
    reader, writer = await asyncio.open_unix_connection(bare_fake.address)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
    writer.write(preface)
    closed = False
    try:
        for _ in range(400):  # 400 x 1000 PINGs, 6.8 MB of acknowledgements owed
            writer.write(ping * 1000)
            await asyncio.wait_for(writer.drain(), 10)
        async with asyncio.timeout(20):  # then read: the server has closed, or it is a fail
            while await reader.read(1 << 20):
                pass
        closed = True
    except ConnectionError:  # the server dropped the connection, unsent acknowledgements too
        closed = True
    writer.close()
    assert closed
    await _healthy(bare_fake.address)


async def test_the_server_codec_refuses_and_encodes_as_containerd() -> None:
    from grpclib.exceptions import GRPCError

    from sandboxclient._serve._server import RequestCodec

    codec = RequestCodec(limit=8)
    with pytest.raises(GRPCError) as info:
        codec.decode(b"\x0a\x02\xff\xfe", sandbox_pb.StoreGetRequest)
    assert info.value.status is Status.INTERNAL
    assert info.value.message is not None
    assert info.value.message.startswith("grpc: error unmarshalling request: ")
    with pytest.raises(GRPCError) as info:
        codec.decode(bytes(9), sandbox_pb.StoreGetRequest)
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    reply = sandbox_pb.StoreGetResponse(sandbox=_sandbox("x"))
    assert codec.encode(reply, sandbox_pb.StoreGetResponse) == bytes(reply)


# -- the sandboxer, as its own process ------------------------------------------------------


def _proc(entry: str, name: str) -> bytes:
    try:
        with open(f"/proc/{entry}/{name}", "rb") as f:
            return f.read()
    except OSError:  # gone meanwhile
        return b""


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        stat = _proc(entry, "stat") if entry.isdigit() else b""
        if stat:
            parents[int(entry)] = int(stat.rsplit(b")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _marked(*marks: str) -> list[int]:
    """The processes whose command line holds one of ``marks``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            line = _proc(entry, "cmdline").replace(b"\0", b" ").decode(errors="replace")
            if any(mark in line for mark in marks):
                found.append(int(entry))
    return found


def _started_pid(reply: RawReply) -> int:
    """The pid in a Controller Start's answer (one message, after its 5-byte frame header)."""
    return sandbox_pb.ControllerStartResponse().parse(reply.data[5:]).pid


def _runs_marked(pid: int, mark: str) -> bool:
    """Whether ``pid`` runs with ``mark`` in its command line (read once it is loaded)."""
    argv = loaded_argv(pid, lambda argv: any(mark.encode() in a for a in argv))
    return any(mark.encode() in a for a in argv) and pid in _marked(mark)


def _alive(pids: set[int], grace: float = 5.0) -> list[int]:
    """Those of ``pids`` still running after ``grace`` seconds (a zombie is not running)."""
    deadline = time.monotonic() + grace
    while True:
        running = [p for p in pids if _proc(str(p), "stat").rsplit(b")", 1)[-1][1:2] not in b"ZX"]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def _rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture
def sandboxer(tmp_path: Path) -> Iterator[SandboxerProcess]:
    """``python -m sandboxclient.sandboxer --isolation none``: its sandboxes are processes."""
    yield from _sandboxer(tmp_path, "none")


@pytest.fixture(params=["none", "container"])
def any_sandboxer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SandboxerProcess]:
    """The sandboxer with either isolation (the default, containers, with no containerd to
    reach: what it refuses before it needs one is the same)."""
    yield from _sandboxer(tmp_path, request.param)


def _sandboxer(tmp_path: Path, isolation: str) -> Iterator[SandboxerProcess]:
    process = SandboxerProcess(
        f"{tmp_path}/sbx.sock", isolation=isolation, containerd=f"{tmp_path}/nothing.sock"
    )
    process.start()
    try:
        yield process
    finally:
        assert process.proc is not None
        tree = _descendants(process.proc.pid)
        process.stop()
        leaked = _alive(tree | set(_marked(_TOKEN, str(tmp_path))))
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leaked, f"processes left behind: {leaked}"


@_SETTINGS
@given(request=hostile_requests())
async def test_the_sandboxer_answers_every_hostile_request_and_survives(
    any_sandboxer: SandboxerProcess,
    request: tuple[str, bytes, list[tuple[str, str]] | None, bool],
) -> None:
    sandboxer = any_sandboxer
    route, body, headers, end = request
    if route.startswith((_STORE, _CONTAINERS)):
        route = _CONTROLLER + route.rsplit("/", 1)[1]  # the sandboxer serves Controller only
    # grpclib's own server (the plain path) leaves a call whose headers it cannot read
    # unanswered: the hooks reset it.
    unreadable = not HOOKED and headers is not None and _unreadable(headers)
    async with RawClient(sandboxer.socket_path) as raw:
        future = raw.start(route, body, headers=headers, end=end)
        if not end or unreadable:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), 0.2)
            if not future.done():
                return
        reply = await asyncio.wait_for(future, 10)
    assert _typed(reply), reply
    assert sandboxer.alive()
    await _sandboxer_healthy(sandboxer)


def _unreadable(headers: list[tuple[str, str]]) -> bool:
    names = {name for name, _ in headers}
    return any(name.endswith("-bin") for name in names) or ":path" not in names


@hooked
async def test_the_sandboxer_memory_stays_bounded_under_oversized_requests(
    sandboxer: SandboxerProcess,
) -> None:
    from tests.support.backends import SUMMARY_LINES

    assert sandboxer.proc is not None
    pid = sandboxer.proc.pid
    await _sandboxer_healthy(sandboxer)
    before, peak_before = _rss(pid), _rss(pid, "VmHWM")
    body = frame(bytes(8 << 20), length=100_000_000)
    for _ in range(3):
        async with RawClient(sandboxer.socket_path) as raw:
            replies = await asyncio.gather(
                *(raw.call(_CONTROLLER + "Status", body) for _ in range(4))
            )
        assert all(r.status == Status.RESOURCE_EXHAUSTED.value for r in replies), replies
    after, peak_after = _rss(pid), _rss(pid, "VmHWM")
    SUMMARY_LINES.append(
        f"hostile requests: sandboxer RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB, "
        f"peak {peak_before / 2**20:.1f} -> {peak_after / 2**20:.1f} MiB after 12 x 100 MB claims"
    )
    assert peak_after - peak_before < 32 << 20


async def test_a_sandbox_a_hostile_client_started_goes_with_the_sandboxer(
    sandboxer: SandboxerProcess,
) -> None:
    async with RawClient(sandboxer.socket_path) as raw:
        created = await raw.call(_CONTROLLER + "Create", frame(SEEDS[_CONTROLLER + "Create"]))
        assert created.status == 0, created
        started = await raw.call(_CONTROLLER + "Start", frame(SEEDS[_CONTROLLER + "Start"]))
        assert started.status == 0, started
    assert _runs_marked(_started_pid(started), _TOKEN)  # the fixture checks it goes with it


async def test_a_sandbox_a_hostile_client_started_goes_with_the_stand_in(
    bare_fake: FakeContainerd,
) -> None:
    async with RawClient(bare_fake.address) as raw:
        for route in (_STORE + "Create", _CONTROLLER + "Create", _CONTROLLER + "Start"):
            reply = await raw.call(route, frame(SEEDS[route]))
            assert reply.status == 0, (route, reply)
    assert _runs_marked(_started_pid(reply), _TOKEN)  # the fixture checks it goes with it
