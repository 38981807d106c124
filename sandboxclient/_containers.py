"""The container methods of :class:`~sandboxclient.Client`, over one ContainerFactory."""

from __future__ import annotations

from typing_extensions import Unpack

from ._container import Container
from ._creation._container_create import (
    DEFAULT_RUNTIME,
    ContainerFactory,
    ContainerOptions,
    ContainerRequest,
    check_options,
)
from ._models import ContainerInfo
from ._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._plumbing._wait import WaitRegistry

__all__ = ("ContainerMethods",)


class ContainerMethods:
    """The container methods of :class:`~sandboxclient.Client`."""

    def __init__(self, connection: Connection, waits: WaitRegistry) -> None:
        self._containers = ContainerFactory(connection, waits)

    async def new_container(
        self,
        container_id: str,
        *,
        runtime: str = DEFAULT_RUNTIME,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        **options: Unpack[ContainerOptions],
    ) -> Container:
        """Create a container and return its handle (start it with ``new_task``).

        ``spec`` is an OCI runtime spec (see ``sandboxclient.oci``; by default
        ``oci.generate_spec()``'s). The root filesystem is a host directory (``rootfs``) or
        a snapshot of an image already in containerd's image store (``image``, unpacked in
        ``snapshotter``, by default overlayfs), which is removed with the container; with an
        image and no spec the image's command, env, working directory and user are used.
        ``labels``, ``runtime`` (runc's by default), ``runtime_options`` and ``extensions``
        go into its record as given. A failed or cancelled create leaves nothing. A
        container that belongs to a sandbox is made with ``Sandbox.new_container``.
        """
        check_options(options)
        request = ContainerRequest(container_id, runtime=runtime, **options)
        return await self._containers.create(request, timeout=timeout)

    async def load_container(
        self, container_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Container:
        """The handle of an existing container; ``await container.task()`` for its task."""
        return await self._containers.load(container_id, timeout=timeout)

    async def get_container(
        self, container_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> ContainerInfo:
        """The store record of a container."""
        return await self._containers.store.get(container_id, timeout=timeout)

    def container_handle(self, info: ContainerInfo) -> Container:
        """The handle of a container record you hold already (from a listing, say), asking
        the daemon nothing; its calls go through this Client, in its namespace."""
        return self._containers.handle(info)

    async def list_containers(
        self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> list[ContainerInfo]:
        """The container records matching any of ``filters`` (containerd filter syntax on
        ``id``, ``image``, ``runtime.name`` and ``labels.<key>``), or all."""
        return await self._containers.store.list(*filters, timeout=timeout)

    async def delete_container(
        self, container_id: str, *, force: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Delete a container's record and snapshot: ``(await load_container(id)).delete()``.

        A container with a task is refused unless ``force=True``. Not idempotent, as Go's
        ``Container.Delete`` is not: a container already gone raises NotFoundError.
        """
        container = await self.load_container(container_id, timeout=timeout)
        await container.delete(force=force, timeout=timeout)
