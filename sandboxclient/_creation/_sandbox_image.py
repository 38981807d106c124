"""A sandbox rooted on an image: ``new_sandbox(..., image=ref)``.

As for a container made with ``image=`` (see ``_rootfs``), the image's manifest and config
are read from the content store and a writable snapshot is prepared on its unpacked top
layer, keyed by the sandbox's id. Its mounts go in the controller's Create request as the
sandbox's ``rootfs``: the isolating sandboxer runs the sandbox's process on them (idmapped
for its user namespace, read-only unless the spec says ``root.readonly: false``, with a
private ``/tmp``), instead of its own busybox root.

No container record names a sandbox's snapshot, so a lease keeps it. It is prepared under
one that expires within the hour (a client that dies before the sandbox exists leaves it
to the garbage collector); once the sandbox exists, a lease without expiry (labelled
:data:`SANDBOX_LEASE_LABEL`) holds it for the sandbox's life. The sandbox's record names
that lease and the snapshotter in its labels (:data:`IMAGE_LEASE_LABEL`,
:data:`IMAGE_SNAPSHOTTER_LABEL`, and the image in :data:`IMAGE_LABEL`), so that whoever
shuts it down, this client or another one that loaded it, removes the snapshot and then the
lease (:func:`remove_sandbox_root`). A failure at any step (a ref not found, an image not
unpacked, a user that cannot be looked up, a Create refused, the lease not made, a
cancellation) removes what was made.

The image's config fills in what the spec leaves out: ``process.args`` (its entrypoint then
its cmd), ``process.env`` (the image's variables, each one the spec names replaced by the
spec's), ``process.cwd`` and ``process.user`` (numeric, or looked up in the image's
``/etc/passwd`` and ``/etc/group``, see ``_image_user``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any, Final

from .._controller import Controller
from .._models import SandboxInfo
from .._plumbing._connection import Connection, Timeout
from .._plumbing._options import SandboxDraft
from .._plumbing._rootfs import DEFAULT_SNAPSHOTTER, ImageConfig, RootFS
from .._plumbing._sandbox_store import SandboxStore
from .._wire._convert import spec_to_any
from ..errors import ContainerdError
from ._create import ROLLBACK_TIMEOUT, create_sandbox
from ._image_user import image_user, needs_lookup

__all__ = (
    "IMAGE_LABEL",
    "IMAGE_LEASE_LABEL",
    "IMAGE_SNAPSHOTTER_LABEL",
    "SANDBOX_LEASE_LABEL",
    "create_on_image",
    "remove_sandbox_root",
)

_log = logging.getLogger("sandboxclient")

IMAGE_LABEL: Final = "io.sandboxclient.image"
"""The sandbox record's label naming the image it is rooted on."""

IMAGE_SNAPSHOTTER_LABEL: Final = "io.sandboxclient.image-snapshotter"
"""The sandbox record's label naming the snapshotter of its root (keyed by its id)."""

IMAGE_LEASE_LABEL: Final = "io.sandboxclient.image-lease"
"""The sandbox record's label naming the lease that keeps its root."""

SANDBOX_LEASE_LABEL: Final = "io.sandboxclient.sandbox"
"""The label of a sandbox root's lease naming the sandbox (to find one a crash left)."""


async def create_on_image(
    connection: Connection,
    store: SandboxStore,
    controller: Controller,
    rootfs: RootFS,
    draft: SandboxDraft,
    image: str,
    timeout: Timeout,
) -> SandboxInfo:
    """Prepare the image's snapshot for the sandbox ``draft`` describes and create the
    sandbox on it; undo it all on failure."""
    if not isinstance(image, str):
        raise TypeError(f"image must be a str, got {type(image).__name__}")
    if not image:
        raise ValueError("image must be a non-empty image reference")
    resolved = await rootfs.resolve(image, timeout=timeout)
    spec = _decoded(draft)
    snapshotter, key = DEFAULT_SNAPSHOTTER, draft.id
    # Prepared under a lease that expires, so that a client that dies before the sandbox's
    # record exists leaves nothing for good; the record names the lease that keeps the
    # snapshot from then on, made once the sandbox exists.
    creating = await rootfs.prepare(resolved, key, snapshotter, timeout=timeout)
    lease = f"sandboxclient-sandbox-{secrets.token_hex(8)}"
    created = False
    try:
        mounts = tuple(await rootfs.mounts(snapshotter, key, timeout=timeout))
        user = (spec.get("process") or {}).get("user")
        wanted = resolved.config.user
        looked_up = None
        if user is None and wanted:
            if needs_lookup(wanted):  # reads the image's files: off the event loop
                looked_up = await asyncio.to_thread(image_user, wanted, image, mounts)
            else:
                looked_up = image_user(wanted, image, mounts)
        fill_from_image(spec, resolved.config, looked_up.to_spec() if looked_up else None)
        draft.spec = spec_to_any(spec)
        draft.labels.update(
            {IMAGE_LABEL: image, IMAGE_SNAPSHOTTER_LABEL: snapshotter, IMAGE_LEASE_LABEL: lease}
        )
        info = await create_sandbox(connection, store, controller, draft, timeout, rootfs=mounts)
        created = True
        labels = {SANDBOX_LEASE_LABEL: draft.id}
        await rootfs.keep(lease, snapshotter, key, labels=labels, timeout=timeout)
        return info
    except BaseException:
        if created:
            await connection.run_shielded(_undo(controller, store, draft.id))
        await connection.run_shielded(_discard(rootfs, snapshotter, key, lease))
        raise
    finally:
        await connection.run_shielded(rootfs.release(creating))


async def _undo(controller: Controller, store: SandboxStore, sandbox_id: str) -> None:
    """Shut down and delete a sandbox whose root could not be kept."""
    for step in (controller.shutdown, store.delete):
        with contextlib.suppress(ContainerdError):
            await step(sandbox_id, timeout=ROLLBACK_TIMEOUT / 2)


def _decoded(draft: SandboxDraft) -> dict[str, Any]:
    if draft.spec is None:
        return {}
    spec = json.loads(draft.spec.value)
    if not isinstance(spec, dict):
        raise TypeError("spec must be a mapping")
    return spec


def fill_from_image(
    spec: dict[str, Any], config: ImageConfig, user: Mapping[str, int] | None
) -> None:
    """Fill ``spec`` (a sparse spec, changed in place) from the image's ``config`` where it
    says nothing; ``user`` is the image's user, resolved."""
    process = spec.get("process")
    if not isinstance(process, dict):
        if process is not None:
            raise TypeError(f"spec's process must be a mapping, got {type(process).__name__}")
        process = spec["process"] = {}
    if not process.get("args") and config.args:
        process["args"] = list(config.args)
    if config.env:
        own = [str(e) for e in process.get("env") or []]
        named = {e.partition("=")[0] for e in own}
        process["env"] = [e for e in config.env if e.partition("=")[0] not in named] + own
    if not process.get("cwd") and config.working_dir:
        process["cwd"] = config.working_dir
    if process.get("user") is None and user is not None:
        process["user"] = dict(user)


async def _discard(rootfs: RootFS, snapshotter: str, key: str, lease: str) -> None:
    try:
        await rootfs.remove(snapshotter, key, timeout=10.0)
    except ContainerdError as exc:  # the caller's error is the one to raise
        _log.warning("removing snapshot %s after a failed create: %s", key, exc)
    finally:
        await rootfs.release(lease)  # a snapshot left is collected once no lease holds it


async def remove_sandbox_root(
    rootfs: RootFS, sandbox_id: str, labels: Mapping[str, str], *, timeout: Timeout
) -> None:
    """Remove the snapshot and the lease of a sandbox rooted on an image (as its record's
    ``labels`` name them); nothing for another sandbox. One already gone is fine."""
    snapshotter = labels.get(IMAGE_SNAPSHOTTER_LABEL)
    if not snapshotter:
        return
    await rootfs.remove(snapshotter, sandbox_id, timeout=timeout)
    lease = labels.get(IMAGE_LEASE_LABEL)
    if lease:
        await rootfs.release(lease)
