"""The servers keep nothing they should not: no closed connection, no crash-list request."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from sandboxclient import Client, InvalidArgumentError
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import EmptyPb, sandbox_pb
from sandboxclient.sandboxer import ProcessSandboxer, serve
from sandboxclient.testing import FakeContainerd
from tests.support.helpers import expect_error, raw_connection

pytestmark = pytest.mark.anyio


async def test_a_long_running_sandboxer_forgets_closed_connections(tmp_path: Path) -> None:
    path = f"{tmp_path}/s.sock"
    controller = ProcessSandboxer()
    async with serve(controller, path) as server:
        for _ in range(50):
            channel = Channel(path=path)
            stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: "default"})
            with pytest.raises(GRPCError):  # unknown id: NOT_FOUND, after a full round trip
                await stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="x"))
            channel.close()
        gc.collect()
        held = len(server._protocols)  # type: ignore[attr-defined]
        assert held <= 1, held
    await controller.aclose()


async def test_crash_list_requests_are_counted_and_refused() -> None:
    async with FakeContainerd() as fake, Client(fake.address) as client:
        assert fake.crash_requests == 0
        async with raw_connection(fake.address, "default", "shim") as raw:
            with pytest.raises(InvalidArgumentError, match="sandbox must be set"):
                await raw.call(raw.store.create, sandbox_pb.StoreCreateRequest())
        assert fake.crash_requests == 1
        async with client.sandbox("ok1", runtime="io.containerd.runc.v2") as sb:
            await sb.update(labels={"a": "b"})
            await sb.new_container("c1")
        assert fake.crash_requests == 1  # the public API sent none


async def test_the_sandboxer_answers_routes_it_does_not_serve_as_grpc_go_does(
    tmp_path: Path,
) -> None:
    # containerd's proxy forwards only Controller calls, but a client may dial it directly.
    path = f"{tmp_path}/s.sock"
    controller = ProcessSandboxer()
    answers = {
        "/containerd.services.sandbox.v1.Controller/Nope": (
            "unknown method Nope for service containerd.services.sandbox.v1.Controller"
        ),
        "/containerd.services.sandbox.v1.Store/Get": (
            "unknown service containerd.services.sandbox.v1.Store"
        ),
    }
    async with serve(controller, path), Channel(path=path) as channel:
        for route, message in answers.items():
            stub = channel.request(route, Cardinality.UNARY_UNARY, EmptyPb, EmptyPb, timeout=20)
            await expect_error(_unary(stub), Status.UNIMPLEMENTED, message)
    await controller.aclose()


async def _unary(stream_cm: Any) -> None:
    async with stream_cm as stream:
        await stream.send_message(EmptyPb(), end=True)
        await stream.recv_message()
