"""The handle of one sandbox: containerd's ``client.Sandbox`` as coroutines."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ._connection import USE_CLIENT_DEFAULT, Timeout
from ._container import ContainerStore
from ._controller import Controller
from ._convert import AnyLike, any_to_pb, extensions_to_pb, spec_to_any, to_any_value
from ._models import (
    AnyValue,
    Container,
    Metric,
    Platform,
    RuntimeInfo,
    SandboxInfo,
    SandboxStatus,
    StartResult,
)
from ._options import checked_extension_key, checked_labels
from ._pb import containers_pb
from ._store import SandboxStore
from ._validation import checked_identifier
from ._wait import ExitChannel
from .errors import NotFoundError

__all__ = ("Sandbox",)

_DEFAULT_CONTAINER_SPEC: Mapping[str, Any] = {"ociVersion": "1.2.0"}


class Sandbox:
    """A sandbox known to containerd, bound to the Client that made or loaded it.

    ``metadata`` is the store record as of creation, loading or the last ``update``;
    ``labels()`` reads them fresh from the store.
    """

    __slots__ = ("_containers", "_controller", "_info", "_pid", "_store")

    def __init__(
        self,
        info: SandboxInfo,
        *,
        store: SandboxStore,
        controller: Controller,
        containers: ContainerStore,
        pid: int | None = None,
    ) -> None:
        self._info = info
        self._store = store
        self._controller = controller
        self._containers = containers
        self._pid = pid

    def __repr__(self) -> str:
        return f"<Sandbox {self._info.id!r} sandboxer={self._info.sandboxer!r} pid={self._pid}>"

    @property
    def id(self) -> str:
        """The sandbox id."""
        return self._info.id

    @property
    def metadata(self) -> SandboxInfo:
        """The store record this handle holds."""
        return self._info

    @property
    def sandboxer(self) -> str:
        """The sandbox controller that runs this sandbox."""
        return self._info.sandboxer

    @property
    def controller(self) -> Controller:
        """The handle of that controller."""
        return self._controller

    @property
    def pid(self) -> int | None:
        """The sandbox's pid once started (or as its controller reported on load), else None."""
        return self._pid

    async def start(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> StartResult:
        """Start the sandbox with its controller."""
        result = await self._controller.start(self.id, timeout=timeout)
        self._pid = result.pid
        return result

    async def stop(
        self, *, grace: float | None = None, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Stop the sandbox: the polite signal, then the kill after ``grace`` seconds.

        ``grace`` travels as containerd's ``timeout_secs`` (whole seconds, rounded up); None
        or 0 leaves it to the controller. ``timeout`` is the call's deadline, by default the
        Client's plus that grace, so the call outlives the grace it asks for.
        """
        await self._controller.stop(self.id, grace=grace, timeout=timeout)

    async def wait(self, *, timeout: float | None = None) -> ExitChannel:
        """Start waiting for the sandbox to exit; the channel is returned at once.

        The Client makes one Wait call per sandbox however many channels wait on it, and puts
        exactly one ``ExitStatus`` on each. Closing a channel ends that channel only.
        ``timeout`` bounds this channel's wait; by default it has no deadline.
        """
        return self._controller.wait(self.id, timeout=timeout)

    async def shutdown(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Shut the sandbox down with its controller and delete its store record.

        A sandbox its controller or the store no longer knows is fine: shutdown is idempotent.
        Any other error is raised.
        """
        with contextlib.suppress(NotFoundError):
            await self._controller.shutdown(self.id, timeout=timeout)
        with contextlib.suppress(NotFoundError):
            await self._store.delete(self.id, timeout=timeout)

    async def labels(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> dict[str, str]:
        """The sandbox's labels, read fresh from the store."""
        info = await self._store.get(self.id, timeout=timeout)
        return dict(info.labels)

    async def set_labels(
        self, labels: Mapping[str, str], *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> dict[str, str]:
        """Set (or, with an empty value, remove) the labels given and keep all others.

        Only the paths ``labels.<key>`` are written, so two writers of different keys do
        not lose each other's change. Returns the labels as stored.
        """
        edits = checked_labels(labels, self.id)
        info = await self.update(
            labels=edits, fields=[f"labels.{k}" for k in edits], timeout=timeout
        )
        return dict(info.labels)

    async def status(
        self, *, verbose: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> SandboxStatus:
        """The sandbox's runtime state as its controller reports it."""
        return await self._controller.status(self.id, verbose=verbose, timeout=timeout)

    async def platform(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Platform:
        """The platform the sandbox runs on."""
        return await self._controller.platform(self.id, timeout=timeout)

    async def metrics(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Metric:
        """One metrics sample from the controller."""
        return await self._controller.metrics(self.id, timeout=timeout)

    async def update(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        extensions: Mapping[str, AnyLike] | None = None,
        fields: Sequence[str] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> SandboxInfo:
        """Change the store record and return it as stored.

        Without ``fields``, the fields given (``labels``, ``extensions``) are replaced whole;
        with them, only those paths change (``labels.<key>``, ``extensions.<key>``, ...).
        """
        new_labels = dict(self._info.labels)
        if labels is not None:
            new_labels = checked_labels(labels, self.id)
        new_extensions: dict[str, AnyValue] = dict(self._info.extensions)
        if extensions is not None:
            new_extensions = {
                checked_extension_key(k, self.id): to_any_value(v, what=f"extension {k!r}")
                for k, v in extensions.items()
            }
        if fields is None:
            fields = [
                name
                for name, given in (("labels", labels), ("extensions", extensions))
                if given is not None
            ]
            if not fields:
                return self._info
        draft = dataclasses.replace(self._info, labels=new_labels, extensions=new_extensions)
        self._info = await self._store.update(draft, fields, timeout=timeout)
        return self._info

    async def new_container(
        self,
        container_id: str,
        *,
        image: str = "",
        labels: Mapping[str, str] | None = None,
        spec: Mapping[str, Any] | None = None,
        runtime: str | None = None,
        runtime_options: AnyLike | None = None,
        snapshotter: str = "",
        snapshot_key: str = "",
        extensions: Mapping[str, AnyLike] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Container:
        """Create a container that belongs to this sandbox.

        It runs under the sandbox's runtime and spec unless told otherwise.
        """
        checked_identifier(container_id, "container ID")
        label_map = checked_labels(labels or {}, container_id)
        if runtime is None:
            runtime_info = self._info.runtime
            if runtime_options is not None:
                runtime_info = RuntimeInfo(
                    runtime_info.name, to_any_value(runtime_options, what="runtime options")
                )
        else:
            options = (
                None
                if runtime_options is None
                else to_any_value(runtime_options, what="runtime options")
            )
            runtime_info = RuntimeInfo(runtime, options)
        if spec is not None:
            spec_value: AnyValue = spec_to_any(spec)
        elif self._info.spec_any is not None:
            spec_value = self._info.spec_any
        else:
            spec_value = spec_to_any(_DEFAULT_CONTAINER_SPEC)
        ext = {
            checked_extension_key(k, container_id): to_any_value(v, what=f"extension {k!r}")
            for k, v in (extensions or {}).items()
        }
        record = containers_pb.Container(
            id=container_id,
            labels=label_map,
            image=image,
            runtime=containers_pb.ContainerRuntime(
                name=runtime_info.name, options=any_to_pb(runtime_info.options)
            ),
            spec=any_to_pb(spec_value),
            snapshotter=snapshotter,
            snapshot_key=snapshot_key,
            extensions=extensions_to_pb(ext),
            sandbox=self._info.id,
        )
        return await self._containers.create(record, timeout=timeout)
