"""The stand-in's events and self-description where only it can be looked into.

What a real containerd also does is checked on both backends in ``test_events``; here is
what only the stand-in shows or decides: how far a subscriber may fall behind before it is
dropped (containerd queues for it without bound), events made up by a test, a request that
would crash the daemon, the plugins it lists, and the order of a quick exit's events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from sandboxclient import AnyValue, Client, EventStream, InvalidArgumentError
from sandboxclient._facts._clock import utcnow
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import AnyPb, EnvelopePb, events_pb, introspection_pb
from sandboxclient._wire._pb import event_payloads_pb as ev
from sandboxclient.events import Event, EventsLagged, EventsReconnected, TaskOOM
from sandboxclient.testing import FakeContainerd
from sandboxclient.testing._exchange import Exchange
from sandboxclient.testing._taskevents import TaskEvents
from sandboxclient.testing._taskstate import Proc, Task
from tests.support.constants import NS
from tests.support.helpers import expect_error, raw_connection, until

pytestmark = pytest.mark.anyio
_WINDOW = 65536  # the smallest HTTP/2 window a client may offer
_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"


@pytest.fixture
async def backlog_fake() -> AsyncIterator[FakeContainerd]:
    """A stand-in with two sandboxers whose subscribers may fall only four events behind."""
    async with FakeContainerd(sandboxers=("shim", "other"), event_backlog=4) as server:
        yield server


def _metadata(namespace: str | None) -> dict[str, str]:
    return {} if namespace is None else {NAMESPACE_HEADER: namespace}


def _stub(channel: Channel, namespace: str | None = NS) -> events_pb.EventsStub:
    return events_pb.EventsStub(channel, metadata=_metadata(namespace), timeout=20)


def _subscribe(channel: Channel, namespace: str | None = NS) -> Any:
    """A raw Subscribe call, to open (``async with``) and read, or not, as the test likes."""
    return channel.request(
        _SUBSCRIBE,
        Cardinality.UNARY_STREAM,
        events_pb.SubscribeRequest,
        EnvelopePb,
        timeout=20,
        metadata=_metadata(namespace),
    )


async def test_a_subscriber_that_does_not_read_is_dropped_and_holds_little(
    backlog_fake: FakeContainerd,
) -> None:
    small = Configuration(http2_stream_window_size=_WINDOW, http2_connection_window_size=_WINDOW)
    big = AnyPb(type_url="example.Big", value=b"x" * 60_000)
    async with (
        Channel(path=backlog_fake.address, config=small) as slow,
        Channel(path=backlog_fake.address) as fast,
        _subscribe(slow) as stream,
    ):
        await stream.send_message(events_pb.SubscribeRequest(), end=True)
        await backlog_fake.wait_for_event_subscribers(1)
        published = 0
        # One event fills the reader's window; four more wait in the stand-in; the next one is
        # too many. Bounded, so that a subscriber never dropped fails the test.
        while backlog_fake.event_subscribers and published < 100:
            await _stub(fast).publish(events_pb.PublishRequest(topic="/big", event=big))
            published += 1
        assert backlog_fake.event_subscribers == 0
        assert published <= 10
        received = 0
        while await stream.recv_message() is not None:
            received += 1
        with pytest.raises(GRPCError) as info:
            await stream.recv_trailing_metadata()
    assert info.value.status is Status.UNAVAILABLE
    assert info.value.message == (
        "event subscriber fell 4 events behind and was dropped; subscribe again (events were lost)"
    )
    assert 1 <= received < published


async def test_the_client_marks_where_a_dropped_subscription_lost_events(
    backlog_fake: FakeContainerd,
) -> None:
    async with Client(backlog_fake.address, namespace=NS) as client, client.events() as events:
        for i in range(5):  # all at once: the stand-in cannot send one of them meanwhile
            backlog_fake.publish(NS, "/tasks/oom", TaskOOM(container_id=f"c{i}"))
        async with asyncio.timeout(20):
            assert isinstance(await anext(events), EventsReconnected)
            backlog_fake.publish(NS, "/tasks/oom", TaskOOM(container_id="after"))
            item = await anext(events)
    assert isinstance(item, Event)
    assert (item.topic, item.payload) == ("/tasks/oom", TaskOOM(container_id="after"))


async def test_a_test_can_publish_what_the_stand_in_cannot_know(
    backlog_fake: FakeContainerd,
) -> None:
    async with Client(backlog_fake.address, namespace=NS) as client, client.events() as events:
        backlog_fake.publish(NS, "/tasks/oom", TaskOOM(container_id="c1"))
        backlog_fake.publish(NS, "/custom/thing", AnyValue("example.Thing", b"raw"))
        async with asyncio.timeout(20):
            first, second = await anext(events), await anext(events)
    assert isinstance(first, Event)
    assert isinstance(second, Event)
    assert (first.namespace, first.topic, first.payload) == (NS, "/tasks/oom", TaskOOM("c1"))
    assert second.payload == AnyValue("example.Thing", b"raw")
    with pytest.raises(ValueError, match="must start with '/'"):
        backlog_fake.publish(NS, "tasks/oom", TaskOOM(container_id="c1"))
    with pytest.raises(ValueError, match="namespace is required"):
        backlog_fake.publish("", "/tasks/oom", TaskOOM(container_id="c1"))
    with pytest.raises(TypeError, match="not an event payload"):
        backlog_fake.publish(NS, "/x", "text")  # type: ignore[arg-type]


async def test_a_subscriber_without_a_namespace_sees_every_namespace(
    backlog_fake: FakeContainerd,
) -> None:
    async with Channel(path=backlog_fake.address) as channel, _subscribe(channel, None) as stream:
        await stream.send_message(events_pb.SubscribeRequest(), end=True)
        await backlog_fake.wait_for_event_subscribers(1)
        for namespace in ("ns-a", "ns-b"):
            await _stub(channel, namespace).publish(events_pb.PublishRequest(topic="/x"))
        got = [await stream.recv_message(), await stream.recv_message()]
        await stream.cancel()
    assert [(e.namespace, e.topic) for e in got] == [("ns-a", "/x"), ("ns-b", "/x")]


async def test_forward_without_an_envelope_is_a_crash_request(backlog_fake: FakeContainerd) -> None:
    async with raw_connection(backlog_fake.address, NS, "shim") as raw:
        forward = raw.connection.stub(events_pb.EventsStub).forward
        with pytest.raises(InvalidArgumentError, match="envelope must be set"):
            await raw.call(forward, events_pb.ForwardRequest())
        envelope = EnvelopePb(timestamp=utcnow(), namespace=NS, topic="/ok")
        await raw.call(forward, events_pb.ForwardRequest(envelope=envelope))
    assert backlog_fake.crash_requests == 1


async def test_the_plugins_it_lists(backlog_fake: FakeContainerd) -> None:
    async with Channel(path=backlog_fake.address) as channel:
        stub = introspection_pb.IntrospectionStub(channel, timeout=20)
        listed = (await stub.plugins(introspection_pb.PluginsRequest())).plugins
        picked = await stub.plugins(
            introspection_pb.PluginsRequest(filters=["type==io.containerd.runtime.v2", "id==other"])
        )
        await expect_error(
            stub.plugin_info(
                introspection_pb.PluginInfoRequest(
                    type="io.containerd.runtime.v2",
                    id="task",
                    options=AnyPb(type_url="containerd.types.RuntimeRequest"),
                )
            ),
            Status.UNIMPLEMENTED,
            "plugin does not provided extra information: not implemented",
        )
    assert [(p.type, p.id) for p in listed] == [
        ("io.containerd.grpc.v1", "containers"),
        ("io.containerd.grpc.v1", "content"),
        ("io.containerd.grpc.v1", "events"),
        ("io.containerd.grpc.v1", "images"),
        ("io.containerd.grpc.v1", "introspection"),
        ("io.containerd.grpc.v1", "leases"),
        ("io.containerd.grpc.v1", "namespaces"),
        ("io.containerd.grpc.v1", "sandbox-controllers"),
        ("io.containerd.grpc.v1", "sandboxes"),
        ("io.containerd.grpc.v1", "snapshots"),
        ("io.containerd.grpc.v1", "streaming"),
        ("io.containerd.grpc.v1", "tasks"),
        ("io.containerd.grpc.v1", "transfer"),
        ("io.containerd.grpc.v1", "version"),
        ("io.containerd.runtime.v2", "task"),
        ("io.containerd.sandbox.controller.v1", "other"),
        ("io.containerd.sandbox.controller.v1", "shim"),
    ]
    assert all(p.init_err is None for p in listed)
    assert [p.id for p in picked.plugins] == ["task", "other"]


async def test_an_exit_heard_while_starting_is_told_after_the_start() -> None:
    exchange = Exchange()
    events = TaskEvents(exchange, "/state")
    task = Task(NS, "c1", ("", "", ""), False, None)
    exec_proc = Proc(task, "x1", ("", "", ""), False, {})
    with exchange.subscribe(None) as subscription:
        for proc in (task.init, exec_proc):
            events.starting(proc)
            proc.finish(3, utcnow())
            events.exited(proc)  # the shim holds it: the start comes first
        events.started(task.init)
        events.failed(exec_proc)  # a start that failed tells the exit all the same
        events.exited(task.init)  # once started, at once
        got = [await subscription.next() for _ in range(4)]
    assert [(e.topic, e.namespace) for e in got] == [
        ("/tasks/start", NS),
        ("/tasks/exit", NS),
        ("/tasks/exit", NS),
        ("/tasks/exit", NS),
    ]
    exits = [ev.TaskExit().parse(bytes(e.event.value)) for e in got[1:] if e.event is not None]
    assert [(x.id, x.exit_status) for x in exits] == [("c1", 3), ("x1", 3), ("c1", 3)]


async def _until_dropped(events: EventStream, count: int) -> None:
    """Return once ``events`` has dropped ``count`` events (the stand-in sent them all):
    a count with no signal of its own, polled."""
    await until(lambda: events.dropped >= count, 20)


@pytest.mark.parametrize("buffer", [1, 2, 4])
async def test_a_reader_that_catches_up_is_told_what_it_lost_at_once(buffer: int) -> None:
    async with (
        FakeContainerd() as backlog_fake,
        Client(backlog_fake.address, namespace=NS) as client,
        client.events(buffer=buffer) as events,
    ):
        burst = buffer + 5
        for i in range(burst):
            backlog_fake.publish(NS, "/tasks/oom", TaskOOM(container_id=f"c{i}"))
        await _until_dropped(events, 5)
        assert events.held == buffer
        async with asyncio.timeout(20):
            got = [await anext(events) for _ in range(buffer + 1)]
        # Nothing else comes: the marker did not wait for an event after the gap.
        assert (events.held, events.dropped) == (0, 0)
        backlog_fake.publish(NS, "/tasks/oom", TaskOOM(container_id="after"))
        async with asyncio.timeout(20):
            after = await anext(events)
    kept = [(item.payload if isinstance(item, Event) else item) for item in got]
    assert kept == [TaskOOM(container_id=f"c{i}") for i in range(buffer)] + [EventsLagged(5)]
    assert isinstance(after, Event)
    assert after.payload == TaskOOM(container_id="after")


async def test_a_gap_is_marked_where_it_was_when_more_events_come() -> None:
    async with (
        FakeContainerd() as backlog_fake,
        Client(backlog_fake.address, namespace=NS) as client,
        client.events(buffer=3) as events,
    ):
        for i in range(6):
            backlog_fake.publish(NS, "/tasks/oom", TaskOOM(container_id=f"c{i}"))
        await _until_dropped(events, 3)
        async with asyncio.timeout(20):
            first = await anext(events)
            backlog_fake.publish(NS, "/tasks/oom", TaskOOM(container_id="late"))
            # Room for the marker and the late event only once two places are free.
            rest = [await anext(events) for _ in range(4)]
    assert isinstance(first, Event)
    payloads = [(item.payload if isinstance(item, Event) else item) for item in rest]
    assert payloads[:2] == [TaskOOM(container_id="c1"), TaskOOM(container_id="c2")]
    assert payloads[2:] == [EventsLagged(4)] or payloads[2:] == [
        EventsLagged(3),
        TaskOOM(container_id="late"),
    ]
