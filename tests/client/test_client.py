"""The public client, run against the stand-in and the real daemon alike."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from datetime import UTC, datetime, timedelta

import pytest

from sandboxclient import (
    AlreadyExistsError,
    AnyValue,
    CanceledError,
    Client,
    ClientClosedError,
    ClientState,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    Sandbox,
    SandboxInfo,
    SandboxMetrics,
    SandboxState,
    UnimplementedError,
)
from tests.support.backends import Backend
from tests.support.constants import RUNTIME
from tests.support.helpers import args_spec, tasks_since, until

pytestmark = pytest.mark.anyio


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_full_lifecycle(client: Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    sb = await client.new_sandbox("life1", labels={"a": "b"}, runtime=RUNTIME)
    assert isinstance(sb, Sandbox)
    assert sb.id == "life1"
    info = sb.metadata
    assert isinstance(info, SandboxInfo)
    assert info.labels == {"a": "b"}
    assert info.runtime.name == RUNTIME
    assert info.runtime.options == AnyValue("google.protobuf.Empty", b"")
    assert info.sandboxer == client.sandboxer
    assert info.created_at is not None
    assert info.created_at.tzinfo is not None
    assert info.created_at >= before
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.id = "x"  # type: ignore[misc]

    assert await sb.labels() == {"a": "b"}

    started = await sb.start()
    assert started.pid > 0
    assert sb.pid == started.pid
    assert _pid_alive(started.pid)
    status = await sb.status()
    assert status.state is SandboxState.READY
    assert status.ready

    channel = await sb.wait()
    assert not channel.done()
    await sb.stop(grace=5)
    exit_status = await asyncio.wait_for(channel.get(), 20)
    assert exit_status.error is None
    assert exit_status.returncode == 143  # SIGTERM, reported as 128 + 15
    assert exit_status.exited_at is not None
    assert exit_status.exited_at.tzinfo is not None
    assert channel.done()
    assert (await sb.status()).state is SandboxState.NOTREADY

    loaded = await client.load_sandbox("life1")
    assert loaded.metadata.labels == {"a": "b"}
    assert [s.id for s in await client.list_sandboxes("labels.a==b")] == ["life1"]

    await sb.shutdown()
    await sb.shutdown()  # idempotent
    with pytest.raises(NotFoundError):
        await client.load_sandbox("life1")
    assert await client.list_sandboxes() == []


async def test_exit_code_reaches_the_channel_and_a_late_wait(client: Client) -> None:
    sb = await client.new_sandbox("exit3", spec=args_spec("sh", "-c", "exit 3"), runtime=RUNTIME)
    channel = await sb.wait()
    await sb.start()
    first = await asyncio.wait_for(channel, 20)
    assert first.returncode == 3
    assert first.error is None
    late = await asyncio.wait_for((await sb.wait()).get(), 20)
    assert late.returncode == 3
    assert late.exited_at == first.exited_at
    await sb.shutdown()


async def test_channel_is_iterable_once_and_repeats_its_value(client: Client) -> None:
    sb = await client.new_sandbox("iter1", spec=args_spec("true"), runtime=RUNTIME)
    await sb.start()
    channel = await sb.wait()
    items = [item async for item in channel]
    assert len(items) == 1
    assert items[0].returncode == 0
    assert await channel.get() is items[0]
    assert channel.result() is items[0]
    # The queue got the same status, exactly once, for code that reads queues.
    assert channel.queue.qsize() == 1
    assert channel.queue.get_nowait() is items[0]
    await sb.shutdown()


async def test_closing_a_channel_cancels_its_task(client: Client) -> None:
    sb = await client.new_sandbox("close1", runtime=RUNTIME)
    await sb.start()
    channel = await sb.wait()
    await asyncio.sleep(0)
    channel.close()
    status = await asyncio.wait_for(channel.get(), 5)
    assert status.returncode == 255
    assert isinstance(status.error, CanceledError)
    assert "closed" in str(status.error)
    await sb.shutdown()


async def test_closing_the_client_ends_every_wait(backend: Backend) -> None:
    before = asyncio.all_tasks()
    client = backend.client()
    sb = await client.new_sandbox("cc1", runtime=RUNTIME)
    await sb.start()
    seen = backend.calls("Controller/Wait")
    channels = [await sb.wait() for _ in range(5)]
    await backend.wait_for_call("Controller/Wait", seen + 1)  # the shared Wait is in flight
    await client.aclose()
    await client.aclose()
    assert client.state is ClientState.CLOSED
    for channel in channels:
        status = channel.result()
        assert status.returncode == 255
        assert isinstance(status.error, ClientClosedError)
        assert "client was closed" in str(status.error)
    assert tasks_since(before) == set()
    async with backend.client() as other:
        await (await other.load_sandbox("cc1")).shutdown()


async def test_calls_on_a_closed_client_raise(backend: Backend) -> None:
    client = backend.client()
    await client.aclose()
    with pytest.raises(ClientClosedError):
        await client.list_sandboxes()


async def test_empty_id_is_refused_before_any_call() -> None:
    # The socket does not exist: reaching it would raise UnavailableError instead.
    async with Client("/nonexistent/containerd.sock") as client:
        with pytest.raises(ValueError, match="sandbox ID must be specified"):
            await client.new_sandbox("")


@pytest.mark.parametrize("bad_id", ["bad id/!", "-lead", "a" * 77, "trail.", "ü"])
async def test_bad_ids_are_invalid_arguments(client: Client, bad_id: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        await client.new_sandbox(bad_id, runtime=RUNTIME)
    assert await client.list_sandboxes() == []


async def test_duplicate_id_already_exists(client: Client) -> None:
    sb = await client.new_sandbox("dup1", runtime=RUNTIME)
    with pytest.raises(AlreadyExistsError, match="already exists"):
        await client.new_sandbox("dup1", runtime=RUNTIME)
    await sb.shutdown()


async def test_unknown_sandboxer_leaves_no_store_record(client: Client) -> None:
    with pytest.raises(NotFoundError, match="bogus"):
        await client.new_sandbox("orphan1", sandboxer="bogus", runtime=RUNTIME)
    assert await client.list_sandboxes() == []


async def test_missing_sandbox_is_not_found_and_a_lookup_error(client: Client) -> None:
    with pytest.raises(LookupError):
        await client.load_sandbox("nope")
    with pytest.raises(NotFoundError):
        await client.get_sandbox("nope")


async def test_list_filters(client: Client) -> None:
    one = await client.new_sandbox("f1", labels={"team": "a", "tier": "x"}, runtime=RUNTIME)
    two = await client.new_sandbox("f2", labels={"team": "b"}, runtime=RUNTIME)
    assert sorted(s.id for s in await client.list_sandboxes()) == ["f1", "f2"]
    assert [s.id for s in await client.list_sandboxes("labels.team==b")] == ["f2"]
    assert [s.id for s in await client.list_sandboxes("id==f1")] == ["f1"]
    both = await client.list_sandboxes("labels.team==a", "labels.team==b")
    assert sorted(s.id for s in both) == ["f1", "f2"]
    with pytest.raises(InvalidArgumentError):
        await client.list_sandboxes("labels.==")
    await one.shutdown()
    await two.shutdown()


async def test_update_labels_and_extensions(client: Client) -> None:
    sb = await client.new_sandbox("upd1", labels={"a": "1", "b": "2"}, runtime=RUNTIME)
    info = await sb.update(labels={"a": "9"})
    assert info.labels == {"a": "9"}
    assert await sb.labels() == {"a": "9"}
    info = await sb.update(labels={"c": "3"}, fields=["labels.c"])
    assert info.labels == {"a": "9", "c": "3"}
    info = await sb.update(extensions={"note": ("example.com/Note", b"\x01\x02")})
    assert info.extensions["note"] == AnyValue("example.com/Note", b"\x01\x02")
    assert info.updated_at is not None
    assert sb.metadata.created_at is not None
    assert info.updated_at >= sb.metadata.created_at
    with pytest.raises(InvalidArgumentError, match="bogus"):
        await sb.update(labels={"x": "y"}, fields=["bogus"])
    await sb.shutdown()


async def test_spec_and_extensions_round_trip(client: Client) -> None:
    spec = {"ociVersion": "1.2.0", "process": {"args": ["sleep", "60"], "cwd": "/"}}
    sb = await client.new_sandbox(
        "spec1",
        runtime=RUNTIME,
        runtime_options=("example.com/Options", b"opt"),
        spec={**spec, "annotations": {"k": "v"}},
        extensions={"ext": ("example.com/Ext", b"\x00\xff")},
    )
    loaded = await client.get_sandbox("spec1")
    assert loaded.spec is not None
    assert loaded.spec["process"] == spec["process"]
    assert loaded.spec["annotations"] == {"k": "v"}
    assert loaded.runtime.options == AnyValue("example.com/Options", b"opt")
    assert loaded.extensions == {"ext": AnyValue("example.com/Ext", b"\x00\xff")}
    await sb.shutdown()


async def test_new_container_belongs_to_the_sandbox(client: Client) -> None:
    sb = await client.new_sandbox("own1", runtime=RUNTIME, spec=args_spec("sleep", "60"))
    with pytest.raises(FailedPreconditionError, match="start it first"):
        await sb.new_container("c0")
    started = await sb.start()
    container = await sb.new_container("c1", labels={"role": "app"})
    info = container.metadata
    assert container.id == "c1"
    assert container.sandbox_id == "own1"
    assert info.runtime.name == RUNTIME
    assert info.labels == {"role": "app"}
    assert info.created_at is not None
    assert info.created_at.tzinfo is not None
    # A pod's container joins the sandbox's network, IPC and UTS namespaces.
    assert info.spec is not None
    joined = {n["type"]: n.get("path") for n in info.spec["linux"]["namespaces"]}
    for kind, name in (("network", "net"), ("ipc", "ipc"), ("uts", "uts")):
        assert joined[kind] == f"/proc/{started.pid}/ns/{name}"
    assert joined["pid"] is None
    with pytest.raises(AlreadyExistsError):
        await sb.new_container("c1")
    with pytest.raises(ValueError, match="4096"):
        await sb.new_container("c2", labels={"k": "v" * 5000})
    assert [c.id for c in await sb.list_containers()] == ["c1"]
    await sb.shutdown()
    # The sandbox's containers go with it.
    assert await client.list_containers() == []


async def test_namespaces_are_isolated(backend: Backend) -> None:
    async with backend.client() as a, backend.client(namespace=backend.namespace + "-b") as b:
        sb = await a.new_sandbox("iso1", runtime=RUNTIME)
        assert await b.list_sandboxes() == []
        with pytest.raises(NotFoundError):
            await b.load_sandbox("iso1")
        other = await b.new_sandbox("iso1", runtime=RUNTIME)  # same id, other namespace
        await other.shutdown()
        assert [s.id for s in await a.list_sandboxes()] == ["iso1"]
        await sb.shutdown()


async def test_status_before_start_and_after_exit(client: Client) -> None:
    sb = await client.new_sandbox("st1", runtime=RUNTIME, spec=args_spec("true"))
    await sb.start()
    status = await asyncio.wait_for((await sb.wait()).get(), 20)
    assert status.returncode == 0
    after = await sb.status(verbose=True)
    assert after.state is SandboxState.NOTREADY
    assert after.exited_at is not None
    await sb.shutdown()


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [({"": "v"}, "must not be empty"), ({"k": "v" * 4096}, "greater than maximum size")],
)
async def test_bad_labels_are_refused_before_the_store(
    client: Client, labels: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        await client.new_sandbox("lab1", labels=labels, runtime=RUNTIME)
    assert await client.list_sandboxes() == []
    sb = await client.new_sandbox("lab1", runtime=RUNTIME)
    with pytest.raises(ValueError, match=fragment):
        await sb.update(labels=labels)
    assert await sb.labels() == {}
    await sb.shutdown()


async def test_metrics_and_platform(client: Client) -> None:
    sb = await client.new_sandbox("met1", runtime=RUNTIME)
    await sb.start()
    usage = await sb.metrics()
    assert isinstance(usage, SandboxMetrics)
    assert usage.memory_usage_bytes > 0
    assert usage.cpu_usage_seconds >= 0
    if client.sandboxer == "shim":  # the stand-in's process sandboxer: one process's figures
        assert usage.source == "types.sandboxclient.io/process-metrics"
    else:  # the isolating sandboxer: its task's cgroup, decoded
        assert usage.source.startswith("io.containerd.cgroups.")
        assert usage.pids is not None
        assert usage.pids >= 1
    # containerd 2.1's controller service has no Platform method; the stand-in agrees.
    with pytest.raises(UnimplementedError):
        await sb.platform()
    await sb.shutdown()
    with pytest.raises(NotFoundError):
        await sb.metrics()


@pytest.mark.parametrize(
    ("grace", "error"),
    [(-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), (2**32, ValueError)],
)
async def test_stop_refuses_a_grace_containerd_cannot_carry(
    client: Client, grace: float, error: type[Exception]
) -> None:
    sb = await client.new_sandbox("grace1", runtime=RUNTIME)
    await sb.start()
    with pytest.raises(error, match="stop grace"):
        await sb.stop(grace=grace)
    assert (await sb.status()).ready
    await sb.shutdown()


def _ignores_sigterm(pid: int) -> bool:
    """Whether ``pid`` ignores SIGTERM (its ``SigIgn`` mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        ignored = next(line for line in f if line.startswith("SigIgn:")).split()[1]
    return bool(int(ignored, 16) & 1 << (signal.SIGTERM - 1))


async def test_stop_rounds_a_fractional_grace_up(client: Client) -> None:
    # A process that ignores SIGTERM is killed after the grace: 0.2 s becomes 1 s, not 0.
    sb = await client.new_sandbox(
        "grace2", runtime=RUNTIME, spec=args_spec("sh", "-c", "trap '' TERM; sleep 60")
    )
    started = await sb.start()
    channel = await sb.wait()
    # A stop before the shell has run its trap ends it by SIGTERM (143); nothing signals
    # the trap, so its disposition is looked at in /proc.
    await until(lambda: _ignores_sigterm(started.pid))
    await sb.stop(grace=0.2)
    status = await asyncio.wait_for(channel.get(), 20)
    assert status.returncode == 137
    await sb.shutdown()


async def test_update_checks_what_new_sandbox_checks(client: Client) -> None:
    sb = await client.new_sandbox("updchk", runtime=RUNTIME)
    with pytest.raises(ValueError, match="extension key"):
        await sb.update(extensions={"": ("example.com/X", b"")})
    with pytest.raises(TypeError, match="str to str"):
        await sb.update(labels={"k": 1})  # type: ignore[dict-item]
    await sb.shutdown()


async def test_the_spec_a_caller_gets_is_theirs_to_change(client: Client) -> None:
    sb = await client.new_sandbox("specown", runtime=RUNTIME, spec=args_spec("sleep", "1"))
    mine = sb.metadata.spec
    assert mine is not None
    mine["process"]["args"].append("--evil")
    assert sb.metadata.spec == args_spec("sleep", "1")
    await sb.shutdown()


async def test_runtime_options_keyword_keeps_the_runtime_an_option_named(client: Client) -> None:
    sb = await client.new_sandbox(
        "rto1", runtime=RUNTIME, runtime_options=("example.com/Opts", b"x")
    )
    assert sb.metadata.runtime.name == RUNTIME
    assert sb.metadata.runtime.options == AnyValue("example.com/Opts", b"x")
    await sb.shutdown()
