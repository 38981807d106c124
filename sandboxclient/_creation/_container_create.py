"""Creating a container record, with its root filesystem, so that a failure leaves nothing.

The spec is the caller's, or ``oci.generate_spec()``'s defaults; a host directory as
``rootfs`` becomes its ``root.path``; an ``image`` becomes a snapshot prepared for the
container (see ``_rootfs``) and, when the caller gave no spec, the image's command, env,
working directory and user. If the record cannot be stored, or the caller is cancelled
midway, the snapshot (and a record that may have been stored) is removed, as clean-up that
runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypedDict

from .. import oci
from .._container import Container, task_status
from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._facts._validation import checked_identifier
from .._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from .._members._joined import JoinedProcess, refuse_reserved
from .._members._root import member_root
from .._members._spec import MemberDefaults
from .._members._userns import MemberUsers, check_idmapped
from .._models import AnyValue, ContainerInfo, RuntimeInfo
from .._plumbing._connection import Connection, Timeout
from .._plumbing._container_store import ContainerStore
from .._plumbing._options import checked_extension_key, checked_labels
from .._plumbing._rootfs import DEFAULT_SNAPSHOTTER, ImageRoot, RootFS
from .._plumbing._wait import WaitRegistry
from .._task import Task
from .._wire._convert import AnyLike, to_any_value
from ..errors import ContainerdError, NotFoundError
from ._create import ROLLBACK_TIMEOUT, may_have_landed

__all__ = (
    "DEFAULT_RUNTIME",
    "ContainerFactory",
    "ContainerOptions",
    "ContainerRequest",
    "check_options",
    "create_container",
)

DEFAULT_RUNTIME = "io.containerd.runc.v2"
"""The runtime of a container that names none."""

_log = logging.getLogger("sandboxclient")


class ContainerOptions(TypedDict, total=False):
    """The keywords a new container is made with, in or out of a sandbox (one definition
    for ``Client.new_container`` and ``Sandbox.new_container``; see their docstrings)."""

    spec: Mapping[str, Any] | None
    rootfs: str | os.PathLike[str] | None
    image: str | None
    labels: Mapping[str, str] | None
    runtime_options: AnyLike | None
    snapshotter: str | None
    extensions: Mapping[str, AnyLike] | None


def check_options(options: Mapping[str, object]) -> None:
    """Refuse a keyword :class:`ContainerOptions` does not name, as Python refuses one a
    signature does not have (TypeError): an untyped caller reaches no other field of a
    :class:`ContainerRequest` through them. Refuse a ``spec`` that carries the annotation
    only the client writes (ValueError naming it; ``_members._joined``)."""
    for name in options:
        if name not in ContainerOptions.__optional_keys__:
            raise TypeError(f"new_container() got an unexpected keyword argument {name!r}")
    refuse_reserved(options.get("spec"))


@dataclass(frozen=True, slots=True)
class ContainerRequest:
    """What a new container is to be, as the caller asked."""

    container_id: str
    spec: Mapping[str, Any] | None = None
    rootfs: str | os.PathLike[str] | None = None
    image: str | None = None
    sandbox_id: str = ""
    labels: Mapping[str, str] | None = None
    runtime: str = DEFAULT_RUNTIME
    runtime_options: AnyLike | None = None
    snapshotter: str | None = None
    extensions: Mapping[str, AnyLike] | None = None
    join_pid: int | None = None
    """The pid of a sandbox whose network, IPC and UTS namespaces to join."""
    joined: JoinedProcess | None = None
    """That process's identity, named in the spec for its task's maker (``_members._joined``)."""
    users: MemberUsers | None = None
    """The sandbox's user namespace, joined unless the spec has its own (``_members._userns``)."""
    member: MemberDefaults | None = None
    """What a member of a sandbox gets where its spec says nothing (see ``_members._spec``)."""
    writable_root: bool = False
    """A member's image root writable where its sandbox bounds layers (``_members._root``)."""


def _spec_for(request: ContainerRequest, image: ImageRoot | None) -> dict[str, Any]:
    given = request.spec is not None
    if request.spec is not None:
        if not isinstance(request.spec, Mapping):
            raise TypeError(f"spec must be a mapping, got {type(request.spec).__name__}")
        spec = copy.deepcopy(dict(request.spec))
    else:
        spec = oci.generate_spec()
    if request.rootfs is not None:
        path = os.path.abspath(os.fspath(request.rootfs))
        if not os.path.isdir(path):
            raise ValueError(f"rootfs {go_quote(str(path))} is not a directory")
        root = spec.setdefault("root", {})
        current = root.get("path")
        if given and os.path.isabs(str(current or "")) and current != path:
            raise ValueError(
                f"rootfs {go_quote(str(path))} conflicts with the spec's root.path "
                f"{go_quote(str(current))}"
            )
        root["path"] = path
    if image is not None:
        spec.setdefault("root", {})["path"] = "rootfs"  # the bundle's mount of the snapshot
        if not given:
            _apply_image_config(spec, image)
    if request.join_pid is not None:
        oci.with_sandbox_namespaces(request.join_pid)(spec)
    if request.joined is not None:
        request.joined.mark(spec)
    joined = request.users is not None and request.users.join(spec)
    if request.member is not None:
        request.member.apply(spec, request.container_id, joined_users=joined)
        if image is not None and request.member.readonly_image_root:
            member_root(spec, request.container_id, given=given, writable=request.writable_root)
    return spec


def _apply_image_config(spec: dict[str, Any], image: ImageRoot) -> None:
    config = image.config
    if config.env:
        oci.with_env(list(config.env))(spec)
    if config.args:
        oci.with_process_args(*config.args)(spec)
    if config.working_dir:
        oci.with_process_cwd(config.working_dir)(spec)
    if config.user:
        uid, _, gid = config.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise ValueError(
                f"image {go_quote(image.name)} runs as user {go_quote(config.user)}, a name this "
                "client cannot look up: pass a spec with a numeric user (oci.with_uidgid)"
            )
        oci.with_user(config.user)(spec)


def _record(
    request: ContainerRequest, spec: dict[str, Any], snapshotter: str, key: str
) -> ContainerInfo:
    cid = request.container_id
    labels = checked_labels(request.labels or {}, cid)
    options = (
        None
        if request.runtime_options is None
        else to_any_value(request.runtime_options, what="runtime options")
    )
    extensions = {
        checked_extension_key(k, cid): to_any_value(v, what=f"extension {go_quote(k)}")
        for k, v in (request.extensions or {}).items()
    }
    try:
        spec_json = json.dumps(spec, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"spec is not JSON-serialisable: {exc}") from None
    return ContainerInfo(
        id=cid,
        sandbox_id=request.sandbox_id,
        runtime=RuntimeInfo(request.runtime, options),
        image=request.image or "",
        labels=MappingProxyType(labels),
        snapshotter=snapshotter,
        snapshot_key=key,
        extensions=MappingProxyType(extensions),
        spec_any=AnyValue(RUNTIME_SPEC_TYPE_URL, spec_json),
    )


def _check(request: ContainerRequest) -> None:
    checked_identifier(request.container_id, "container ID")
    if request.rootfs is not None and request.image is not None:
        raise ValueError("a container takes rootfs= or image=, not both")
    if request.snapshotter is not None and request.image is None:
        raise ValueError("snapshotter= goes with image=")
    if not isinstance(request.writable_root, bool):
        raise TypeError(
            f"writable_root= must be a bool, got {type(request.writable_root).__name__}"
        )
    if request.writable_root and request.image is None:
        raise ValueError("writable_root= goes with image=")
    if not isinstance(request.runtime, str) or not request.runtime:
        raise ValueError("runtime must be a non-empty string")


async def create_container(
    connection: Connection,
    store: ContainerStore,
    rootfs: RootFS,
    request: ContainerRequest,
    timeout: Timeout,
) -> ContainerInfo:
    """Store the container ``request`` asks for; undo it all on failure."""
    _check(request)
    if request.image is None:
        record = _record(request, _spec_for(request, None), "", "")
        return await _store(connection, store, record, timeout)
    image = await rootfs.resolve(request.image, timeout=timeout)
    spec = _spec_for(request, image)
    record = _record(request, spec, request.snapshotter or "", "")
    snapshotter = request.snapshotter or DEFAULT_SNAPSHOTTER
    key = request.container_id
    # A member that joined its sandbox's user namespace gets an idmapped snapshot.
    users = request.users if _joined(spec, request.users) else None
    labels = users.snapshot_labels() if users is not None else None
    lease = await rootfs.prepare(image, key, snapshotter, labels=labels, timeout=timeout)
    record = dataclasses.replace(record, snapshotter=snapshotter, snapshot_key=key)
    try:
        if users is not None:
            mounts = await rootfs.mounts(snapshotter, key, timeout=timeout)
            check_idmapped(mounts, image.name, snapshotter)
        return await _store(connection, store, record, timeout)
    except BaseException:
        await connection.run_shielded(rootfs.remove(snapshotter, key, timeout=10.0))
        raise
    finally:
        await connection.run_shielded(rootfs.release(lease))


def _joined(spec: Mapping[str, Any], users: MemberUsers | None) -> bool:
    namespaces = (spec.get("linux") or {}).get("namespaces") or []
    return users is not None and {"type": "user", "path": users.path} in namespaces


async def _store(
    connection: Connection,
    store: ContainerStore,
    record: ContainerInfo,
    timeout: Timeout,
) -> ContainerInfo:
    sent_at = utcnow()
    try:
        return await store.create(record, timeout=timeout)
    except BaseException as exc:
        if may_have_landed(exc):
            await connection.run_shielded(_forget(store, record, sent_at))
        raise


async def _forget(store: ContainerStore, record: ContainerInfo, sent: datetime) -> None:
    """Delete the record of a Create that got no answer, if it is provably this one: the
    daemon stamped it after the request went out (one there before is someone else's)."""
    with contextlib.suppress(NotFoundError, ContainerdError):
        found = await store.get(record.id, timeout=5.0)
        runtime = record.runtime.name
        if found.created_at is None or found.created_at < sent or found.runtime.name != runtime:
            return
        await store.delete(record.id, timeout=5.0)


async def _undone(container: Container) -> None:
    """Delete ``container`` (with its task and snapshot), what is gone already being fine; a
    failure is logged, the caller's own error being the one raised."""
    try:
        await container.delete(force=True, timeout=ROLLBACK_TIMEOUT)
    except NotFoundError:
        pass
    except ContainerdError as exc:
        _log.warning("container %s was not deleted after a failed create: %s", container.id, exc)


class ContainerFactory:
    """Makes, loads and finds container handles (by sandbox), for the Client and Sandbox."""

    def __init__(self, connection: Connection, waits: WaitRegistry) -> None:
        self._connection = connection
        self._waits = waits
        self.store = ContainerStore(connection)
        self.rootfs = RootFS(connection)

    def handle(self, info: ContainerInfo) -> Container:
        """The handle of a record held already."""
        return Container(self._connection, self._waits, self.store, self.rootfs, info)

    async def create(
        self,
        request: ContainerRequest,
        *,
        timeout: Timeout,
        confirm: Callable[[Container], Awaitable[None]] | None = None,
    ) -> Container:
        """Make the container ``request`` asks for (see :func:`create_container`). With
        ``confirm``, ask it once the container is made: should it raise (or the caller be
        cancelled meanwhile), the container is deleted, as clean-up that runs to its end,
        and the error raised."""
        info = await create_container(self._connection, self.store, self.rootfs, request, timeout)
        made = self.handle(info)
        if confirm is not None:
            try:
                await confirm(made)
            except BaseException:
                await self._connection.run_shielded(_undone(made))
                raise
        return made

    async def load(self, container_id: str, *, timeout: Timeout) -> Container:
        """The handle of an existing container; NotFoundError if there is none."""
        return self.handle(await self.store.get(container_id, timeout=timeout))

    async def load_with_task(
        self, container_id: str, *, timeout: Timeout
    ) -> tuple[Container, Task]:
        """The handles of an existing container and of its task, their records asked for at
        once (the task's Get needs only the id); NotFoundError if either is missing."""
        record = asyncio.ensure_future(self.store.get(container_id, timeout=timeout))
        status = asyncio.ensure_future(task_status(self._connection, container_id, timeout))
        try:
            container = self.handle(await record)
            pid = (await status).pid
            return container, Task(
                self._connection, self._waits, container_id, spec=container.spec, pid=pid
            )
        finally:  # one failed (or the caller was cancelled): the other is not left running
            for call in (record, status):
                call.cancel()
            await asyncio.gather(record, status, return_exceptions=True)

    async def members(self, sandbox_id: str, *, timeout: Timeout) -> list[Container]:
        """The containers that belong to sandbox ``sandbox_id``.

        containerd's filters know no ``sandbox`` field, so every record is read and sorted
        here.
        """
        infos = await self.store.list(timeout=timeout)
        return [self.handle(i) for i in infos if i.sandbox_id == sandbox_id]

    async def members_to_delete(self, sandbox_id: str, *, timeout: Timeout) -> list[Container]:
        """The handles of :meth:`members`, for deleting them: made of the records read
        without their specs and extensions (:mod:`.._wire._brief`), which is most of what
        reading them costs."""
        infos = await self.store.list_brief(timeout=timeout)
        return [self.handle(i) for i in infos if i.sandbox_id == sandbox_id]

    async def delete_members(self, sandbox_id: str, *, timeout: Timeout) -> None:
        """Delete the members of ``sandbox_id`` (killing their tasks), the sandbox's own
        container aside (its controller's to remove); one already gone is fine."""
        for member in await self.members_to_delete(sandbox_id, timeout=timeout):
            if member.id != sandbox_id:
                with contextlib.suppress(NotFoundError):
                    await member.delete(force=True, timeout=timeout)
