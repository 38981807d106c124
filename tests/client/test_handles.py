"""The 1.0 surface's promises, on the stand-in and a real daemon: asyncio's signal verbs,
records and handles that line up for sandboxes and containers, one way to make a member
container, decoded metrics, and the argument-error rule."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import sandboxclient
from sandboxclient import (
    Client,
    ContainerdError,
    ContainerInfo,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    Process,
    SandboxInfo,
    SandboxMetrics,
    events,
    oci,
)
from sandboxclient.sandboxer import SandboxController, messages
from sandboxclient.testing import FakeContainerd
from tests.support.constants import RUNTIME
from tests.support.helpers import args_spec

pytestmark = pytest.mark.anyio


# -- asyncio's verbs -----------------------------------------------------------------------------


async def test_kill_is_sigkill_terminate_sigterm_and_send_signal_any(
    client: Client, root: Path
) -> None:
    made = await client.new_container(
        "sig1", rootfs=root, spec=oci.generate_spec(oci.with_process_args("sleep", "60"))
    )
    try:
        task = await made.new_task()
        await task.start()
        verbs: list[tuple[Callable[[Process], Awaitable[None]], int]] = [
            (lambda p: p.kill(), 128 + signal.SIGKILL),
            (lambda p: p.terminate(), 128 + signal.SIGTERM),
            (lambda p: p.send_signal(signal.SIGUSR1), 128 + signal.SIGUSR1),
        ]
        for verb, code in verbs:
            process = await task.spawn("sleep", "60")
            channel = await process.wait()
            await verb(process)
            assert (await channel.get()).returncode == code
            assert (await process.delete()).returncode == code
            assert process.returncode == code
        with pytest.raises(ValueError, match="signal"):
            await task.send_signal(0)
        await task.kill(all_processes=True)
        assert (await task.wait_exit()).returncode == 128 + signal.SIGKILL
    finally:
        await made.delete(force=True)


def test_plumbing_is_not_public() -> None:
    for name in ("io_attached", "close_io", "state_or_none"):
        assert not hasattr(sandboxclient.Process, name), name
    assert not hasattr(sandboxclient.Task, "process_spec")
    for name in ("TaskInfo", "SandboxDraft", "UseClientDefault", "TaskExit", "Metric_of"):
        assert not hasattr(sandboxclient, name), name
    assert all(hasattr(sandboxclient, name) for name in sandboxclient.__all__)
    # About 110 names before the 1.0 shape; images, files, networks and pools since added
    # their handles and records. Plumbing must not creep back in.
    assert len(sandboxclient.__all__) < 90
    # The event payloads live in their own public module, as the errors do.
    assert sandboxclient.events is events
    assert all(hasattr(events, name) for name in events.__all__)
    assert {"Event", "EventsLagged", "EventsReconnected", "TaskExit"} <= set(events.__all__)
    assert "returncode" in {f.name for f in events.TaskExit.__dataclass_fields__.values()}


# -- records and handles -------------------------------------------------------------------------


async def test_records_and_handles_line_up_for_sandboxes_and_containers(
    client: Client, root: Path
) -> None:
    sb = await client.new_sandbox("rh1", runtime=RUNTIME, spec=args_spec("sleep", "60"))
    await sb.start()
    member = await sb.new_container("rh1-c1", rootfs=root, spec=oci.generate_spec())
    alone = await client.new_container("rh2", rootfs=root, spec=oci.generate_spec())

    record = await client.get_sandbox("rh1")
    assert isinstance(record, SandboxInfo)
    assert client.sandbox_handle(record).id == (await client.load_sandbox("rh1")).id == "rh1"
    assert [s.id for s in await client.list_sandboxes()] == ["rh1"]

    got = await client.get_container("rh1-c1")
    assert isinstance(got, ContainerInfo)
    assert (got.sandbox_id, got.runtime.name) == ("rh1", RUNTIME)
    assert client.container_handle(got).id == (await client.load_container("rh1-c1")).id
    # The sandbox's members are records, as the Client's listing is.
    members = await sb.list_containers()
    assert [(type(m), m.id) for m in members] == [(ContainerInfo, member.id)]
    listed = {c.id for c in await client.list_containers()}
    assert {"rh1-c1", "rh2"} <= listed

    # Deletes, like Go's, say when there was nothing to delete.
    await client.delete_container("rh2")
    with pytest.raises(NotFoundError):
        await client.get_container("rh2")
    with pytest.raises(NotFoundError):
        await client.delete_container("rh2")
    with pytest.raises(NotFoundError):
        await alone.delete()

    # delete_sandbox is a whole shutdown: the member goes, the controller's sandbox too.
    await client.delete_sandbox("rh1")
    assert await client.list_sandboxes() == []
    with pytest.raises(NotFoundError):
        await client.get_container("rh1-c1")
    with pytest.raises(NotFoundError):
        await sb.status()
    with pytest.raises(NotFoundError):
        await client.delete_sandbox("rh1")
    await sb.shutdown()  # the handle's clean-up stays idempotent


async def test_a_member_container_is_made_one_way(client: Client, root: Path) -> None:
    assert "sandbox" not in Client.new_container.__code__.co_varnames
    sb = await client.new_sandbox("one1", runtime=RUNTIME, spec=args_spec("sleep", "60"))
    await sb.start()
    member = await sb.new_container("one1-c", rootfs=root, spec=oci.generate_spec())
    assert (member.sandbox_id, member.metadata.runtime.name) == ("one1", RUNTIME)
    await sb.shutdown()
    with pytest.raises(NotFoundError):
        await client.get_container("one1-c")


# -- metrics ---------------------------------------------------------------------------------------


class _OddMetrics(SandboxController):
    """A controller whose metrics are of a type no client decodes."""

    async def create(
        self, message: messages.ControllerCreateRequest
    ) -> messages.ControllerCreateResponse:
        return messages.ControllerCreateResponse(sandbox_id=message.sandbox_id)

    async def metrics(
        self, message: messages.ControllerMetricsRequest
    ) -> messages.ControllerMetricsResponse:
        data = messages.Any(type_url="example.com/Odd", value=b"\x01")
        odd = messages.Metric(id=message.sandbox_id, data=data)
        return messages.ControllerMetricsResponse(metrics=odd)

    async def shutdown(
        self, message: messages.ControllerShutdownRequest
    ) -> messages.ControllerShutdownResponse:
        return messages.ControllerShutdownResponse()


async def test_metrics_are_decoded_or_an_internal_error_naming_the_type() -> None:
    async with (
        FakeContainerd(controller=_OddMetrics(), sandboxers=("odd",)) as fake,
        Client(fake.address, sandboxer="odd") as client,
    ):
        sb = await client.new_sandbox("m1", runtime=RUNTIME)
        with pytest.raises(InternalError, match=r"example\.com/Odd"):
            await sb.metrics()
        with pytest.raises(InternalError, match=r'sandbox "m1": .*example\.com/Odd'):
            await client.controller().metrics("m1")
        await sb.shutdown()
    async with FakeContainerd() as fake, Client(fake.address) as client:
        sb = await client.new_sandbox("m2", runtime=RUNTIME, spec=args_spec("sleep", "60"))
        await sb.start()
        usage = await sb.metrics()
        assert isinstance(usage, SandboxMetrics)
        assert usage.memory_usage_bytes > 0
        await sb.shutdown()


# -- the argument-error rule -----------------------------------------------------------------------


async def test_what_the_client_refuses_is_a_value_error_what_the_daemon_refuses_is_its_error(
    client: Client,
) -> None:
    for bad in ("", "bad id", "-x", "a" * 77):
        with pytest.raises(ValueError, match=r"namespace|identifier") as caught:
            Client("/nonexistent.sock", namespace=bad)
        assert not isinstance(caught.value, ContainerdError)
    with pytest.raises(ValueError, match="sandboxer") as caught:
        Client("/nonexistent.sock", sandboxer="")
    assert not isinstance(caught.value, ContainerdError)
    for call in (
        client.new_sandbox("bad id", runtime=RUNTIME),
        client.new_sandbox("ok1", runtime=RUNTIME, labels={"": "v"}),
        client.new_sandbox("ok1", runtime=RUNTIME, sandboxer=""),
    ):
        with pytest.raises(ValueError, match=r"identifier|label|sandboxer") as caught:
            await call
        assert not isinstance(caught.value, ContainerdError), caught.value
    # A filter only the daemon parses: its refusal is the daemon's error, still a ValueError.
    with pytest.raises(InvalidArgumentError) as refused:
        await client.list_sandboxes("labels.==")
    assert isinstance(refused.value, ValueError)
    assert await client.list_sandboxes() == []
