"""``sandboxctl images ls|rm|tag|pull|push|import|export``: the image store and transfers.

A transfer's progress goes to stderr as it comes (see the progress module: a live table on a
terminal, one line a step otherwise, one JSON object a step under ``--json``); the outcome
goes to stdout as other commands'.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .._client import Client
from .._image_models import Image
from .._imageops._credentials import Credentials
from ..errors import ContainerdError
from ._base import EXIT_ERROR, Outcome
from ._progress import ProgressDisplay
from ._render import iso, labels_text, printable, table, when

__all__ = (
    "cmd_images_export",
    "cmd_images_import",
    "cmd_images_ls",
    "cmd_images_pull",
    "cmd_images_push",
    "cmd_images_rm",
    "cmd_images_tag",
    "read_password",
)


def image_json(image: Image) -> dict[str, Any]:
    """An image record as ``--json`` shows it."""
    return {
        "name": image.name,
        "target": {
            "media_type": image.target.media_type,
            "digest": image.target.digest,
            "size": image.target.size,
        },
        "labels": dict(image.labels),
        "created_at": iso(image.created_at),
        "updated_at": iso(image.updated_at),
    }


def read_password(user: str | None, password_stdin: bool) -> Credentials | None:
    """Credentials from ``--user`` and ``--password-stdin`` (the first line of stdin)."""
    if user is None:
        if password_stdin:
            raise ValueError("--password-stdin needs --user")
        return None
    if not password_stdin:
        raise ValueError("--user needs --password-stdin (a password is never an argument)")
    return Credentials(user, sys.stdin.readline().rstrip("\r\n"))


async def cmd_images_ls(client: Client, filters: Sequence[str] = ()) -> Outcome:
    """List the images matching any of ``filters``, or all."""
    images = await client.list_images(*filters)
    rows = [
        (
            printable(i.name),
            i.target.digest[:19],
            str(i.target.size),
            when(i.created_at),
            labels_text(i.labels),
        )
        for i in images
    ]
    return Outcome(
        [image_json(i) for i in images],
        table(("NAME", "DIGEST", "SIZE", "CREATED", "LABELS"), rows),
    )


async def cmd_images_rm(client: Client, names: Sequence[str], *, sync: bool = False) -> Outcome:
    """Delete each image; those that fail are reported and the rest go on."""
    removed: list[str] = []
    errors: list[str] = []
    for name in names:
        try:
            await client.delete_image(name, sync=sync)
        except (ContainerdError, ValueError) as exc:
            errors.append(f"{name}: {exc}")
        else:
            removed.append(name)
    return Outcome(
        {"removed": removed}, "\n".join(removed), EXIT_ERROR if errors else 0, tuple(errors)
    )


async def cmd_images_tag(client: Client, name: str, new_name: str) -> Outcome:
    """Give image ``name``'s target the name ``new_name``."""
    image = await client.tag_image(name, new_name)
    return Outcome(image_json(image), printable(image.name))


async def cmd_images_pull(
    client: Client,
    ref: str,
    *,
    credentials: Credentials | None,
    plain_http: bool,
    hosts_dir: str | None,
    as_json: bool,
    timeout: float | None = None,
) -> Outcome:
    """Pull ``ref``, showing its progress (no deadline unless ``timeout``)."""
    with ProgressDisplay(sys.stderr, as_json=as_json) as progress:
        image = await client.pull(
            ref,
            credentials=credentials,
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            progress=progress,
            timeout=timeout,
        )
    return Outcome(image_json(image), f"{printable(image.name)} {image.target.digest}")


async def cmd_images_push(
    client: Client,
    ref: str,
    *,
    source: str | None,
    credentials: Credentials | None,
    plain_http: bool,
    hosts_dir: str | None,
    as_json: bool,
    timeout: float | None = None,
) -> Outcome:
    """Push ``source`` (default ``ref``) to ``ref``, showing its progress."""
    with ProgressDisplay(sys.stderr, as_json=as_json) as progress:
        await client.push(
            ref,
            source=source,
            credentials=credentials,
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            progress=progress,
            timeout=timeout,
        )
    return Outcome({"pushed": ref}, printable(ref))


async def cmd_images_import(
    client: Client,
    path: str,
    *,
    name: str | None,
    unpack: bool,
    as_json: bool,
    timeout: float | None = None,
) -> Outcome:
    """Import the archive at ``path`` (``-``: stdin)."""
    source: Any = sys.stdin.buffer if path == "-" else path
    with ProgressDisplay(sys.stderr, as_json=as_json) as progress:
        images = await client.import_image(
            source, name=name, unpack=unpack, progress=progress, timeout=timeout
        )
    return Outcome([image_json(i) for i in images], "\n".join(printable(i.name) for i in images))


async def cmd_images_export(
    client: Client, names: Sequence[str], path: str, *, timeout: float | None = None
) -> Outcome:
    """Export images ``names`` as one OCI archive to ``path`` (``-``: stdout)."""
    dest: Any = sys.stdout.buffer if path == "-" else path
    size = await client.export_image(list(names), dest, timeout=timeout)
    text = "" if path == "-" else f"{path} {size}"
    return Outcome({"path": path, "size": size}, text)
