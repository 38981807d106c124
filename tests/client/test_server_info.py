"""What the daemon says of itself (version, sandboxers, introspection) and of routes it does
not serve, on the stand-in and on a real containerd 2.1.9 with the Python sandboxer: what the
stand-in answers is checked against what the daemon does, field for field where both can say.
"""

from __future__ import annotations

import os

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status

from sandboxclient import Client, UnimplementedError
from sandboxclient._facts._golang import go_arch
from sandboxclient._wire._pb import AnyPb, EmptyPb, introspection_pb
from sandboxclient.testing import FAKE_VERSION
from tests.support.backends import PLUGIN_NAME, Backend, RealContainerd, new_namespace
from tests.support.helpers import expect_error, raw_connection

pytestmark = pytest.mark.anyio

SANDBOX_CONTROLLER = "io.containerd.sandbox.controller.v1"


# -- Version and Introspection ---------------------------------------------------------------


async def test_version_and_sandboxers(backend: Backend, client: Client) -> None:
    got = await client.version()
    sandboxers = {s.name: s for s in await client.sandboxers()}
    if backend.daemon is not None:
        assert got.parsed == backend.daemon.version
        assert {"shim", "podsandbox", PLUGIN_NAME} <= set(sandboxers)
    else:
        assert (got.version, got.revision) == (FAKE_VERSION, "")
        assert set(sandboxers) == {"shim", PLUGIN_NAME}
        assert all(s.type == SANDBOX_CONTROLLER for s in sandboxers.values())
    mine = sandboxers[backend.sandboxer]
    arch, variant = go_arch()
    assert (mine.type, mine.ready, mine.error) == (SANDBOX_CONTROLLER, True, "")
    assert [(p.os, p.architecture, p.variant) for p in mine.platforms] == [("linux", arch, variant)]


async def test_introspection_server_plugins_and_plugin_info(
    backend: Backend, channel: Channel
) -> None:
    stub = introspection_pb.IntrospectionStub(channel, timeout=20)
    server = await stub.server(EmptyPb())
    assert server.pid == (backend.daemon.pid if backend.daemon is not None else os.getpid())
    assert server.pidns == os.stat(f"/proc/{server.pid}/ns/pid").st_ino
    assert len(server.uuid) == 36
    assert server.uuid == (await stub.server(EmptyPb())).uuid
    found = await stub.plugins(introspection_pb.PluginsRequest(filters=["id==events"]))
    assert [(p.type, p.id) for p in found.plugins] == [("io.containerd.grpc.v1", "events")]
    await expect_error(
        stub.plugins(introspection_pb.PluginsRequest(filters=["type=="])),
        Status.INVALID_ARGUMENT,
        "invalid argument: filters: parse error: [type==]: expected value or quoted: "
        "invalid argument",
    )
    info = await stub.plugin_info(
        introspection_pb.PluginInfoRequest(type="io.containerd.grpc.v1", id="events")
    )
    assert info.plugin is not None
    assert (info.plugin.type, info.plugin.id, info.extra) == (
        "io.containerd.grpc.v1",
        "events",
        None,
    )
    await expect_error(
        stub.plugin_info(introspection_pb.PluginInfoRequest(type="a", id="b")),
        Status.NOT_FOUND,
        "plugin a.b not found: not found",
    )
    await expect_error(
        stub.plugin_info(
            introspection_pb.PluginInfoRequest(
                type="io.containerd.grpc.v1", id="events", options=AnyPb(type_url="x.Y")
            )
        ),
        Status.UNKNOWN,
        "failed to unmarshal plugin info Options: type with url x.Y: not found",
    )
    await expect_error(
        stub.plugin_info(
            introspection_pb.PluginInfoRequest(
                type=SANDBOX_CONTROLLER,
                id=backend.sandboxer,
                options=AnyPb(type_url="google.protobuf.Empty"),
            )
        ),
        Status.UNIMPLEMENTED,
        "plugin does not provided extra information: not implemented",
    )


@pytest.mark.real
async def test_version_and_sandboxers_agree_with_ctr(real: RealContainerd) -> None:
    async with Client(real.daemon.address, namespace=new_namespace(), timeout=30) as client:
        await _agree_with_ctr(real, client)


async def _agree_with_ctr(real: RealContainerd, client: Client) -> None:
    got = await client.version()
    shown = real.daemon.ctr("version").stdout
    server = shown[shown.index("Server:") :]
    assert f"Version:  {got.version}" in server
    listed = real.daemon.ctr("plugins", "ls").stdout.splitlines()
    expected = {
        line.split()[1]
        for line in listed
        if line.split()[:1]
        in (["io.containerd.sandbox.controller.v1"], ["io.containerd.podsandbox.controller.v1"])
    }
    sandboxers = await client.sandboxers()
    assert {s.name for s in sandboxers} == expected
    assert PLUGIN_NAME in expected
    assert all(s.ready for s in sandboxers)


# -- routes nobody serves ----------------------------------------------------------------------


async def _call(channel: Channel, path: str, cardinality: Cardinality) -> None:
    async with channel.request(path, cardinality, EmptyPb, EmptyPb, timeout=20) as stream:
        await stream.send_message(EmptyPb(), end=True)
        await stream.recv_message()


@pytest.mark.parametrize("cardinality", [Cardinality.UNARY_UNARY, Cardinality.STREAM_STREAM])
async def test_unknown_services_and_methods_are_unimplemented_as_grpc_go_says(
    channel: Channel, cardinality: Cardinality
) -> None:
    answers = {
        "/containerd.services.nope.v1.Nope/Get": "unknown service containerd.services.nope.v1.Nope",
        "/containerd.services.events.v1.Events/Nope": (
            "unknown method Nope for service containerd.services.events.v1.Events"
        ),
        "/containerd.services.events.v1.Events/Subscribe/x": (
            "unknown service containerd.services.events.v1.Events/Subscribe"
        ),
        "nopath": 'malformed method name: "nopath"',
        "/": 'malformed method name: "/"',
        "//b": "unknown service ",
    }
    for path, message in answers.items():
        await expect_error(_call(channel, path, cardinality), Status.UNIMPLEMENTED, message)


async def test_the_client_takes_an_unknown_route_for_unimplemented(backend: Backend) -> None:
    async with raw_connection(backend.address, backend.namespace, backend.sandboxer) as raw:
        route = raw.connection.route("/containerd.services.events.v1.Events/Nope", EmptyPb)
        with pytest.raises(UnimplementedError) as info:
            await raw.call(route, EmptyPb())
    assert (
        info.value.message == "unknown method Nope for service containerd.services.events.v1.Events"
    )
