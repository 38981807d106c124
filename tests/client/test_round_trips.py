"""The round trips the short paths make: a force delete of an exited task, and run()."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client, _container, oci
from sandboxclient._process_models import ProcessStatus, TaskState
from sandboxclient.testing import FakeContainerd
from tests.support.constants import RUNTIME

pytestmark = pytest.mark.anyio


async def test_a_force_delete_asks_for_the_task_once_and_kills_only_a_live_one(
    fake: FakeContainerd, root: Path
) -> None:
    async with Client(fake.address, namespace="deletes", timeout=20) as client:
        done = await client.new_container(
            "done1", rootfs=root, spec=oci.generate_spec(oci.with_process_args("true"))
        )
        task = await done.new_task()
        channel = await task.wait()
        await task.start()
        assert (await channel.get()).returncode == 0
        channel.close()
        gets, kills = fake.call_count("Tasks/Get"), fake.call_count("Tasks/Kill")
        await done.delete(force=True)
        assert fake.call_count("Tasks/Get") == gets + 1  # its status decides: no second look
        assert fake.call_count("Tasks/Kill") == kills
        live = await client.new_container(
            "live1", rootfs=root, spec=oci.generate_spec(oci.with_process_args("sleep", "60"))
        )
        await (await live.new_task()).start()
        await live.delete(force=True)
        assert fake.call_count("Tasks/Kill") == kills + 1
        assert await client.list_containers() == []
        assert fake.task_ids("deletes") == []


async def test_a_force_delete_kills_a_task_made_after_its_get_found_one_stopped(
    fake: FakeContainerd, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Client(fake.address, namespace="deletes", timeout=20) as client:
        live = await client.new_container(
            "stale1", rootfs=root, spec=oci.generate_spec(oci.with_process_args("sleep", "60"))
        )
        await (await live.new_task()).start()
        read = _container.task_status

        async def stale(*args: Any) -> ProcessStatus:  # the Get saw the task before this one
            return dataclasses.replace(await read(*args), state=TaskState.STOPPED)

        monkeypatch.setattr(_container, "task_status", stale)
        await live.delete(force=True)
        assert await client.list_containers() == []
        assert fake.task_ids("deletes") == []


async def test_run_reads_the_sandbox_s_container_once() -> None:
    async with (
        FakeContainerd() as fake,
        Client(fake.address, namespace="runs", timeout=20) as client,
    ):
        sb = await client.new_sandbox("run1", runtime=RUNTIME)
        await sb.start()
        gets, task_gets = fake.call_count("Containers/Get"), fake.call_count("Tasks/Get")
        assert (await sb.run("echo", "hi")).stdout == b"hi\n"
        assert fake.call_count("Containers/Get") == gets + 1
        assert fake.call_count("Tasks/Get") == task_gets + 1
        await sb.shutdown()
        assert fake.container_ids("runs") == []
