"""The stand-in's Streaming service: streams a client opens for a transfer to name.

A client opens a stream with a ``StreamInit`` naming its id; the stand-in registers it in the
call's namespace and acknowledges it (an ``Any`` of ``google.protobuf.Empty``, as
containerd). A Transfer call then takes it by id (:meth:`StreamTable.take`): each stream
serves one transfer, and its call ends when the transfer is done with it
(:meth:`OpenStream.finish`) or the client goes. Byte streams move ``Data`` chunks of at
most 32 KiB within ``WindowUpdate`` grants, as containerd's; what a client sends beyond a
grant, or a value that is neither, is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from .._facts._golang import go_quote
from .._serve._refusals import invalid_argument
from .._serve._server import current_namespace
from .._wire import _pb
from .._wire._images import STREAM_INIT_TYPE_URL, data_any, unpack_payload, window_any
from .._wire._pb import AnyPb
from ._services import Binder

__all__ = ("MAX_CHUNK", "WINDOW", "OpenStream", "StreamTable", "StreamingService")

ROUTE: Final = "/containerd.services.streaming.v1.Streaming/Stream"
MAX_CHUNK: Final = 32 * 1024
WINDOW: Final = 2 * MAX_CHUNK
_MAX_STREAMS: Final = 256
_MAX_ID: Final = 256


class OpenStream:
    """A registered stream: what a transfer reads from and writes to."""

    def __init__(self, stream_id: str, raw: Stream[Any, Any]) -> None:
        self.id = stream_id
        self._raw = raw
        self._finished = asyncio.Event()
        self.taken = False

    async def recv(self) -> AnyPb | None:
        """The client's next value, None once it has ended its side."""
        value: AnyPb | None = await self._raw.recv_message()
        return value

    async def send(self, value: AnyPb) -> None:
        """Send one value to the client."""
        await self._raw.send_message(value)

    def finish(self) -> None:
        """The transfer is done with the stream: its call ends (status OK)."""
        self._finished.set()

    async def finished(self) -> None:
        """Return once :meth:`finish` was called."""
        await self._finished.wait()

    async def read_bytes(self, sink: Callable[[bytes], Awaitable[None]], limit: int) -> int:
        """Grant windows and hand each ``Data`` chunk to ``sink`` until the client ends its
        side; returns the bytes read. More than ``limit`` bytes, or a chunk past the grant,
        is refused."""
        window = total = 0
        while True:
            if window < WINDOW:
                await self.send(window_any(WINDOW))
                window += WINDOW
            value = await self.recv()
            if value is None:
                return total
            try:
                chunk = unpack_payload(value)
            except Exception as exc:
                raise invalid_argument(f"stream {self.id}: {exc}") from None
            if not isinstance(chunk, bytes):
                continue  # as containerd's reader, what it does not know is skipped
            if len(chunk) > window:
                raise invalid_argument(
                    f"stream {self.id}: {len(chunk)} bytes sent with {window} granted"
                )
            window -= len(chunk)
            total += len(chunk)
            if total > limit:
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED,
                    f"stream {self.id}: more than the stand-in's {limit} bytes",
                )
            await sink(chunk)

    async def write_bytes(self, chunks: Callable[[int], Awaitable[bytes]]) -> int:
        """Send what ``await chunks(n)`` gives (at most ``n`` bytes, empty at the end) as ``Data``
        within the client's grants; returns the bytes sent."""
        window = sent = 0
        while True:
            while window <= 0:
                value = await self.recv()
                if value is None:
                    raise GRPCError(
                        Status.CANCELLED, f"stream {self.id}: the client stopped reading"
                    )
                grant = unpack_payload(value)
                if isinstance(grant, int) and not isinstance(grant, bool) and grant > 0:
                    window += grant
            chunk = await chunks(min(window, MAX_CHUNK))
            if not chunk:
                return sent
            await self.send(data_any(chunk))
            window -= len(chunk)
            sent += len(chunk)


class StreamTable:
    """The registered streams, by namespace and id."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str], OpenStream] = {}

    def register(self, namespace: str, stream: OpenStream) -> None:
        """Register ``stream``; ALREADY_EXISTS if its id is taken."""
        key = (namespace, stream.id)
        if key in self._streams:
            # containerd returns its bare error from the handler: gRPC carries it as UNKNOWN.
            raise GRPCError(Status.UNKNOWN, "already exists")
        if len(self._streams) >= _MAX_STREAMS:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED, f"the stand-in keeps at most {_MAX_STREAMS} streams"
            )
        self._streams[key] = stream

    def unregister(self, namespace: str, stream: OpenStream) -> None:
        """Forget ``stream``."""
        if self._streams.get((namespace, stream.id)) is stream:
            del self._streams[(namespace, stream.id)]

    def take(self, namespace: str, stream_id: str) -> OpenStream:
        """The stream ``stream_id`` for one transfer; NOT_FOUND if there is none free."""
        found = self._streams.get((namespace, stream_id))
        if found is None or found.taken:
            raise GRPCError(Status.NOT_FOUND, "not found")  # containerd's bare ErrNotFound
        found.taken = True
        return found


class StreamingService:
    """containerd's Streaming service over a :class:`StreamTable`."""

    def __init__(self, streams: StreamTable, bind: Binder) -> None:
        self._streams = streams
        self._bind = bind

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind({ROUTE: Handler(self._stream, Cardinality.STREAM_STREAM, AnyPb, AnyPb)})

    async def _stream(self, raw: Stream[Any, Any]) -> None:
        namespace = current_namespace()
        first: AnyPb | None = await raw.recv_message()
        if first is None:
            return
        if first.type_url.removeprefix("type.googleapis.com/") != STREAM_INIT_TYPE_URL:
            raise invalid_argument(
                f"first message of a stream is {go_quote(first.type_url)}, not a StreamInit"
            )
        try:
            stream_id = _pb.streaming_pb.StreamInit.parse(first.value).id
        except Exception:
            raise invalid_argument("undecodable StreamInit") from None
        if not stream_id or len(stream_id) > _MAX_ID:
            raise invalid_argument("a stream id of 1 to 256 characters is needed")
        stream = OpenStream(stream_id, raw)
        self._streams.register(namespace, stream)
        try:
            await raw.send_message(AnyPb(type_url="type.googleapis.com/google.protobuf.Empty"))
            await stream.finished()
        finally:
            self._streams.unregister(namespace, stream)
