"""The sandboxer's deletion of a container whose task it heard exit (``_reap``): no state
read first, nothing left; a task found live after all is killed first, as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sandboxclient._container as container_module
from sandboxclient import Client, NotFoundError, oci
from sandboxclient._plumbing._connection import Connection
from sandboxclient._plumbing._container_store import ContainerStore
from sandboxclient._process_models import ProcessStatus
from sandboxclient.sandboxer._reap import delete_exited
from tests.support.backends import Backend

pytestmark = pytest.mark.anyio


@pytest.fixture
def state_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids whose task state ``Container.delete`` read (its Tasks.Get)."""
    reads: list[str] = []
    read = container_module.task_status

    async def counted(connection: object, container_id: str, timeout: object) -> ProcessStatus:
        reads.append(container_id)
        return await read(connection, container_id, timeout)  # type: ignore[arg-type]

    monkeypatch.setattr(container_module, "task_status", counted)
    return reads


@pytest.fixture
async def records(backend: Backend) -> AsyncIterator[tuple[Connection, ContainerStore]]:
    """A connection of the backend's namespace and its container store, as the
    sandboxer's own for deleting."""
    connection = Connection(backend.address, namespace=backend.namespace, timeout=30.0)
    try:
        yield connection, ContainerStore(connection)
    finally:
        await connection.aclose()


async def _gone(client: Client, container_id: str) -> None:
    with pytest.raises(NotFoundError):
        await client.load_container(container_id)


async def test_an_exited_task_is_deleted_without_reading_its_state(
    client: Client,
    root: Path,
    state_reads: list[str],
    records: tuple[Connection, ContainerStore],
) -> None:
    made = await client.new_container(
        "reap-exited", rootfs=root, spec=oci.generate_spec(oci.with_process_args("true"))
    )
    task = await made.new_task()
    await task.start()
    assert (await task.wait_exit()).returncode == 0
    await delete_exited(*records, made)
    assert state_reads == []
    await _gone(client, "reap-exited")
    with pytest.raises(NotFoundError):
        await delete_exited(*records, made)  # the record is gone: said, for the caller


async def test_a_live_task_is_killed_and_deleted_all_the_same(
    client: Client,
    root: Path,
    state_reads: list[str],
    records: tuple[Connection, ContainerStore],
) -> None:
    made = await client.new_container(
        "reap-live", rootfs=root, spec=oci.generate_spec(oci.with_process_args("sleep", "60"))
    )
    try:
        task = await made.new_task()
        await task.start()
        await delete_exited(*records, made)  # a task made since the exit was heard, say
    except BaseException:
        await made.delete(force=True)
        raise
    assert state_reads  # the forced way: it read the state, killed the task
    await _gone(client, "reap-live")
