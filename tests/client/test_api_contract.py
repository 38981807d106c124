"""The public API's promises: keywords, label edits, state and exit views, the default
deadline, the API 1.12 fields, and what a refused payload's error may show."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import (
    Client,
    ContainerInfo,
    DeadlineExceededError,
    ExitStatus,
    Platform,
    SandboxInfo,
    SandboxState,
    StartResult,
    _cli,
    oci,
)
from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient.sandboxer import SandboxController, messages, serve
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend
from tests.support.constants import RUNTIME
from tests.support.helpers import args_spec

pytestmark = pytest.mark.anyio

SECRET = "hunter2-do-not-show"


# -- keywords ------------------------------------------------------------------------------------


async def test_a_misspelled_keyword_is_a_type_error_naming_it(client: Client) -> None:
    one: dict[str, Any] = {"lables": {"a": "b"}, "runtime": RUNTIME}
    with pytest.raises(TypeError, match=r"new_sandbox\(\) got an unexpected keyword .*'lables'"):
        await client.new_sandbox("kw1", **one)
    two: dict[str, Any] = {"runtme": RUNTIME}
    with pytest.raises(TypeError, match=r"sandbox\(\) got an unexpected keyword .*'runtme'"):
        async with client.sandbox("kw1", **two):
            pytest.fail("the block must not run")
    # The options are keywords only: a positional one is Python's TypeError too.
    new_sandbox: Any = client.new_sandbox
    with pytest.raises(TypeError, match="positional"):
        await new_sandbox("kw1", {"a": "b"})
    # Refused before any call: nothing was made.
    assert await client.list_sandboxes() == []
    sb = await client.new_sandbox("kw1", labels={"a": "b"}, runtime=RUNTIME)
    assert sb.metadata.labels == {"a": "b"}
    await sb.shutdown()


# -- labels --------------------------------------------------------------------------------------


async def test_setting_no_labels_reads_them_and_writes_nothing(
    backend: Backend, client: Client, tmp_path: Path
) -> None:
    made = await client.new_container(
        "nolab1", rootfs=tmp_path, spec=oci.generate_spec(), labels={"a": "1"}
    )
    written = made.metadata.updated_at
    assert await made.set_labels({}) == {"a": "1"}
    assert (await made.info()).updated_at == written
    sb = await client.new_sandbox("nolab2", labels={"b": "2"}, runtime=RUNTIME)
    stored = sb.metadata.updated_at
    assert await sb.set_labels({}) == {"b": "2"}
    # An explicitly empty field list changes nothing either (not "rewrite everything").
    assert (await sb.update(labels={}, fields=[])).labels == {"b": "2"}
    assert (await client.get_sandbox("nolab2")).updated_at == stored
    if backend.fake is not None:
        assert backend.fake.call_count("Containers/Update") == 0
        assert backend.fake.call_count("Store/Update") == 0
    await made.delete()
    await sb.shutdown()


async def test_container_records_labels_spec_and_info(
    backend: Backend, client: Client, tmp_path: Path
) -> None:
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    made = await client.new_container(
        "rec1", rootfs=tmp_path, spec=spec, labels={"a": "1", "b": "2", "c": "3"}
    )
    # Set a, remove b, keep c.
    assert await made.set_labels({"a": "9", "b": ""}) == {"a": "9", "c": "3"}
    assert await made.labels() == {"a": "9", "c": "3"}

    # Two writers of different keys, each on a handle loaded before either wrote.
    async with backend.client() as other:
        theirs = await other.load_container("rec1")
        await asyncio.gather(made.set_labels({"x": "1"}), theirs.set_labels({"y": "2"}))
    assert await made.labels() == {"a": "9", "c": "3", "x": "1", "y": "2"}

    got = await made.spec()
    assert got is not None
    assert got["process"]["args"] == ["sleep", "60"]
    assert got["root"]["path"] == str(tmp_path)
    got["process"]["args"] = ["changed"]
    assert (await made.spec() or {})["process"]["args"] == ["sleep", "60"]

    info = await made.info()
    assert isinstance(info, ContainerInfo)
    assert (info.id, info.sandbox_id, info.runtime.name) == ("rec1", "", RUNTIME)
    assert info.labels == {"a": "9", "c": "3", "x": "1", "y": "2"}
    assert info.created_at is not None
    assert info.updated_at is not None
    assert info.created_at <= info.updated_at
    assert made.metadata == info  # info() keeps what it read
    await made.delete()
    assert await client.list_containers() == []


async def test_sandboxctl_labels_keeps_a_concurrent_writers_other_key(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with backend.client() as client, backend.client() as other:
        await client.new_sandbox("race1", labels={"a": "1"}, runtime=RUNTIME)
        read = client.get_sandbox

        async def read_then_let_another_write(sandbox_id: str) -> SandboxInfo:
            # The command holds the record as read; another writer changes key "w" now.
            info = await read(sandbox_id)
            await (await other.load_sandbox(sandbox_id)).set_labels({"w": "theirs"})
            return info

        monkeypatch.setattr(client, "get_sandbox", read_then_let_another_write)
        outcome = await _cli.cmd_labels(client, "race1", [("b", "2"), ("a", None)])
        assert outcome.data == {"b": "2", "w": "theirs"}
        assert dict((await other.get_sandbox("race1")).labels) == {"b": "2", "w": "theirs"}
        await (await other.load_sandbox("race1")).shutdown()


# -- states and exits ----------------------------------------------------------------------------


async def test_status_state_is_the_public_enum(client: Client) -> None:
    sb = await client.new_sandbox("st1", runtime=RUNTIME, spec=args_spec("sleep", "60"))
    await sb.start()
    status = await sb.status()
    assert status.state is SandboxState.READY
    assert status.ready
    await sb.stop(grace=1)
    status = await sb.status()
    assert status.state is SandboxState.NOTREADY
    assert not status.ready
    await sb.shutdown()


@pytest.mark.parametrize(("code", "success"), [(3, False), (0, True)])
async def test_exit_status_observed_and_success(client: Client, code: int, success: bool) -> None:
    sb = await client.new_sandbox(
        "ex1", runtime=RUNTIME, spec=args_spec("sh", "-c", f"exit {code}")
    )
    channel = await sb.wait()
    await sb.start()
    status = await asyncio.wait_for(channel.get(), 20)
    assert isinstance(status, ExitStatus)
    assert (status.returncode, status.observed, status.success) == (code, True, success)
    await sb.shutdown()


class OddController(SandboxController):
    """A controller that says what containerd 2.1 never does: an unknown state, and the API
    1.12 fields (a started sandbox's spec, a platform's OS features)."""

    def __init__(self) -> None:
        self.spec = {"ociVersion": "1.2.0", "process": {"args": ["odd"]}}

    async def create(
        self, message: messages.ControllerCreateRequest
    ) -> messages.ControllerCreateResponse:
        return messages.ControllerCreateResponse(sandbox_id=message.sandbox_id)

    async def start(
        self, message: messages.ControllerStartRequest
    ) -> messages.ControllerStartResponse:
        return messages.ControllerStartResponse(
            sandbox_id=message.sandbox_id,
            pid=77,
            spec=messages.Any(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(self.spec).encode()),
        )

    async def status(
        self, message: messages.ControllerStatusRequest
    ) -> messages.ControllerStatusResponse:
        return messages.ControllerStatusResponse(
            sandbox_id=message.sandbox_id, pid=77, state="SANDBOX_DREAMING"
        )

    async def platform(
        self, message: messages.ControllerPlatformRequest
    ) -> messages.ControllerPlatformResponse:
        return messages.ControllerPlatformResponse(
            platform=messages.Platform(
                os="windows",
                architecture="amd64",
                os_version="10.0.20348",
                os_features=["win32k", "wcow"],
            )
        )

    async def shutdown(
        self, message: messages.ControllerShutdownRequest
    ) -> messages.ControllerShutdownResponse:
        return messages.ControllerShutdownResponse()


async def test_an_unknown_state_and_a_started_spec_are_kept() -> None:
    controller = OddController()
    async with (
        FakeContainerd(controller=controller, sandboxers=("odd",)) as fake,
        Client(fake.address, sandboxer="odd") as client,
    ):
        sb = await client.new_sandbox("odd1", runtime=RUNTIME)
        started = await sb.start()
        assert isinstance(started, StartResult)
        assert started.spec == controller.spec
        assert started.spec_any is not None
        assert started.spec_any.type_url == RUNTIME_SPEC_TYPE_URL
        status = await sb.status()
        assert isinstance(status.state, SandboxState)
        assert status.state == "SANDBOX_DREAMING"
        assert status.state.name == status.state.value == "SANDBOX_DREAMING"
        assert not status.ready
        await sb.shutdown()


async def test_a_platform_keeps_its_os_features(tmp_path: Path) -> None:
    # containerd 2.1 answers Platform UNIMPLEMENTED itself: ask the controller directly.
    path = str(tmp_path / "odd.sock")
    async with serve(OddController(), path), Client(path, sandboxer="odd") as client:
        platform = await client.controller().platform("any1")
    assert platform == Platform("windows", "amd64", "", "10.0.20348", ("win32k", "wcow"))


# -- deadlines -----------------------------------------------------------------------------------


async def test_timeout_none_is_not_cut_by_the_clients_default(fake: FakeContainerd) -> None:
    default = 0.3
    async with Client(fake.address, timeout=default) as client:
        fake.stall = True
        try:
            # The default applies when a call gives none...
            with pytest.raises(DeadlineExceededError):
                await client.get_sandbox("slow1")
            # ...and None means no deadline at all.
            pending = asyncio.create_task(client.get_sandbox("slow1", timeout=None))
            await fake.wait_for_call("Store/Get", 2)
            done, _ = await asyncio.wait({pending}, timeout=default * 4)
            assert not done, pending
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        finally:
            fake.stall = False


# -- construction and refused payloads -----------------------------------------------------------


def test_a_namespace_with_a_final_newline_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"namespace.*\"default\\n\""):
        Client("/nonexistent.sock", namespace="default\n")


async def _refusal(call: Awaitable[object]) -> str:
    """The message of the TypeError ``call`` raises."""
    with pytest.raises(TypeError) as caught:
        await call
    return str(caught.value)


@pytest.mark.parametrize(
    "payload",
    [SECRET, SECRET.encode(), (SECRET, SECRET), {"secret": SECRET}],
    ids=["str", "bytes", "pair-of-str", "dict"],
)
async def test_a_wrongly_typed_payload_shows_its_type_never_its_value(
    client: Client, tmp_path: Path, payload: Any
) -> None:
    bad = {"k": payload}
    spec = oci.generate_spec()
    seen = [
        await _refusal(client.new_sandbox("sec1", extensions=bad)),
        await _refusal(client.new_sandbox("sec1", runtime_options=payload)),
        await _refusal(client.new_sandbox("sec1", runtime=RUNTIME, runtime_options=payload)),
        await _refusal(client.new_container("sec1", rootfs=tmp_path, spec=spec, extensions=bad)),
        await _refusal(
            client.new_container("sec1", rootfs=tmp_path, spec=spec, runtime_options=payload)
        ),
    ]
    sb = await client.new_sandbox("sec2", runtime=RUNTIME)
    seen.append(await _refusal(sb.update(extensions=bad)))
    for message in seen:
        assert SECRET not in message, message
        assert type(payload).__name__ in message, message
    assert [s.id for s in await client.list_sandboxes()] == ["sec2"]
    assert await client.list_containers() == []
    await sb.shutdown()


async def test_error_texts_quote_values_as_go_does(backend: Backend, client: Client) -> None:
    # The client's own refusals read as containerd's do: Go's %q, not Python's repr.
    tricky = backend.address + "/no\tsuch\x1bdir"
    with pytest.raises(ValueError, match="is not a directory") as not_dir:
        await client.new_container("q1", rootfs=tricky)
    assert f'rootfs "{backend.address}/no\\tsuch\\x1bdir" is not a directory' in str(not_dir.value)
    assert await client.list_containers() == []
