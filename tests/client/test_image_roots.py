"""Containers and sandboxes rooted on an imported image, on both backends: the image's own
process runs in its root (found by paths relative to its working directory, which mean the
same inside runc's root and in the stand-in's snapshot directory), and its snapshot and
leases are gone once it is, also after a Create or Start that failed half way."""

from __future__ import annotations

import io
from asyncio.subprocess import PIPE

import pytest

from sandboxclient import Client
from sandboxclient._plumbing._rootfs import RootFS
from sandboxclient.errors import ContainerdError, ResourceExhaustedError
from sandboxclient.testing._userland import userland_archive
from tests.support.backends import Backend

pytestmark = pytest.mark.anyio

IMAGE = "example.test/rooted:1"
# The image's process works in /home/app; ../../ is its root on both backends.
CONFIG = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["cat ../../etc/image; echo $GREETING; echo up > ../../tmp/up; exec sleep 600"],
    "Env": ["PATH=/bin", "GREETING=hello"],
    "WorkingDir": "/home/app",
}


async def imported(client: Client) -> None:
    await client.import_image(io.BytesIO(userland_archive(IMAGE, CONFIG)))


def left(backend: Backend) -> tuple[list[str], list[str]]:
    return backend.snapshots(), backend.leases()


async def test_a_container_runs_its_image_from_an_import(backend: Backend, client: Client) -> None:
    await imported(client)
    before = left(backend)
    container = await client.new_container("rooted-c", image=IMAGE)
    try:
        assert "rooted-c" in backend.snapshots()
        task = await container.new_task(stdout=PIPE)
        await task.start()
        assert task.stdout is not None
        assert await task.stdout.readline() == IMAGE.encode() + b"hello\n"
        done = await task.run("sh", "-c", "cat ../../tmp/up; ls ../../bin/busybox")
        assert (done.returncode, done.stdout) == (0, b"up\n../../bin/busybox\n")
        await task.kill()
        assert (await task.wait_exit()).returncode == 137
        await task.delete()
    finally:
        await container.delete(force=True)
    assert left(backend) == before


async def test_a_sandbox_runs_its_image_and_leaves_nothing(
    backend: Backend, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await imported(client)
    before = left(backend)
    async with client.sandbox("rooted-s", image=IMAGE) as sb:
        assert "rooted-s" in backend.snapshots()
        assert len(backend.leases()) == 1  # the one that keeps its root
        done = await sb.run("sh", "-c", "cat ../../tmp/up; cat ../../etc/image; echo $GREETING")
        assert (done.returncode, done.stdout) == (0, b"up\n" + IMAGE.encode() + b"hello\n"), done
    assert left(backend) == before
    assert await client.list_sandboxes() == []

    # Start fails: the image has no such program.
    with pytest.raises(ContainerdError, match="no-such-program"):
        async with client.sandbox(
            "rooted-s", image=IMAGE, spec={"process": {"args": ["/no-such-program"]}}
        ):
            pass
    assert left(backend) == before

    # Created, but its root cannot be kept: the sandbox is undone.
    async def refused(self: RootFS, lease: str, *args: object, **kwargs: object) -> None:
        raise ResourceExhaustedError("no more leases")

    monkeypatch.setattr(RootFS, "keep", refused)
    with pytest.raises(ResourceExhaustedError, match="no more leases"):
        await client.new_sandbox("rooted-s", image=IMAGE)
    assert left(backend) == before
    assert await client.list_sandboxes() == []
