"""Deleting a sandbox's own container once the sandboxer has heard its task exit.

``Container.delete(force=True)`` first reads the task's state (Tasks.Get) to choose between
a plain delete and a kill. When the sandboxer's watch has heard the task's exit already
(through Tasks.Wait on the task its Start launched), that read only tells it what it knows:
the task is deleted at once (a plain Tasks.Delete, which the shim refuses for a live task),
then the record. Should the delete find a live task after all (one another client made
since on the same container), it falls back to the forced delete, which reads the state and
kills it first, as before. A container with a snapshot of its own (the sandboxer makes none:
its root comes as mounts) takes the usual way too.
"""

from __future__ import annotations

import contextlib

from .._container import Container
from .._plumbing._connection import USE_CLIENT_DEFAULT, Connection
from .._plumbing._container_store import ContainerStore
from .._wire._pb import tasks_pb
from ..errors import FailedPreconditionError, NotFoundError, UnknownError

__all__ = ("delete_exited",)


async def delete_exited(
    connection: Connection, store: ContainerStore, container: Container
) -> None:
    """Delete ``container`` and its task, which was heard to exit, through ``connection``
    and ``store`` (of its namespace): the task without reading its state first, then the
    record. NotFoundError if the record is gone already."""
    info = container.metadata
    if info.snapshotter and info.snapshot_key:
        await container.delete(force=True)
        return
    request = tasks_pb.DeleteTaskRequest(container_id=container.id)
    try:
        with contextlib.suppress(NotFoundError):  # deleted already: the record is left
            await connection.call(
                connection.stub(tasks_pb.TasksStub).delete, request, USE_CLIENT_DEFAULT
            )
    except (FailedPreconditionError, UnknownError):  # a live task, made since: killed first
        await container.delete(force=True)
        return
    await store.delete(container.id)
