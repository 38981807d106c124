"""A server that ends a bidirectional call while the client still sends on it.

containerd's Streaming service ends a stream when its side is done (a transfer's progress,
credential or export stream); grpc-go then resets the stream with NO_ERROR because the
client had not ended its side. grpc-go's client takes the answer as complete, and so does
the hardened protocol: every message sent before the end is read, then the end. grpclib's own
protocol (the plain path) takes the reset for a failure, which is why the client ends its side
of a stream it sends nothing on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from h2.errors import ErrorCodes

from sandboxclient import UnavailableError
from sandboxclient._imageops._streaming import Stream, StreamFactory
from sandboxclient._plumbing._connection import Connection
from sandboxclient._wire._grpcframe import HOOKED
from sandboxclient._wire._images import data_any, unpack_payload
from sandboxclient._wire._pb import AnyPb
from tests.support.rawh2 import Answer, RawRequest, RawServer, frame

pytestmark = pytest.mark.anyio

ACK = bytes(AnyPb(type_url="google.protobuf.Empty"))


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RawServer]:
    def answer(request: RawRequest) -> Answer:
        body = ACK, bytes(data_any(b"first")), bytes(data_any(b"second"))
        return Answer(data=b"".join(frame(b) for b in body), reset_after=ErrorCodes.NO_ERROR)

    raw = RawServer(f"{tmp_path}/s.sock", answer)
    raw.eager = True
    async with raw:
        yield raw


async def read_all(connection: Connection) -> list[bytes | int | None]:
    """Every message of a stream opened on ``connection``, the ack aside."""
    async with StreamFactory(connection).open("test") as stream:
        return [unpack_payload(value) async for value in _values(stream)]


async def _values(stream: Stream) -> AsyncIterator[AnyPb]:
    while (value := await stream.recv()) is not None:
        yield value


async def test_an_answer_ended_then_reset_with_no_error_is_read_whole(server: RawServer) -> None:
    connection = Connection(server.path, namespace="default", timeout=5)
    try:
        if HOOKED:
            assert await read_all(connection) == [b"first", b"second"]
        else:
            # grpclib's own protocol: the reset fails the call, whatever came before it.
            with pytest.raises(UnavailableError, match="error_code: 0"):
                await read_all(connection)
    finally:
        await connection.aclose()
    assert server.requests[0].path == "/containerd.services.streaming.v1.Streaming/Stream"
