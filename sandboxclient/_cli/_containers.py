"""``sandboxctl containers ls|rm``: container records, and removing them with their tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._client import Client
from .._models import ContainerInfo
from ..errors import ContainerdError
from ._base import EXIT_ERROR, Outcome
from ._render import iso, labels_text, table, when

__all__ = ("cmd_containers_ls", "cmd_containers_rm")


def _container_json(info: ContainerInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "sandbox": info.sandbox_id,
        "image": info.image,
        "runtime": info.runtime.name,
        "snapshotter": info.snapshotter,
        "snapshot_key": info.snapshot_key,
        "labels": dict(info.labels),
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
    }


async def cmd_containers_ls(client: Client, filters: Sequence[str] = ()) -> Outcome:
    """List the containers matching any of ``filters`` (containerd filter syntax), or all."""
    infos = sorted(await client.list_containers(*filters), key=lambda i: i.id)
    rows = [
        (
            i.id,
            i.sandbox_id or "-",
            i.image or "-",
            i.runtime.name or "-",
            when(i.created_at),
            labels_text(i.labels),
        )
        for i in infos
    ]
    return Outcome(
        [_container_json(i) for i in infos],
        table(("ID", "SANDBOX", "IMAGE", "RUNTIME", "CREATED", "LABELS"), rows),
    )


async def cmd_containers_rm(
    client: Client, container_ids: Sequence[str], *, force: bool = False
) -> Outcome:
    """Delete each container with its snapshot (with ``force``, killing its task first);
    those that fail are reported and the rest go on."""
    removed: list[str] = []
    errors: list[str] = []
    for container_id in container_ids:
        try:
            await client.delete_container(container_id, force=force)
        except (ContainerdError, ValueError) as exc:
            errors.append(f"{container_id}: {exc}")
        else:
            removed.append(container_id)
    return Outcome(
        {"removed": removed}, "\n".join(removed), EXIT_ERROR if errors else 0, tuple(errors)
    )
