"""A sandbox's own task, and its containers' tasks: the stand-in against a real pod.

containerd's ``podsandbox`` controller runs a pod's pause container as the task of a
container with the sandbox's id; the stand-in's own controller makes its sandbox's process
that task. ``Sandbox.run`` execs into it, and the sandbox's containers get tasks in its
shim, the same way on both.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client, NotFoundError, Sandbox, oci
from sandboxclient._plumbing._stream_args import PIPE
from sandboxclient.testing import FakeContainerd
from tests.support.backends import RealContainerd
from tests.support.constants import RUNTIME
from tests.support.cri import CRI_METADATA_URL, cri_metadata

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["fake", pytest.param("podsandbox", marks=pytest.mark.real)])
async def pod(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Client, Sandbox]]:
    """A started sandbox: the stand-in's, or a real containerd's podsandbox pod."""
    sandbox_id = f"pod{uuid.uuid4().hex[:10]}"
    if request.param == "fake":
        async with (
            FakeContainerd() as fake,
            Client(fake.address, namespace="default") as client,
        ):
            sb = await client.new_sandbox(sandbox_id, runtime=RUNTIME)
            await sb.start()
            yield "fake", client, sb
            await sb.shutdown()
            assert fake.task_ids("default") == []
            assert fake.container_ids("default") == []
        return
    real: RealContainerd = request.getfixturevalue("real_containerd")
    real.ensure_running()
    real.daemon.ensure_pause_image("k8s.io")
    async with Client(real.address, namespace="k8s.io", sandboxer="podsandbox") as client:
        metadata = (CRI_METADATA_URL, cri_metadata(sandbox_id, "web"))
        sb = await client.new_sandbox(
            sandbox_id, runtime=RUNTIME, extensions={"metadata": metadata}
        )
        try:
            await sb.start()
            yield "podsandbox", client, sb
        finally:
            await sb.shutdown()
        assert [c.id for c in await client.list_containers(f"id=={sandbox_id}")] == []


async def test_sandbox_run_execs_into_the_sandbox_s_own_task(
    pod: tuple[str, Client, Sandbox],
) -> None:
    _, client, sb = pod
    result = await sb.run("sh", "-c", "echo hi; echo there >&2; exit 4")
    assert (result.stdout, result.stderr, result.returncode) == (b"hi\n", b"there\n", 4)
    task = await sb.task()
    assert task.container_id == sb.id
    assert task.pid == sb.pid
    loaded = await client.load_container(sb.id)
    assert loaded.id == sb.id


async def test_a_sandbox_s_container_runs_a_task(
    pod: tuple[str, Client, Sandbox], root: Path
) -> None:
    _, _, sb = pod
    spec = oci.generate_spec(oci.with_process_args("sh", "-c", "echo member; exit 5"))
    member = await sb.new_container(f"m{uuid.uuid4().hex[:8]}", rootfs=root, spec=spec)
    try:
        task = await member.new_task(stdout=PIPE)
        await task.start()
        assert await task.communicate() == (b"member\n", None)
        assert task.returncode == 5
        await task.delete()
    finally:
        await member.delete(force=True)


async def test_the_sandbox_s_task_goes_when_it_stops(pod: tuple[str, Client, Sandbox]) -> None:
    _, _, sb = pod
    process = await sb.spawn("sleep", "60")
    channel = await process.wait()
    await sb.stop(grace=1)
    # Its execs die with it; then the task itself is deleted. The exit channel's Wait runs
    # in the background: if the stop deleted the task before that call reached the shim,
    # containerd answers NotFound and nobody can know the exit code; either way it ended.
    status = await channel.get()
    if status.error is None:
        assert status.returncode == 137, status
    else:
        assert isinstance(status.error, NotFoundError), status
        assert status.returncode == 255, status
    with pytest.raises(NotFoundError, match="has no task of its own"):
        await sb.task()
