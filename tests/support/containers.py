"""A container a test runs code in, through the public client, and where its processes see
a file of its root: inside the container under runc, on the host under the stand-in."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sandboxclient import Client, Container, Task, oci
from tests.support.backends import Backend

__all__ = ("container", "in_container")


@contextlib.asynccontextmanager
async def container(
    client: Client, root: Path, cid: str, *args: str, tty: bool = False
) -> AsyncIterator[Container]:
    """A container on ``root`` running ``args``, deleted (its task killed) at the end."""
    opts = [oci.with_process_args(*args)] + ([oci.with_tty()] if tty else [])
    made = await client.new_container(cid, rootfs=root, spec=oci.generate_spec(*opts))
    try:
        yield made
    finally:
        await made.delete(force=True)


def in_container(backend: Backend, root: Path, path: str) -> str:
    """Where a process sees ``root``'s file ``path``: inside the container for runc, on the
    host for the stand-in's host processes."""
    return path if backend.kind == "real" else f"{root}{path}"


@contextlib.asynccontextmanager
async def started(member: Container) -> AsyncIterator[Task]:
    """The container's task, started; killed and deleted with the container afterwards."""
    try:
        task = await member.new_task()
        try:
            await task.start()
            yield task
        finally:
            await task.kill(all_processes=True)
            await task.wait_exit()
            await task.delete()
    finally:
        await member.delete()
