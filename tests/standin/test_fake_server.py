"""The embedded containerd stand-in, driven with the raw generated stubs.

Expected codes and messages are those containerd answers (seen on 2.1.9, see the project's
wire facts); where releases differ, each release's, from ``tests.support.releases``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from sandboxclient import ContainerdVersion
from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._wire._pb import (
    AnyPb,
    EmptyPb,
    FieldMaskPb,
    SandboxPb,
    SandboxRuntimePb,
    containers_pb,
    namespaces_pb,
    sandbox_pb,
    version_pb,
)
from sandboxclient.sandboxer import ProcessSandboxer, SandboxController
from sandboxclient.testing import FakeContainerd
from tests.support.constants import BAD_FILTERS, NAMESPACE_PATTERN, NO_NAMESPACE, NS, RUNTIME
from tests.support.helpers import expect_error, live_tasks
from tests.support.releases import LINES, start_lookup_refusal, start_refusal

pytestmark = pytest.mark.anyio

BAD_NAMESPACE = (
    f'namespace validation: identifier "Bad_NS!" must match {NAMESPACE_PATTERN}: invalid argument'
)
EMPTY_SANDBOXER = "invalid argument: sandbox controller name can not be empty"
SPEC = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b'{"process": {"args": ["sh", "-c", "exit 3"]}}')


def exists(path: str) -> bool:
    return os.path.exists(path)


def isdir(path: str) -> bool:
    return os.path.isdir(path)


def _rt(name: str = RUNTIME) -> dict[str, Any]:
    return {"runtime": SandboxRuntimePb(name=name)}


@dataclass
class Client:
    """Raw stubs on one channel to the stand-in."""

    fake: FakeContainerd
    channel: Channel

    def _md(self, namespace: str | None) -> dict[str, str] | None:
        return {"containerd-namespace": namespace} if namespace is not None else None

    def store(self, namespace: str | None = NS) -> sandbox_pb.StoreStub:
        return sandbox_pb.StoreStub(self.channel, metadata=self._md(namespace), timeout=30)

    def controller(self, namespace: str | None = NS) -> sandbox_pb.ControllerStub:
        return sandbox_pb.ControllerStub(self.channel, metadata=self._md(namespace), timeout=30)

    def containers(self, namespace: str | None = NS) -> containers_pb.ContainersStub:
        return containers_pb.ContainersStub(self.channel, metadata=self._md(namespace), timeout=30)

    async def create(self, sandbox_id: str, namespace: str | None = NS, **fields: Any) -> SandboxPb:
        fields.setdefault("runtime", SandboxRuntimePb(name=RUNTIME))
        created = await self.store(namespace).create(
            sandbox_pb.StoreCreateRequest(sandbox=SandboxPb(sandbox_id=sandbox_id, **fields))
        )
        assert created.sandbox is not None
        return created.sandbox

    async def get(self, sandbox_id: str, namespace: str = NS) -> SandboxPb:
        got = await self.store(namespace).get(sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id))
        assert got.sandbox is not None
        return got.sandbox

    async def update(self, sandbox: SandboxPb, *fields: str) -> SandboxPb:
        updated = await self.store().update(
            sandbox_pb.StoreUpdateRequest(sandbox=sandbox, fields=list(fields))
        )
        assert updated.sandbox is not None
        return updated.sandbox

    async def ids(self, *filters: str, namespace: str = NS) -> list[str]:
        listed = await self.store(namespace).list(
            sandbox_pb.StoreListRequest(filters=list(filters))
        )
        return [s.sandbox_id for s in listed.list]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A stand-in with its own process controller; nothing may outlive it."""
    before = live_tasks()
    fake = FakeContainerd(sandboxers=("shim", "pysandbox"))
    async with fake, Channel(path=fake.address) as channel:
        yield Client(fake, channel)
    controller = fake.controller
    assert isinstance(controller, ProcessSandboxer)
    assert controller.pids() == []
    leaked = live_tasks() - before - {asyncio.current_task()}
    assert not leaked, leaked


# --- the facts file's error table -------------------------------------------------------------


async def test_get_missing_is_not_found(client: Client) -> None:
    request = sandbox_pb.StoreGetRequest(sandbox_id="nope")
    # Before the namespace's first record containerd has no bucket to look in.
    await expect_error(
        client.store().get(request), Status.NOT_FOUND, "no sandbox buckets: not found"
    )
    await client.create("one")
    await expect_error(
        client.store().get(request), Status.NOT_FOUND, 'bucket "nope" not found: not found'
    )


async def test_create_duplicate_empty_and_bad_ids(client: Client) -> None:
    await client.create("dup1")
    await expect_error(
        client.create("dup1"),
        Status.ALREADY_EXISTS,
        'write error: sandbox bucket "dup1" already exists: already exists',
    )
    await expect_error(
        client.create(""),
        Status.INVALID_ARGUMENT,
        "failed to validate sandbox: invalid sandbox ID: identifier must not be empty: "
        "invalid argument",
    )
    await expect_error(
        client.create("bad id/!"),
        Status.INVALID_ARGUMENT,
        'failed to validate sandbox: invalid sandbox ID: identifier "bad id/!" must match '
        f"{NAMESPACE_PATTERN}: invalid argument",
    )
    message = await expect_error(client.create("a" * 77), Status.INVALID_ARGUMENT)
    assert "greater than maximum length (76 characters)" in message
    assert await client.ids() == ["dup1"]


async def test_create_sets_times_and_accepts_any_sandboxer(client: Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    past = datetime(2001, 1, 1, tzinfo=UTC)
    empty = await client.create("s1", sandboxer="", created_at=past, updated_at=past)
    unknown = await client.create("s2", sandboxer="bogus")
    assert empty.sandboxer == ""
    assert unknown.sandboxer == "bogus"
    assert empty.created_at is not None
    assert empty.created_at >= before
    assert empty.updated_at == empty.created_at
    assert (await client.get("s2")).sandboxer == "bogus"
    # An empty but present runtime message is fine.
    await client.create("s3", runtime=SandboxRuntimePb())


async def test_namespace_header_required_and_validated_on_every_service(client: Client) -> None:
    for namespace, status, message in (
        (None, Status.FAILED_PRECONDITION, NO_NAMESPACE),
        ("Bad_NS!", Status.INVALID_ARGUMENT, BAD_NAMESPACE),
    ):
        store = client.store(namespace)
        await expect_error(client.create("x", namespace=namespace), status, message)
        await expect_error(store.get(sandbox_pb.StoreGetRequest(sandbox_id="x")), status, message)
        await expect_error(store.list(sandbox_pb.StoreListRequest()), status, message)
        await expect_error(
            store.delete(sandbox_pb.StoreDeleteRequest(sandbox_id="x")), status, message
        )
        await expect_error(
            store.update(sandbox_pb.StoreUpdateRequest(sandbox=SandboxPb(sandbox_id="x", **_rt()))),
            status,
            message,
        )
        ctl = client.controller(namespace)
        await expect_error(
            ctl.status(sandbox_pb.ControllerStatusRequest(sandbox_id="x", sandboxer="shim")),
            status,
            message,
        )
        await expect_error(
            ctl.create(
                sandbox_pb.ControllerCreateRequest(
                    sandbox_id="x",
                    sandboxer="pysandbox",
                    sandbox=SandboxPb(sandbox_id="x", **_rt()),
                )
            ),
            status,
            message,
        )
        ctr = client.containers(namespace)
        await expect_error(ctr.get(containers_pb.GetContainerRequest(id="c")), status, message)
        await expect_error(ctr.list(containers_pb.ListContainersRequest()), status, message)
        await expect_error(
            ctr.create(containers_pb.CreateContainerRequest(container=_container("c"))),
            status,
            message,
        )
        await expect_error(
            ctr.update(containers_pb.UpdateContainerRequest(container=_container("c"))),
            status,
            message,
        )
        await expect_error(
            ctr.delete(containers_pb.DeleteContainerRequest(id="c")), status, message
        )
        with pytest.raises(GRPCError) as info:
            async for _ in ctr.list_stream(containers_pb.ListContainersRequest()):
                pass
        assert (info.value.status, info.value.message) == (status, message)
    assert client.fake.sandbox_ids("Bad_NS!") == []


async def test_list_in_an_unknown_namespace_is_empty(client: Client) -> None:
    await client.create("here")
    assert await client.ids(namespace="elsewhere") == []
    assert await client.ids() == ["here"]


async def test_list_filter_parse_error(client: Client) -> None:
    await client.create("one")
    message = await expect_error(client.ids("labels.=="), Status.INVALID_ARGUMENT)
    assert message == (
        "filters: parse error: [labels. >|=|< =]: expected field or quoted: "
        "invalid argument: invalid argument"
    )
    for bad in BAD_FILTERS:
        message = await expect_error(client.ids(bad), Status.INVALID_ARGUMENT)
        assert message.startswith("filters: parse error: "), message


async def test_list_filters(client: Client) -> None:
    await client.create("f1", labels={"team": "a", "tier": "x", "dotted.key": "d"})
    await client.create("f2", labels={"team": "b", "with space": "1"})
    await client.create("f3")
    assert await client.ids() == ["f1", "f2", "f3"]
    assert await client.ids("labels.team==a") == ["f1"]
    assert await client.ids("id==f2") == ["f2"]
    assert await client.ids("id!=f2") == ["f1", "f3"]
    assert await client.ids("labels.team!=a") == ["f2", "f3"]
    assert await client.ids("labels.team") == ["f1", "f2"]  # presence
    assert await client.ids("labels.team==a,labels.tier==x") == ["f1"]  # comma: AND
    assert await client.ids("labels.team==a,labels.tier==y") == []
    assert await client.ids("labels.team==a", "id==f3") == ["f1", "f3"]  # filters: OR
    assert await client.ids('labels."with space"==1') == ["f2"]
    assert await client.ids("labels.dotted.key==d") == ["f1"]
    assert await client.ids('labels.team=="b"') == ["f2"]
    assert await client.ids("labels.team~=^[ab]$") == ["f1", "f2"]
    assert await client.ids("id~=/f[13]/") == ["f1", "f3"]
    assert await client.ids(" labels.team == b") == ["f2"]
    assert await client.ids("runtime==x") == []
    assert await client.ids("") == ["f1", "f2", "f3"]


async def test_delete_missing_is_not_found_every_time(client: Client) -> None:
    delete = sandbox_pb.StoreDeleteRequest(sandbox_id="nope")
    await expect_error(
        client.store().delete(delete), Status.NOT_FOUND, "no sandbox buckets: not found"
    )
    await client.create("nope")
    await client.store().delete(delete)
    for _ in range(2):
        await expect_error(
            client.store().delete(delete),
            Status.NOT_FOUND,
            'failed to delete sandbox "nope": not found',
        )
    assert client.fake.sandbox_ids(NS) == []


async def test_update_missing_and_bogus_fields(client: Client) -> None:
    ghost = SandboxPb(sandbox_id="ghost", **_rt())
    await expect_error(client.update(ghost, "labels"), Status.NOT_FOUND)
    await client.create("dup1")
    await expect_error(
        client.update(ghost, "labels"), Status.NOT_FOUND, 'bucket "ghost" not found: not found'
    )
    record = SandboxPb(sandbox_id="dup1", **_rt())
    for field in ("bogus", "sandboxer", "created_at"):
        await expect_error(
            client.update(record, field),
            Status.INVALID_ARGUMENT,
            f'cannot update "{field}" field on sandbox "dup1": invalid argument',
        )
    # A refused update changes nothing, not even the paths before the bad one.
    await expect_error(
        client.update(SandboxPb(sandbox_id="dup1", **_rt(), labels={"a": "b"}), "labels", "bogus"),
        Status.INVALID_ARGUMENT,
    )
    assert (await client.get("dup1")).labels == {}


async def test_update_paths(client: Client) -> None:
    ext_a = AnyPb(type_url="example.com/A", value=b"a")
    ext_b = AnyPb(type_url="example.com/B", value=b"b")
    spec_one = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b"{}")
    created = await client.create(
        "u1",
        labels={"a": "1", "b": "2"},
        extensions={"ea": ext_a},
        sandboxer="shim",
        spec=spec_one,
        runtime=SandboxRuntimePb(name=RUNTIME, options=AnyPb(type_url="example.com/O", value=b"o")),
    )

    # labels: replaced wholesale.
    got = await client.update(SandboxPb(sandbox_id="u1", **_rt(), labels={"c": "3"}), "labels")
    assert got.labels == {"c": "3"}
    assert got.created_at == created.created_at
    assert got.updated_at is not None
    assert created.updated_at is not None
    assert got.updated_at > created.updated_at
    assert got.sandboxer == "shim"
    # labels.<k>: set one; an absent or empty value removes it.
    got = await client.update(SandboxPb(sandbox_id="u1", **_rt(), labels={"d": "4"}), "labels.d")
    assert got.labels == {"c": "3", "d": "4"}
    got = await client.update(SandboxPb(sandbox_id="u1", **_rt()), "labels.c")
    assert got.labels == {"d": "4"}
    # extensions.<k>.
    got = await client.update(
        SandboxPb(sandbox_id="u1", **_rt(), extensions={"eb": ext_b}), "extensions.eb"
    )
    assert set(got.extensions) == {"ea", "eb"}
    assert got.extensions["eb"].type_url == "example.com/B"
    # runtime and spec.
    new_spec = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b'{"ociVersion":"1"}')
    got = await client.update(
        SandboxPb(sandbox_id="u1", **_rt("other"), spec=new_spec), "runtime", "spec"
    )
    assert got.runtime is not None
    assert got.runtime.name == "other"
    assert got.spec is not None
    assert got.spec.value == new_spec.value
    stored = await client.get("u1")
    assert stored.runtime is not None
    assert stored.runtime.name == "other"
    assert stored.labels == {"d": "4"}
    assert stored.sandboxer == "shim"

    # No paths: labels, extensions, spec and runtime together; the runtime name may not change.
    await expect_error(
        client.update(SandboxPb(sandbox_id="u1", **_rt(RUNTIME))),
        Status.INVALID_ARGUMENT,
        "sandbox.Runtime.Name field is immutable: invalid argument",
    )
    got = await client.update(
        SandboxPb(sandbox_id="u1", **_rt("other"), labels={"z": "26"}, spec=spec_one)
    )
    assert got.labels == {"z": "26"}
    assert got.spec is not None
    assert got.spec.value == b"{}"
    assert (await client.get("u1")).labels == {"z": "26"}
    assert await client.ids("labels.z==26") == ["u1"]


async def test_store_quirks_follow_the_daemon(client: Client) -> None:
    # Empty label values are not stored; extensions are merged into the stored record.
    created = await client.create(
        "q", labels={"keep": "1", "drop": ""}, extensions={"a": AnyPb(type_url="t/a")}
    )
    assert created.labels == {"keep": "1"}
    answer = await client.update(
        SandboxPb(sandbox_id="q", **_rt(), extensions={"b": AnyPb(type_url="t/b")}), "extensions"
    )
    assert set(answer.extensions) == {"b"}
    assert set((await client.get("q")).extensions) == {"a", "b"}
    await expect_error(
        client.create("q2", labels={"": "v"}),
        Status.UNKNOWN,
        'write error: failed to set label ""="v": key required',
    )


async def test_crash_list_requests_are_refused(client: Client) -> None:
    store = client.store()
    ctl = client.controller()
    await expect_error(store.create(sandbox_pb.StoreCreateRequest()), Status.INVALID_ARGUMENT)
    await expect_error(
        store.create(sandbox_pb.StoreCreateRequest(sandbox=SandboxPb(sandbox_id="x"))),
        Status.INVALID_ARGUMENT,
    )
    await client.create("x")
    await expect_error(
        store.update(sandbox_pb.StoreUpdateRequest(fields=["labels"])), Status.INVALID_ARGUMENT
    )
    # containerd's FromProto also dereferences the runtime on Update.
    await expect_error(
        store.update(
            sandbox_pb.StoreUpdateRequest(sandbox=SandboxPb(sandbox_id="x"), fields=["labels"])
        ),
        Status.INVALID_ARGUMENT,
    )
    for sandboxer in ("shim", "pysandbox"):
        await expect_error(
            ctl.create(
                sandbox_pb.ControllerCreateRequest(
                    sandbox_id="x", sandboxer=sandboxer, sandbox=SandboxPb(sandbox_id="x")
                )
            ),
            Status.INVALID_ARGUMENT,
        )
        await expect_error(
            ctl.create(sandbox_pb.ControllerCreateRequest(sandbox_id="x", sandboxer=sandboxer)),
            Status.INVALID_ARGUMENT,
        )
    # Still serving, and nothing was recorded by the refused calls.
    assert await client.ids() == ["x"]
    controller = client.fake.controller
    assert isinstance(controller, ProcessSandboxer)
    assert controller.sandbox_ids(NS) == []


# --- controller routing ---------------------------------------------------------------------


def _controller_calls(ctl: sandbox_pb.ControllerStub) -> list[Callable[[str], Any]]:
    sandbox = SandboxPb(sandbox_id="r", **_rt())
    return [
        lambda name: ctl.create(
            sandbox_pb.ControllerCreateRequest(sandbox_id="r", sandboxer=name, sandbox=sandbox)
        ),
        lambda name: ctl.start(sandbox_pb.ControllerStartRequest(sandbox_id="r", sandboxer=name)),
        lambda name: ctl.stop(sandbox_pb.ControllerStopRequest(sandbox_id="r", sandboxer=name)),
        lambda name: ctl.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="r", sandboxer=name)),
        lambda name: ctl.status(sandbox_pb.ControllerStatusRequest(sandbox_id="r", sandboxer=name)),
        lambda name: ctl.shutdown(
            sandbox_pb.ControllerShutdownRequest(sandbox_id="r", sandboxer=name)
        ),
        lambda name: ctl.metrics(
            sandbox_pb.ControllerMetricsRequest(sandbox_id="r", sandboxer=name)
        ),
        lambda name: ctl.update(
            sandbox_pb.ControllerUpdateRequest(sandbox_id="r", sandboxer=name, sandbox=sandbox)
        ),
    ]


@pytest.fixture(params=LINES)
async def release_client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A stand-in answering as each containerd release line."""
    fake = FakeContainerd(sandboxers=("shim", "pysandbox"), version=request.param)
    async with fake, Channel(path=fake.address) as channel:
        yield Client(fake, channel)


async def test_the_stand_in_reports_the_release_it_answers_as(release_client: Client) -> None:
    fake = release_client.fake
    answer = await version_pb.VersionStub(release_client.channel, timeout=30).version(EmptyPb())
    assert (answer.version, answer.revision) == (f"{fake.version}+sandboxclient.testing", "")
    assert ContainerdVersion.parse(answer.version) == fake.version
    assert f"{fake.version.major}.{fake.version.minor}" in LINES


def test_the_release_is_a_line_or_a_version_it_knows() -> None:
    assert FakeContainerd().version == ContainerdVersion(2, 3, 4)
    assert FakeContainerd(version="2.1").version == ContainerdVersion(2, 1, 9)
    assert FakeContainerd(version="v2.2.4").version == ContainerdVersion(2, 2, 4)
    assert FakeContainerd(version="2.4").version == ContainerdVersion(2, 4, 0, "beta.0")
    given = ContainerdVersion.parse("2.0.5+unknown")
    assert FakeContainerd(version=given).version is given
    for bad, fragment in [
        ("1.7", "containerd '1.7' is not a release line (known: 2.0, 2.1, 2.2, 2.3, 2.4)"),
        ("2.x", "not a containerd version: '2.x'"),
        ("2.5.0", "cannot answer as containerd 2.5.0 (known: 2.0,"),
        ("latest", "not a containerd version: 'latest'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            FakeContainerd(version=bad)


async def test_controller_sandboxer_routing(release_client: Client) -> None:
    client = release_client
    version = client.fake.version
    ctl = client.controller()
    unknown = "not found: failed to get sandbox controller by bogus"
    for index, call in enumerate(_controller_calls(ctl)):
        empty, bogus = EMPTY_SANDBOXER, unknown
        if index == 1:  # Start wraps the lookup's error from 2.2 on
            empty = start_lookup_refusal(version, "", EMPTY_SANDBOXER)
            bogus = start_lookup_refusal(version, "bogus", unknown)
        await expect_error(call(""), Status.INVALID_ARGUMENT, empty)
        await expect_error(call("bogus"), Status.NOT_FOUND, bogus)
    # The sandboxer is checked before the namespace, as containerd does.
    for index, call in enumerate(_controller_calls(client.controller(None))):
        wrapped = start_lookup_refusal(version, "", EMPTY_SANDBOXER)
        await expect_error(
            call(""), Status.INVALID_ARGUMENT, wrapped if index == 1 else EMPTY_SANDBOXER
        )
    # Start of a sandbox the controller does not have, and a second start.
    missing = 'sandbox "r" does not exist: not found'
    await expect_error(
        ctl.start(sandbox_pb.ControllerStartRequest(sandbox_id="r", sandboxer="shim")),
        Status.NOT_FOUND,
        start_refusal(version, "r", missing),
    )
    sandbox = await client.create("r", spec=SPEC)
    await ctl.create(
        sandbox_pb.ControllerCreateRequest(sandbox_id="r", sandboxer="shim", sandbox=sandbox)
    )
    started = await ctl.start(sandbox_pb.ControllerStartRequest(sandbox_id="r", sandboxer="shim"))
    assert started.pid > 0
    await expect_error(
        ctl.start(sandbox_pb.ControllerStartRequest(sandbox_id="r", sandboxer="shim")),
        Status.ALREADY_EXISTS,
        start_refusal(version, "r", 'sandbox "r" was already started: already exists'),
    )
    await ctl.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="r", sandboxer="shim"))
    # Update as containerd forwards it to a proxy plugin (no sandboxer) is refused here too.
    await expect_error(
        ctl.update(sandbox_pb.ControllerUpdateRequest(sandbox_id="r", sandbox=SandboxPb(**_rt()))),
        Status.INVALID_ARGUMENT,
        EMPTY_SANDBOXER,
    )
    await expect_error(
        ctl.update(sandbox_pb.ControllerUpdateRequest(sandbox_id="r", sandboxer="shim")),
        Status.UNKNOWN,
        "sandbox can not be nil",
    )
    for name in ("", "shim", "bogus"):
        await expect_error(
            ctl.platform(sandbox_pb.ControllerPlatformRequest(sandbox_id="r", sandboxer=name)),
            Status.UNIMPLEMENTED,
        )


async def test_lifecycle_through_both_sandboxer_names(client: Client) -> None:
    ctl = client.controller()
    await client.create("life", labels={"a": "b"})
    await ctl.create(
        sandbox_pb.ControllerCreateRequest(
            sandbox_id="life",
            sandboxer="shim",
            sandbox=SandboxPb(sandbox_id="life", **_rt(), spec=SPEC, labels={"a": "b"}),
        )
    )
    started = await ctl.start(
        sandbox_pb.ControllerStartRequest(sandbox_id="life", sandboxer="pysandbox")
    )
    assert started.pid > 0
    assert started.labels == {"a": "b"}
    waited = await ctl.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="life", sandboxer="shim"))
    assert waited.exit_status == 3
    status = await ctl.status(
        sandbox_pb.ControllerStatusRequest(sandbox_id="life", sandboxer="shim")
    )
    assert status.state == "SANDBOX_NOTREADY"
    await ctl.update(
        sandbox_pb.ControllerUpdateRequest(
            sandbox_id="life",
            sandboxer="shim",
            sandbox=SandboxPb(**_rt(), labels={"x": "y"}),
            fields=["labels"],
        )
    )
    await ctl.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="life", sandboxer="shim"))
    await expect_error(
        ctl.status(sandbox_pb.ControllerStatusRequest(sandbox_id="life", sandboxer="shim")),
        Status.NOT_FOUND,
    )
    # The store record is the client's to delete.
    assert client.fake.sandbox_ids(NS) == ["life"]


async def test_controller_namespaces_are_isolated(client: Client) -> None:
    request = sandbox_pb.ControllerCreateRequest(
        sandbox_id="iso", sandboxer="shim", sandbox=SandboxPb(sandbox_id="iso", **_rt())
    )
    await client.controller("ns-a").create(request)
    await expect_error(
        client.controller("ns-b").start(
            sandbox_pb.ControllerStartRequest(sandbox_id="iso", sandboxer="shim")
        ),
        Status.NOT_FOUND,
    )
    await client.controller("ns-b").create(request)
    await client.create("iso", namespace="ns-a")
    assert await client.ids(namespace="ns-b") == []
    assert client.fake.sandbox_ids("ns-a") == ["iso"]
    assert client.fake.sandbox_ids("ns-b") == []


# --- containers -----------------------------------------------------------------------------


def _container(container_id: str, **fields: Any) -> containers_pb.Container:
    fields.setdefault("runtime", containers_pb.ContainerRuntime(name=RUNTIME))
    fields.setdefault("spec", AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b"{}"))
    return containers_pb.Container(id=container_id, **fields)


async def test_container_validation(client: Client) -> None:
    ctr = client.containers()

    async def create(container: containers_pb.Container | None) -> None:
        await ctr.create(containers_pb.CreateContainerRequest(container=container))

    prefix = "create container failed validation: "
    cases: list[tuple[containers_pb.Container, str]] = [
        (
            _container("bad id/!"),
            f'container.ID: identifier "bad id/!" must match {NAMESPACE_PATTERN}',
        ),
        (_container(""), "container.ID: identifier must not be empty"),
        (
            _container("c", extensions={"": AnyPb()}),
            "container.Extension keys must not be zero-length",
        ),
        (
            _container("c", runtime=containers_pb.ContainerRuntime()),
            "container.Runtime.Name must be set",
        ),
        (containers_pb.Container(id="c", spec=AnyPb()), "container.Runtime.Name must be set"),
        (
            _container("c", snapshot_key="k"),
            "container.Snapshotter must be set if container.SnapshotKey is set",
        ),
    ]
    for container, message in cases:
        await expect_error(
            create(container), Status.INVALID_ARGUMENT, f"{prefix}{message}: invalid argument"
        )
    message = await expect_error(
        create(_container("c", labels={"k": "v" * 5000})), Status.INVALID_ARGUMENT
    )
    assert message.startswith(
        f"{prefix}containers.Labels: label key and value length (5001 bytes) greater than "
        "maximum size (4096 bytes), key: k"
    )
    # No container at all would crash containerd's conversion: refused.
    await expect_error(create(None), Status.INVALID_ARGUMENT)
    assert client.fake.container_ids(NS) == []
    # The 4096-byte limit is inclusive.
    await create(
        _container("ok", labels={"k": "v" * 4095}, snapshotter="overlayfs", snapshot_key="k")
    )
    # containerd 2.1.9 accepts a container without a spec (its spec check never fires).
    await create(_container("nospec", spec=None))
    got = await ctr.get(containers_pb.GetContainerRequest(id="nospec"))
    assert got.container is not None
    assert got.container.spec is None
    assert client.fake.container_ids(NS) == ["nospec", "ok"]


async def test_container_records(client: Client) -> None:
    ctr = client.containers()
    before = datetime.now(UTC) - timedelta(seconds=1)
    created = await ctr.create(
        containers_pb.CreateContainerRequest(
            container=_container(
                "c1", labels={"role": "app", "empty": ""}, image="img", sandbox="sb1"
            )
        )
    )
    assert created.container is not None
    assert created.container.labels == {"role": "app"}
    assert created.container.sandbox == "sb1"
    assert created.container.created_at is not None
    assert created.container.created_at >= before
    await expect_error(
        ctr.create(containers_pb.CreateContainerRequest(container=_container("c1"))),
        Status.ALREADY_EXISTS,
        'container "c1": already exists',
    )
    await ctr.create(
        containers_pb.CreateContainerRequest(container=_container("c2", image="other"))
    )
    got = await ctr.get(containers_pb.GetContainerRequest(id="c1"))
    assert got.container is not None
    assert got.container.image == "img"
    await expect_error(
        ctr.get(containers_pb.GetContainerRequest(id="nope")),
        Status.NOT_FOUND,
        'container "nope" in namespace "default": not found',
    )

    async def listed(*filters: str) -> list[str]:
        answer = await ctr.list(containers_pb.ListContainersRequest(filters=list(filters)))
        return [c.id for c in answer.containers]

    assert await listed("labels.role==app") == ["c1"]
    assert await listed("image==other", "id==c1") == ["c1", "c2"]
    assert await listed(f"runtime.name=={RUNTIME}") == ["c1", "c2"]
    streamed = [
        m.container.id
        async for m in ctr.list_stream(containers_pb.ListContainersRequest())
        if m.container is not None
    ]
    assert streamed == ["c1", "c2"]
    await expect_error(listed("labels.=="), Status.INVALID_ARGUMENT)

    # Update with a field mask, then without one (immutable fields are checked).
    updated = await ctr.update(
        containers_pb.UpdateContainerRequest(
            container=_container("c1", labels={"role": "db"}, image="ignored"),
            update_mask=FieldMaskPb(paths=["labels.role"]),
        )
    )
    assert updated.container is not None
    assert updated.container.labels == {"role": "db"}
    assert updated.container.image == "img"
    assert updated.container.created_at == created.container.created_at
    await expect_error(
        ctr.update(
            containers_pb.UpdateContainerRequest(
                container=_container("c1"), update_mask=FieldMaskPb(paths=["runtime"])
            )
        ),
        Status.INVALID_ARGUMENT,
        'cannot update "runtime" field on "c1": invalid argument',
    )
    await expect_error(
        ctr.update(
            containers_pb.UpdateContainerRequest(
                container=_container("c1", runtime=containers_pb.ContainerRuntime(name="x"))
            )
        ),
        Status.INVALID_ARGUMENT,
        "container.Runtime.Name field is immutable: invalid argument",
    )
    message = await expect_error(
        ctr.update(
            containers_pb.UpdateContainerRequest(
                container=_container("c1", labels={"k": "v" * 5000}),
                update_mask=FieldMaskPb(paths=["labels"]),
            )
        ),
        Status.INVALID_ARGUMENT,
    )
    assert message.startswith("update failed validation: containers.Labels: ")
    # An unset spec leaves the stored one, though the answer shows none.
    answer = await ctr.update(
        containers_pb.UpdateContainerRequest(
            container=_container("c1", spec=None), update_mask=FieldMaskPb(paths=["spec"])
        )
    )
    assert answer.container is not None
    assert answer.container.spec is None
    kept = await ctr.get(containers_pb.GetContainerRequest(id="c1"))
    assert kept.container is not None
    assert kept.container.spec is not None
    replaced = await ctr.update(
        containers_pb.UpdateContainerRequest(container=_container("c1", image="new"))
    )
    assert replaced.container is not None
    assert replaced.container.image == "new"
    assert replaced.container.labels == {}
    await expect_error(
        ctr.update(containers_pb.UpdateContainerRequest(container=_container(""))),
        Status.INVALID_ARGUMENT,
        "Container.ID required",
    )
    await expect_error(
        ctr.update(containers_pb.UpdateContainerRequest(container=_container("nope"))),
        Status.NOT_FOUND,
        'container "nope": not found',
    )

    await ctr.delete(containers_pb.DeleteContainerRequest(id="c1"))
    await expect_error(
        ctr.delete(containers_pb.DeleteContainerRequest(id="c1")),
        Status.NOT_FOUND,
        "container c1: not found",
    )
    assert client.fake.container_ids(NS) == ["c2"]
    # Another namespace sees nothing; before its first record the messages differ.
    other = client.containers("other")
    await expect_error(
        other.delete(containers_pb.DeleteContainerRequest(id="c2")),
        Status.NOT_FOUND,
        'cannot delete container "c2" in namespace "other": not found',
    )
    assert (await other.list(containers_pb.ListContainersRequest())).containers == []
    assert client.fake.container_ids("other") == []


# --- the stand-in itself ----------------------------------------------------------------------


async def test_stall_holds_every_call_until_released(client: Client) -> None:
    client.fake.stall = True
    assert client.fake.stall
    store = sandbox_pb.StoreStub(client.channel, metadata={"containerd-namespace": NS})
    with pytest.raises((TimeoutError, GRPCError)) as info:
        await store.list(sandbox_pb.StoreListRequest(), timeout=0.3)
    if isinstance(info.value, GRPCError):
        assert info.value.status is Status.DEADLINE_EXCEEDED
    held = asyncio.create_task(store.list(sandbox_pb.StoreListRequest(), timeout=30))
    await asyncio.wait_for(client.fake.wait_for_call("Store/List", 2), 10)
    assert not held.done()
    client.fake.stall = False
    assert (await asyncio.wait_for(held, 10)).list == []


async def test_calls_are_counted_as_they_arrive(client: Client) -> None:
    fake = client.fake
    ctl = client.controller()
    assert fake.call_count("Wait") == 0
    await ctl.create(
        sandbox_pb.ControllerCreateRequest(
            sandbox_id="cc", sandboxer="shim", sandbox=SandboxPb(sandbox_id="cc", **_rt())
        )
    )
    await ctl.start(sandbox_pb.ControllerStartRequest(sandbox_id="cc", sandboxer="shim"))
    waiter = asyncio.create_task(
        ctl.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="cc", sandboxer="shim"))
    )
    await asyncio.wait_for(fake.wait_for_call("Controller/Wait"), 10)
    assert not waiter.done()
    for name in ("Wait", "Controller/Wait", "/containerd.services.sandbox.v1.Controller/Wait"):
        assert fake.call_count(name) == 1, name
    await client.create("cc")
    assert fake.call_count("Store/Create") == 1
    assert fake.call_count("Create") == 2  # the Store's and the Controller's
    # Refused calls have arrived too, and so have calls for a sandboxer nobody serves.
    await expect_error(
        client.store(None).get(sandbox_pb.StoreGetRequest()), Status.FAILED_PRECONDITION
    )
    await expect_error(
        ctl.status(sandbox_pb.ControllerStatusRequest(sandbox_id="cc", sandboxer="bogus")),
        Status.NOT_FOUND,
    )
    assert fake.call_count("Store/Get") == 1
    assert fake.call_count("Status") == 1
    await ctl.stop(sandbox_pb.ControllerStopRequest(sandbox_id="cc", sandboxer="shim"))
    assert (await asyncio.wait_for(waiter, 10)).exit_status == 128 + 15
    await ctl.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="cc", sandboxer="shim"))
    await asyncio.wait_for(fake.wait_for_call("Wait", 1), 1)  # reached already: at once


async def test_start_close_and_files() -> None:
    before = live_tasks()
    fake = FakeContainerd()
    with pytest.raises(RuntimeError):
        _ = fake.address
    assert await fake.start() is fake
    address = fake.address
    folder = os.path.dirname(address)
    assert exists(address)
    assert fake.sandboxers == frozenset({"shim"})
    with pytest.raises(RuntimeError):
        await fake.start()
    # An owned controller's children die with the stand-in.
    async with Channel(path=address) as channel:
        ctl = sandbox_pb.ControllerStub(channel, metadata={"containerd-namespace": NS})
        await ctl.create(
            sandbox_pb.ControllerCreateRequest(
                sandbox_id="k", sandboxer="shim", sandbox=SandboxPb(**_rt())
            )
        )
        started = await ctl.start(
            sandbox_pb.ControllerStartRequest(sandbox_id="k", sandboxer="shim")
        )
        waiter = asyncio.create_task(
            ctl.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="k", sandboxer="shim"))
        )
        await asyncio.wait_for(fake.wait_for_call("Controller/Wait"), 10)
        await fake.aclose()
        await fake.aclose()  # idempotent
        with pytest.raises((GRPCError, StreamTerminatedError)):
            await waiter  # the call in progress ended with the server
    assert not exists(address)
    assert not exists(folder)
    with pytest.raises(ProcessLookupError):
        os.kill(started.pid, 0)
    assert live_tasks() - before - {asyncio.current_task()} == set()


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fk-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_given_path_and_controller_are_used_not_closed(short_dir: str) -> None:
    closed: list[bool] = []

    class Mine(SandboxController):
        async def aclose(self) -> None:
            closed.append(True)

        async def status(
            self, message: sandbox_pb.ControllerStatusRequest
        ) -> sandbox_pb.ControllerStatusResponse:
            return sandbox_pb.ControllerStatusResponse(sandbox_id=message.sandbox_id, state="MINE")

    path = os.path.join(short_dir, "c.sock")
    mine = Mine()
    async with (
        FakeContainerd(sandboxers=["mine"], controller=mine, path=path) as fake,
        Channel(path=path) as channel,
    ):
        assert fake.address == path
        assert fake.controller is mine
        ctl = sandbox_pb.ControllerStub(channel, metadata={"containerd-namespace": NS})
        answer = await ctl.status(
            sandbox_pb.ControllerStatusRequest(sandbox_id="s", sandboxer="mine")
        )
        assert answer.state == "MINE"
        await expect_error(
            ctl.start(sandbox_pb.ControllerStartRequest(sandbox_id="s", sandboxer="mine")),
            Status.UNIMPLEMENTED,
        )
    assert closed == []
    assert not exists(path)
    assert isdir(short_dir)


async def test_namespace_labels(client: Client) -> None:
    stub = namespaces_pb.NamespacesStub(client.channel, timeout=30)
    got = await stub.get(namespaces_pb.GetNamespaceRequest(name="never-written"))
    assert got.namespace == namespaces_pb.Namespace(name="never-written", labels={})
    created = await stub.create(
        namespaces_pb.CreateNamespaceRequest(
            namespace=namespaces_pb.Namespace(name="n1", labels={"a": "1", "b": "2"})
        )
    )
    assert created.namespace == namespaces_pb.Namespace(name="n1", labels={"a": "1", "b": "2"})
    await expect_error(
        stub.create(
            namespaces_pb.CreateNamespaceRequest(namespace=namespaces_pb.Namespace(name="n1"))
        ),
        Status.ALREADY_EXISTS,
        'namespace "n1": already exists',
    )
    await client.create("s1")  # a namespace holding records exists too
    await expect_error(
        stub.create(
            namespaces_pb.CreateNamespaceRequest(namespace=namespaces_pb.Namespace(name=NS))
        ),
        Status.ALREADY_EXISTS,
        f'namespace "{NS}": already exists',
    )
    await expect_error(
        stub.create(
            namespaces_pb.CreateNamespaceRequest(namespace=namespaces_pb.Namespace(name="Bad_NS!"))
        ),
        Status.INVALID_ARGUMENT,
        f'identifier "Bad_NS!" must match {NAMESPACE_PATTERN}: invalid argument',
    )
    # Named labels are set or (empty) removed; no paths replaces them all.
    await stub.update(
        namespaces_pb.UpdateNamespaceRequest(
            namespace=namespaces_pb.Namespace(name="n1", labels={"a": "", "c": "3"}),
            update_mask=FieldMaskPb(paths=["labels.a", "labels.c"]),
        )
    )
    got = await stub.get(namespaces_pb.GetNamespaceRequest(name="n1"))
    assert got.namespace is not None
    assert got.namespace.labels == {"b": "2", "c": "3"}
    await stub.update(
        namespaces_pb.UpdateNamespaceRequest(
            namespace=namespaces_pb.Namespace(name="n1", labels={"d": "4"})
        )
    )
    got = await stub.get(namespaces_pb.GetNamespaceRequest(name="n1"))
    assert got.namespace is not None
    assert got.namespace.labels == {"d": "4"}
    await expect_error(
        stub.update(
            namespaces_pb.UpdateNamespaceRequest(
                namespace=namespaces_pb.Namespace(name="n1"),
                update_mask=FieldMaskPb(paths=["labels"]),
            )
        ),
        Status.INVALID_ARGUMENT,
        'cannot update "labels" field',
    )
    await expect_error(
        stub.update(
            namespaces_pb.UpdateNamespaceRequest(
                namespace=namespaces_pb.Namespace(name="n1", labels={"k": "v" * 5000})
            )
        ),
        Status.INVALID_ARGUMENT,
        "namespace.Labels: label key and value length (5001 bytes) greater than maximum size "
        "(4096 bytes): invalid argument",
    )
