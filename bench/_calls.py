"""Unary-call throughput and overhead: the library against the same call made lower down.

Every comparison alternates its contenders round by round inside one event loop, so that a
noisy neighbour slows them all alike, and reports ratios of the per-round figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase

from sandboxclient import Client
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._plumbing._connection import Connection
from sandboxclient._wire._pb import sandbox_pb

__all__ = (
    "GET_ROUTE",
    "CallFn",
    "Sample",
    "compare",
    "measure",
    "median_ratio",
    "overhead_pairs",
    "populate",
    "raw_connection",
    "store_get_impls",
)

CallFn = Callable[[], Awaitable[object]]
GET_ROUTE = "/containerd.services.sandbox.v1.Store/Get"
CALL_TIMEOUT = 30.0
"""Every contender sends the same deadline, as the library does by default."""

# What a typical record carries: a few labels and a small runtime spec (about 560 bytes).
_LABELS = {
    "app.kubernetes.io/name": "bench",
    "app.kubernetes.io/instance": "bench-0001",
    "team": "platform",
    "tier": "backend",
}
_SPEC = {
    "ociVersion": "1.2.0",
    "process": {
        "args": ["sleep", "infinity"],
        "cwd": "/",
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    },
    # no hostname: the stand-in's process sandboxer refuses what it cannot enforce
    "annotations": {"io.kubernetes.cri.sandbox-id": "0" * 64},
}


@dataclass(frozen=True)
class Sample:
    """One contender's share of one round."""

    calls: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        """Calls per second."""
        return self.calls / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_per_call(self) -> float:
        """Client CPU seconds per call (the whole process: every thread counts)."""
        return self.cpu / self.calls if self.calls else 0.0


async def measure(call: CallFn, concurrency: int, duration: float) -> Sample:
    """``concurrency`` callers each make calls back to back for ``duration`` seconds."""
    end = time.perf_counter() + duration
    counts = [0] * concurrency

    async def caller(slot: int) -> None:
        n = 0
        while time.perf_counter() < end:
            await call()
            n += 1
        counts[slot] = n

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return Sample(sum(counts), time.perf_counter() - wall0, time.process_time() - cpu0)


async def compare(
    contenders: Mapping[str, CallFn],
    *,
    concurrency: int,
    duration: float,
    rounds: int,
    warmup: int = 20,
) -> dict[str, list[Sample]]:
    """Run every contender once per round, rotating who goes first."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            await contenders[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(await measure(contenders[name], concurrency, duration))
    return samples


def median_ratio(
    samples: Mapping[str, Sequence[Sample]], num: str, den: str, what: str = "rate"
) -> float:
    """The median over rounds of ``num``'s figure over ``den``'s in the same round."""
    ratios = []
    for a, b in zip(samples[num], samples[den], strict=True):
        x, y = getattr(a, what), getattr(b, what)
        ratios.append(x / y if y else float("inf"))
    return statistics.median(ratios)


# -- the contenders -----------------------------------------------------------------------


class _BytesCodec(CodecBase):
    """No protobuf at all: bytes in, bytes out. What is left is grpclib's own cost."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message  # type: ignore[no-any-return]

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


async def populate(client: Client, count: int, sandboxer: str) -> list[str]:
    """Create ``count`` sandboxes (not started) like the one the figures read; their ids."""
    ids = [f"bench-{i:04d}" for i in range(count)]
    existing = {info.id for info in await client.list_sandboxes()}
    for sandbox_id in ids:
        if sandbox_id in existing:
            continue
        await client.new_sandbox(
            sandbox_id,
            runtime="io.containerd.runc.v2",
            labels=_LABELS,
            spec=_SPEC,
            sandboxer=sandboxer,
        )
    return ids


def record_size(client_store_get: sandbox_pb.StoreGetResponse) -> int:
    """The encoded size of the record in a Store.Get answer."""
    assert client_store_get.sandbox is not None
    return len(bytes(client_store_get.sandbox))


STORE_GET_CONTENDERS = ("grpc.aio", "grpclib bytes", "raw stub", "library")


@contextlib.asynccontextmanager
async def store_get_impls(
    address: str,
    namespace: str,
    sandbox_id: str,
    which: Sequence[str] = STORE_GET_CONTENDERS,
) -> AsyncIterator[dict[str, CallFn]]:
    """Store.Get of one record, made four ways, each on its own connection."""
    metadata = {NAMESPACE_HEADER: namespace}
    impls: dict[str, CallFn] = {}
    async with contextlib.AsyncExitStack() as stack:
        if "grpc.aio" in which:
            from ._grpcaio import generate

            grpc: Any = importlib.import_module("grpc")  # no type information shipped

            mods = generate()
            aio_channel = grpc.aio.insecure_channel(f"unix:{address}")
            stack.push_async_callback(aio_channel.close)
            aio_stub = mods.sandbox_pb2_grpc.StoreStub(aio_channel)
            aio_request = mods.sandbox_pb2.StoreGetRequest(sandbox_id=sandbox_id)
            aio_metadata = tuple(metadata.items())

            def aio_call() -> Awaitable[object]:
                return aio_stub.Get(  # type: ignore[no-any-return]
                    aio_request, metadata=aio_metadata, timeout=CALL_TIMEOUT
                )

            impls["grpc.aio"] = aio_call
        if "grpclib bytes" in which:
            raw_channel = Channel(path=address, codec=_BytesCodec())
            stack.callback(raw_channel.close)
            payload = bytes(sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id))

            async def bytes_call() -> object:
                async with raw_channel.request(
                    GET_ROUTE,
                    Cardinality.UNARY_UNARY,
                    bytes,
                    bytes,
                    timeout=CALL_TIMEOUT,
                    metadata=metadata,
                ) as stream:
                    await stream.send_message(payload, end=True)
                    return await stream.recv_message()

            impls["grpclib bytes"] = bytes_call
        if "raw stub" in which:
            stub_channel = Channel(path=address)
            stack.callback(stub_channel.close)
            stub = sandbox_pb.StoreStub(stub_channel, metadata=metadata)

            def stub_call() -> Awaitable[object]:
                return stub.get(
                    sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id), timeout=CALL_TIMEOUT
                )

            impls["raw stub"] = stub_call
        if "library" in which:
            client = await stack.enter_async_context(
                Client(address, namespace=namespace, timeout=CALL_TIMEOUT)
            )

            def lib_call() -> Awaitable[object]:
                return client.get_sandbox(sandbox_id)

            impls["library"] = lib_call
        yield impls


@contextlib.asynccontextmanager
async def raw_connection(client: Client) -> AsyncIterator[Connection]:
    """A connection of the library's own kind (channel, codec, batching) next to ``client``.

    The raw stubs of figure 1 call through it, so the two sides differ only by what the
    library does above the stub.
    """
    connection = Connection(client.address, namespace=client.namespace, timeout=CALL_TIMEOUT)
    try:
        yield connection
    finally:
        await connection.aclose()


def overhead_pairs(
    client: Client, raw: Connection, sandbox_id: str
) -> dict[str, tuple[CallFn, CallFn]]:
    """(library, raw stub on a channel of the library's own kind) for each call of figure 1."""
    store = raw.stub(sandbox_pb.StoreStub)
    controller = raw.stub(sandbox_pb.ControllerStub)

    async def raw_load() -> object:
        got = await store.get(sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id), timeout=30.0)
        assert got.sandbox is not None
        return await controller.status(
            sandbox_pb.ControllerStatusRequest(
                sandbox_id=sandbox_id, sandboxer=got.sandbox.sandboxer
            ),
            timeout=CALL_TIMEOUT,
        )

    async def raw_labels() -> object:
        got = await store.get(
            sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id), timeout=CALL_TIMEOUT
        )
        assert got.sandbox is not None
        return dict(got.sandbox.labels)

    def raw_list() -> Awaitable[object]:
        return store.list(sandbox_pb.StoreListRequest(), timeout=CALL_TIMEOUT)

    handle: list[Any] = []

    async def lib_labels() -> object:
        if not handle:
            handle.append(await client.load_sandbox(sandbox_id))
        return await handle[0].labels()

    return {
        "load_sandbox": (lambda: client.load_sandbox(sandbox_id), raw_load),
        "sb.labels()": (lib_labels, raw_labels),
        "list_sandboxes (100)": (client.list_sandboxes, raw_list),
    }
