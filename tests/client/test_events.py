"""Events on both backends: what the services publish, filters, Publish and Forward.

Every test runs against the stand-in and against a real containerd 2.1.9 with the Python
sandboxer plugged in: what the stand-in publishes, refuses and answers is checked against
what the daemon does, field for field where both can say.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import betterproto2
import pytest
from grpclib.client import Channel
from grpclib.const import Status

from sandboxclient import AnyValue, Client, EventStream, UnknownError, oci
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import AnyPb, EmptyPb, EnvelopePb, events_pb
from sandboxclient._wire._pb import event_payloads_pb as ev
from sandboxclient.events import (
    ContainerCreate,
    ContainerDelete,
    ContainerUpdate,
    Event,
    SandboxCreate,
    SandboxExit,
    SandboxStart,
    TaskCreate,
    TaskDelete,
    TaskExecAdded,
    TaskExecStarted,
    TaskExit,
    TaskIO,
    TaskPaused,
    TaskResumed,
    TaskStart,
)
from tests.support.backends import Backend, new_namespace
from tests.support.constants import RUNTIME
from tests.support.helpers import expect_error

pytestmark = pytest.mark.anyio


def _events(channel: Channel, namespace: str | None) -> events_pb.EventsStub:
    metadata = {} if namespace is None else {NAMESPACE_HEADER: namespace}
    return events_pb.EventsStub(channel, metadata=metadata, timeout=20)


async def _until(events: EventStream, topic: str, namespace: str | None = None) -> list[Event]:
    """The events up to and with the next one on ``topic`` (in ``namespace``, if given);
    a marker fails the test."""
    seen: list[Event] = []
    async with asyncio.timeout(30):
        async for item in events:
            assert isinstance(item, Event), item
            seen.append(item)
            if item.topic == topic and namespace in (None, item.namespace):
                return seen
    raise AssertionError(f"the stream ended before {topic}")


# containerd's shim publishes /tasks/delete as it shuts down, and a real containerd 2.1.9
# drops that last event now and then (4 of 40 on a loaded machine, and `ctr events` missed
# the same 4): such a scenario is tried again, on the real daemon only, with a new id.
SHIM_TRIES = 3
SHIM_BOUND = 10.0


async def _shim_published(backend: Backend, events: EventStream, topic: str) -> list[Event] | None:
    """:func:`_until` ``topic``, or None where a real daemon lost it (the stand-in never may)."""
    if backend.daemon is None:
        return await _until(events, topic)
    try:
        async with asyncio.timeout(SHIM_BOUND):
            return await _until(events, topic)
    except TimeoutError:
        return None


# -- what the services publish -------------------------------------------------------------


async def test_a_task_s_life_comes_in_order_each_event_typed_and_filled(
    backend: Backend, client: Client, rootfs: Path
) -> None:
    for attempt in range(SHIM_TRIES):
        cid = f"ev1-{attempt}"
        async with client.events() as events:
            spec = oci.generate_spec(oci.with_process_args("sh", "-c", "exit 3"))
            container = await client.new_container(cid, rootfs=rootfs, spec=spec)
            task = await container.new_task()
            pid = await task.start()
            status = await task.wait_exit()
            await task.delete()
            # The shim publishes /tasks/delete on its own time: wait for it before going on.
            shim_seen = await _shim_published(backend, events, "/tasks/delete")
            await container.delete()
            if shim_seen is None:
                continue
            seen = shim_seen + await _until(events, "/containers/delete")
            break
    else:
        pytest.fail(f"/tasks/delete never came in {SHIM_TRIES} tries")
    assert [e.topic for e in seen] == [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ]
    assert all(e.namespace == client.namespace for e in seen)
    assert all(e.timestamp is not None and e.timestamp.tzinfo is not None for e in seen)
    created, task_created, started, exited, deleted, gone = (e.payload for e in seen)
    assert created == ContainerCreate(id=cid, image="", runtime=RUNTIME)
    assert isinstance(task_created, TaskCreate)
    assert (task_created.container_id, task_created.pid) == (cid, pid)
    assert task_created.bundle.endswith(f"/io.containerd.runtime.v2.task/{client.namespace}/{cid}")
    assert (task_created.rootfs, task_created.io, task_created.checkpoint) == ((), TaskIO(), "")
    assert started == TaskStart(container_id=cid, pid=pid)
    assert status.returncode == 3
    assert status.exited_at is not None
    assert exited == TaskExit(
        container_id=cid, id=cid, pid=pid, returncode=3, exited_at=status.exited_at
    )
    assert deleted == TaskDelete(
        container_id=cid, pid=pid, returncode=3, exited_at=status.exited_at, id=""
    )
    assert gone == ContainerDelete(id=cid)


async def test_execs_pause_resume_and_a_label_update(client: Client, rootfs: Path) -> None:
    spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
    container = await client.new_container("ev2", rootfs=rootfs, spec=spec)
    task = await container.new_task()
    async with client.events("event.container_id==ev2", 'topic=="/containers/update"') as events:
        task_pid = await task.start()
        # The shim publishes the task's create and start on its own time, maybe after
        # Start has answered: they come first, whenever they come.
        started = await _until(events, "/tasks/start")
        assert started[-1].payload == TaskStart(container_id="ev2", pid=task_pid)
        await task.pause()
        await task.resume()
        process = await task.exec("x1", ["sh", "-c", "exit 5"])
        pid = await process.start()
        status = await process.wait_exit()
        await process.delete()
        # The shim sends its events on its own time: the update must not overtake them.
        seen = await _until(events, "/tasks/exit")
        await container.set_labels({"a": "b"})
        seen += await _until(events, "/containers/update")
    await container.delete(force=True)
    assert [e.payload for e in seen] == [
        TaskPaused(container_id="ev2"),
        TaskResumed(container_id="ev2"),
        TaskExecAdded(container_id="ev2", exec_id="x1"),
        TaskExecStarted(container_id="ev2", exec_id="x1", pid=pid),
        TaskExit(container_id="ev2", id="x1", pid=pid, returncode=5, exited_at=status.exited_at),
        ContainerUpdate(id="ev2", labels={"a": "b"}),
    ]


async def test_a_task_never_started_is_deleted_without_an_exit(
    backend: Backend, client: Client, rootfs: Path
) -> None:
    spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
    for attempt in range(SHIM_TRIES):
        cid = f"ev3-{attempt}"
        container = await client.new_container(cid, rootfs=rootfs, spec=spec)
        async with client.events('topic~="/tasks/"') as events:
            task = await container.new_task()
            await task.delete()
            seen = await _shim_published(backend, events, "/tasks/delete")
        await container.delete()
        # A real shim's reaper may race its own Delete and publish the killed `runc init`'s
        # exit first (rarely, under load): that try says nothing of the case, so try again.
        if seen is not None and "/tasks/exit" not in [e.topic for e in seen]:
            break
    else:
        pytest.fail(f"/tasks/delete without an exit never came in {SHIM_TRIES} tries")
    assert [e.topic for e in seen] == ["/tasks/create", "/tasks/delete"]
    created, deleted = (e.payload for e in seen)
    assert isinstance(created, TaskCreate)
    # Go's zero time for an exit that never was.
    assert deleted == TaskDelete(container_id=cid, pid=created.pid, returncode=0)


async def test_a_sandbox_s_events_come_from_the_controller(client: Client) -> None:
    # The sandboxer's own PID 1, which dies of the SIGTERM a stop sends.
    spec = oci.generate_spec()
    async with client.events('topic~="/sandboxes/"') as events:
        sandbox = await client.new_sandbox("sbev1", spec=spec)
        await sandbox.start()
        await sandbox.stop()
        status = await (await sandbox.wait())
        seen = await _until(events, "/sandboxes/exit")
        await sandbox.shutdown()
    assert status.returncode == 143
    assert status.exited_at is not None
    assert [(e.topic, e.payload) for e in seen] == [
        ("/sandboxes/create", SandboxCreate(sandbox_id="sbev1")),
        ("/sandboxes/start", SandboxStart(sandbox_id="sbev1")),
        (
            "/sandboxes/exit",
            SandboxExit(sandbox_id="sbev1", returncode=143, exited_at=status.exited_at),
        ),
    ]


# -- filters and namespaces ----------------------------------------------------------------


async def test_filters_pick_topics_and_payload_fields_across_namespaces(
    backend: Backend, client: Client, rootfs: Path
) -> None:
    spec = oci.generate_spec(oci.with_process_args("true"))
    other = backend.client(namespace=new_namespace())
    try:
        async with (
            other,
            client.events('topic=="/containers/delete"') as deletes,
            client.events("") as own,  # containerd's "everything", narrowed to the namespace
            client.events(all_namespaces=True) as everywhere,
            client.events("event.id==evf1", all_namespaces=True) as by_id,
        ):
            for owner in (other, client):
                made = await owner.new_container("evf1", rootfs=rootfs, spec=spec)
                await made.delete()
            await (await client.new_container("evf2", rootfs=rootfs, spec=spec)).delete()
            mine = await _until(deletes, "/containers/delete")
            mine += await _until(deletes, "/containers/delete")
            both = await _until(by_id, "/containers/delete", client.namespace)
            seen = await _until(everywhere, "/containers/delete", client.namespace)
            seen += await _until(everywhere, "/containers/delete", client.namespace)
            ours = await _until(own, "/containers/delete")
            ours += await _until(own, "/containers/delete")
    finally:
        await _forget(other)
    # Scoped to the client's namespace, one topic: its own two deletes, in order.
    assert [(e.namespace, e.payload) for e in mine] == [
        (client.namespace, ContainerDelete(id="evf1")),
        (client.namespace, ContainerDelete(id="evf2")),
    ]
    # A payload field, every namespace: evf1's create and delete here and there.
    assert [(e.namespace, e.topic) for e in both] == [
        (other.namespace, "/containers/create"),
        (other.namespace, "/containers/delete"),
        (client.namespace, "/containers/create"),
        (client.namespace, "/containers/delete"),
    ]
    # No filter, every namespace: both namespaces' events.
    assert {other.namespace, client.namespace} <= {e.namespace for e in seen}
    assert [(e.namespace, e.topic, e.payload) for e in ours] == [
        (client.namespace, "/containers/create", ContainerCreate(id="evf1", runtime=RUNTIME)),
        (client.namespace, "/containers/delete", ContainerDelete(id="evf1")),
        (client.namespace, "/containers/create", ContainerCreate(id="evf2", runtime=RUNTIME)),
        (client.namespace, "/containers/delete", ContainerDelete(id="evf2")),
    ]


async def _forget(other: Client) -> None:
    with contextlib.suppress(Exception):
        async with Client(other.address, namespace=other.namespace) as again:
            for record in await again.list_containers():
                await again.container_handle(record).delete(force=True)


async def test_filters_see_payload_fields_as_containerd_s_field_methods_do(
    backend: Backend, client: Client, channel: Channel
) -> None:
    ns = backend.namespace
    publish = _events(channel, ns).publish

    def payload(message: betterproto2.Message, name: str) -> AnyPb:
        return AnyPb(type_url=f"containerd.events.{name}", value=bytes(message))

    sent = [
        ("/t/io", payload(ev.TaskCreate(container_id="c1", io=ev.TaskIo(stdin="x")), "TaskCreate")),
        ("/t/noio", payload(ev.TaskCreate(container_id="c2", pid=7), "TaskCreate")),
        ("/t/labels", payload(ev.ContainerUpdate(id="c3", labels={"a": "b"}), "ContainerUpdate")),
        (
            "/t/runtime",
            payload(
                ev.ContainerCreate(id="c4", runtime=ev.ContainerCreateRuntime(name="rt")),
                "ContainerCreate",
            ),
        ),
        ("/t/sandbox", payload(ev.SandboxCreate(sandbox_id="s1"), "SandboxCreate")),
        ("/t/unknown", AnyPb(type_url="example.Unknown", value=b"\n\x02c1")),
        ("/t/end", None),
    ]
    filters = [
        "event.io.terminal==false",  # a bool of a nested message, when the message is set
        "event.labels.a==b",
        "event.runtime.name==rt",
        "event.sandbox_id==s1",
        "event.pid",  # numbers are never fields
        "event.container_id==c1",
        'topic=="/t/end"',
    ]
    async with client.events(*filters) as events:
        for topic, event in sent:
            await publish(events_pb.PublishRequest(topic=topic, event=event))
        seen = await _until(events, "/t/end")
    assert [e.topic for e in seen] == ["/t/io", "/t/labels", "/t/runtime", "/t/sandbox", "/t/end"]
    assert seen[-1].payload == AnyValue("", b"")


async def test_a_bad_filter_is_containerd_s_untyped_error(client: Client) -> None:
    with pytest.raises(UnknownError) as info:
        async with client.events("topic=="):
            pass
    assert info.value.message == (
        "subscription error: failed parsing subscription filters: filters: parse error: "
        f"[namespace=={client.namespace},topic==]: expected value or quoted: invalid argument"
    )


# -- Publish and Forward ---------------------------------------------------------------------


async def test_publish_refusals(backend: Backend, channel: Channel) -> None:
    event = AnyPb(type_url="example.Event", value=b"x")
    ident = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
    publish = _events(channel, backend.namespace).publish
    refusals = {
        "": 'envelope topic "": must not be empty: invalid argument',
        "a": "envelope topic \"a\": must start with '/': invalid argument",
        "/": 'envelope topic "/": must have at least one component: invalid argument',
        "/a b": (
            'envelope topic "/a b": failed validation on component "a b": '
            f'identifier "a b" must match {ident}: invalid argument'
        ),
        "/a/": (
            'envelope topic "/a/": failed validation on component "": '
            "identifier must not be empty: invalid argument"
        ),
    }
    for topic, message in refusals.items():
        request = events_pb.PublishRequest(topic=topic, event=event)
        await expect_error(publish(request), Status.INVALID_ARGUMENT, message)
    request = events_pb.PublishRequest(topic="/a/b", event=event)
    await expect_error(
        _events(channel, None).publish(request),
        Status.FAILED_PRECONDITION,
        "failed publishing event: namespace is required: failed precondition",
    )
    await expect_error(
        _events(channel, "Bad_NS!").publish(request),
        Status.INVALID_ARGUMENT,
        f'failed publishing event: namespace validation: identifier "Bad_NS!" must match '
        f"{ident}: invalid argument",
    )
    assert await publish(events_pb.PublishRequest(topic="/A_b/c.d-e")) == EmptyPb()


async def test_forward_refusals_and_an_envelope_forwarded_as_it_came(
    backend: Backend, client: Client, channel: Channel
) -> None:
    forward = _events(channel, None).forward  # Forward reads the envelope, not the header
    now = datetime.now(UTC)
    zero = datetime(1, 1, 1, tzinfo=UTC)
    ident = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
    bad = [
        (
            EnvelopePb(timestamp=now, topic="/x"),
            "event envelope has invalid namespace: identifier must not be empty: invalid argument",
        ),
        (
            EnvelopePb(timestamp=now, namespace="Bad!", topic="x"),
            f'event envelope has invalid namespace: identifier "Bad!" must match {ident}: '
            "invalid argument",
        ),
        (
            EnvelopePb(timestamp=now, namespace="ok", topic="x"),
            "envelope topic \"x\": must start with '/': invalid argument",
        ),
        (
            EnvelopePb(timestamp=zero, namespace="ok", topic="/x"),
            "timestamp must be set on forwarded event: invalid argument",
        ),
    ]
    for envelope, message in bad:
        request = events_pb.ForwardRequest(envelope=envelope)
        await expect_error(forward(request), Status.INVALID_ARGUMENT, message)
    event = AnyPb(type_url="example.Event", value=b"payload")
    async with client.events('topic~="/fwd/"') as events:
        for envelope in (
            EnvelopePb(timestamp=now, namespace=backend.namespace, topic="/fwd/a", event=event),
            EnvelopePb(namespace=backend.namespace, topic="/fwd/b"),  # no time, no event
        ):
            await forward(events_pb.ForwardRequest(envelope=envelope))
        seen = await _until(events, "/fwd/b")
    assert [(e.topic, e.timestamp, e.payload) for e in seen] == [
        ("/fwd/a", now, AnyValue("example.Event", b"payload")),
        ("/fwd/b", datetime(1970, 1, 1, tzinfo=UTC), AnyValue("", b"")),
    ]
