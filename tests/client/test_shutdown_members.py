"""Who deletes a sandbox's members at its shutdown: the client, after reading every container
record of the namespace, unless the controller said at Start that its own Shutdown does (the
isolating sandboxer), on the stand-in and a real daemon; the word is the controller's alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sandboxclient import Client, RuntimeInfo, oci
from sandboxclient._creation._container_create import ContainerFactory
from sandboxclient._members._ending import (
    ANSWER_ONLY_LABELS,
    MEMBERS_REMOVED_LABEL,
    members_removed,
)
from sandboxclient._plumbing import _sandbox_store
from sandboxclient._plumbing._sandbox_io import ERROR_ATTACHED_LABEL, OUTPUT_ATTACHED_LABEL
from sandboxclient.errors import NotFoundError, UnavailableError
from sandboxclient.sandboxer import ProcessSandboxer, messages
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend
from tests.support.constants import RUNTIME
from tests.support.helpers import args_spec

pytestmark = pytest.mark.anyio


def client_factory(client: Client) -> ContainerFactory:
    return client._containers


class _Listings:
    """Counts the client's readings of a sandbox's members."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        read = ContainerFactory.members_to_delete

        async def members(factory: ContainerFactory, *args: object, **kwargs: object) -> object:
            self.count += 1
            return await read(factory, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(ContainerFactory, "members_to_delete", members)


async def test_the_members_go_at_shutdown_listed_by_the_client_only_if_the_controller_does_not(
    backend: Backend, client: Client, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = await client.new_sandbox("sm1", runtime=RUNTIME, spec=args_spec("sleep", "60"))
    started = await sb.start()
    # The isolating sandboxer (the real backend's) deletes them itself; the stand-in's does not.
    said = members_removed(started.labels)
    assert said is (backend.kind == "real")
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    member = await sb.new_container("sm1-c", rootfs=root, spec=spec)
    await (await member.new_task()).start()
    listings = _Listings(monkeypatch)
    await sb.shutdown()
    assert listings.count == (0 if said else 1)
    with pytest.raises(NotFoundError):
        await client.get_container("sm1-c")
    assert await client.list_containers() == []
    assert await client.list_sandboxes() == []


class _SaysItDeletesMembers(ProcessSandboxer):
    """A controller that says at Start its Shutdown deletes the members (and does not)."""

    async def start(
        self, message: messages.ControllerStartRequest
    ) -> messages.ControllerStartResponse:
        answer = await super().start(message)
        answer.labels[MEMBERS_REMOVED_LABEL] = "true"
        return answer


async def test_the_controller_s_word_spares_the_listing_unless_it_no_longer_knows_the_sandbox(
    root: Path,
) -> None:
    controller = _SaysItDeletesMembers(refuse_unenforced=False)
    try:
        async with (
            FakeContainerd(controller=controller, sandboxers=("says",)) as fake,
            Client(fake.address, namespace="says", sandboxer="says", timeout=20) as client,
        ):
            sb = await client.new_sandbox("sm2", runtime=RUNTIME, spec=args_spec("sleep", "60"))
            await sb.start()
            await sb.new_container("sm2-c", rootfs=root, spec=oci.generate_spec())
            lists = fake.call_count("Containers/List")
            await sb.shutdown()
            assert fake.call_count("Containers/List") == lists  # left to the controller
            assert fake.container_ids("says") == ["sm2-c"]  # which, here, kept its word not
            await client.delete_container("sm2-c")

            # A controller that no longer knows the sandbox did not delete them: the client does.
            sb = await client.new_sandbox("sm3", runtime=RUNTIME, spec=args_spec("sleep", "60"))
            await sb.start()
            await sb.new_container("sm3-c", rootfs=root, spec=oci.generate_spec())
            await client.controller().shutdown("sm3")  # forgotten behind the handle's back
            await sb.shutdown()
            assert fake.container_ids("says") == []
            assert await client.list_sandboxes() == []
    finally:
        await controller.aclose()


@pytest.mark.parametrize("word", sorted(ANSWER_ONLY_LABELS))
async def test_the_word_is_refused_on_a_sandbox_s_record(word: str) -> None:
    async with (
        FakeContainerd() as fake,
        Client(fake.address, namespace="word", timeout=20) as client,
    ):
        with pytest.raises(ValueError, match=f"label {word} on sandbox"):
            await client.new_sandbox("sm4", runtime=RUNTIME, labels={word: "x"})
        sb = await client.new_sandbox("sm4", runtime=RUNTIME, spec=args_spec("sleep", "60"))
        with pytest.raises(ValueError, match=f"label {word} on sandbox"):
            await sb.set_labels({word: "true"})
        started = await sb.start()  # the stand-in's controller echoes the record's labels
        assert not members_removed(started.labels)
        await sb.shutdown()
        assert await client.list_sandboxes() == []


async def test_a_record_written_past_the_client_cannot_forge_the_controller_s_words(
    backend: Backend, client: Client, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another client (or ctr) writes the record: the wire carries the words this client refuses.
    monkeypatch.setattr(_sandbox_store, "refuse_reserved", lambda labels, sandbox_id: None)
    forged = dict.fromkeys(ANSWER_ONLY_LABELS, "true")
    sb = await client.new_sandbox(
        "sm6", runtime=RUNTIME, spec=args_spec("sleep", "60"), labels=forged
    )
    assert (await sb.labels()).items() >= forged.items()  # stored as written
    started = await sb.start()
    # No output was asked for, nor given: no acknowledgement. Only the isolating sandboxer
    # (the real backend's) deletes the members itself, and says so of its own accord.
    assert OUTPUT_ATTACHED_LABEL not in started.labels
    assert ERROR_ATTACHED_LABEL not in started.labels
    assert members_removed(started.labels) is (backend.kind == "real")
    spec = oci.generate_spec(oci.with_process_args("sleep", "60"))
    member = await sb.new_container("sm6-c", rootfs=root, spec=spec)
    await (await member.new_task()).start()
    await sb.shutdown()
    with pytest.raises(NotFoundError):
        await client.get_container("sm6-c")
    assert await client.list_containers() == []
    assert await client.list_sandboxes() == []


async def test_the_brief_listing_reads_every_record_for_what_deleting_it_needs(
    client: Client, root: Path
) -> None:
    sb = await client.new_sandbox("sm5", runtime=RUNTIME, spec=args_spec("sleep", "60"))
    spec = oci.generate_spec(oci.with_process_args("true"))
    await sb.new_container(
        "sm5-c", rootfs=root, spec=spec, labels={"a": "1"}, join_namespaces=False
    )
    await client.new_container(
        "sm5-alone", spec=spec, labels={"b": "2"}, extensions={"x": ("example.com/X", b"\x01")}
    )
    full = sorted(await client.list_containers(), key=lambda c: c.id)
    listed = await client_factory(client).store.list_brief()
    brief = sorted(listed, key=lambda c: c.id)
    assert [c.id for c in brief] == ["sm5-alone", "sm5-c"]
    for whole, read in zip(full, brief, strict=True):
        assert read == dataclasses.replace(
            whole,
            runtime=RuntimeInfo(""),
            created_at=None,
            updated_at=None,
            extensions={},
            spec_any=None,
        )
    assert full[0].extensions
    assert full[0].spec_any is not None
    assert full[0].runtime.name == RUNTIME
    members = await client_factory(client).members_to_delete("sm5", timeout=20)
    assert [m.id for m in members] == ["sm5-c"]
    await sb.shutdown()
    await client.delete_container("sm5-alone")


async def test_a_shutdown_repeated_after_its_last_step_failed_only_redoes_that_step(
    fake: FakeContainerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(self: _sandbox_store.SandboxStore, sandbox_id: str, **_: object) -> None:
        raise UnavailableError("the store is away")

    async with Client(fake.address) as client:
        sb = await client.new_sandbox("sm5", runtime=RUNTIME, spec=args_spec("sleep", "60"))
        await sb.start()
        with monkeypatch.context() as patched:
            patched.setattr(_sandbox_store.SandboxStore, "delete", away)
            with pytest.raises(UnavailableError, match="the store is away"):
                await sb.shutdown()
        shutdowns = fake.call_count("Controller/Shutdown")
        assert shutdowns == 1
        listings = _Listings(monkeypatch)
        await sb.shutdown()  # again: only the record goes
        assert fake.call_count("Controller/Shutdown") == shutdowns
        assert listings.count == 0
        assert await client.list_sandboxes() == []
