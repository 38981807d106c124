"""The handle of one sandbox: containerd's ``client.Sandbox`` as coroutines."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._convert import (
    AnyLike,
    any_to_pb,
    container_from_pb,
    extensions_to_pb,
    metric_from_pb,
    platform_from_pb,
    sandbox_from_pb,
    sandbox_to_pb,
    spec_to_any,
    start_from_pb,
    status_from_pb,
    to_any_value,
)
from ._models import (
    AnyValue,
    Container,
    ExitChannel,
    Metric,
    Platform,
    RuntimeInfo,
    SandboxInfo,
    SandboxStatus,
    StartResult,
)
from ._options import check_labels
from ._pb import containers_pb, sandbox_pb
from ._validation import identifier_problem, labels_problem
from .errors import InvalidArgumentError, NotFoundError

if TYPE_CHECKING:
    from ._client import Client

__all__ = ("Sandbox",)

_DEFAULT_CONTAINER_SPEC: Mapping[str, Any] = {"ociVersion": "1.2.0"}
# What controllers wait before killing when no grace is given (containerd's CRI uses 10 s).
_CONTROLLER_DEFAULT_GRACE = 10.0
_MAX_GRACE = 2**32 - 1


def _grace_seconds(timeout: float | None) -> int:
    """``timeout`` as containerd's uint32 ``timeout_secs``, refusing what it cannot carry."""
    if timeout is None:
        return 0
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"stop timeout must be a finite number of seconds >= 0, got {timeout!r}")
    grace = math.ceil(timeout)
    if grace > _MAX_GRACE:
        raise ValueError(f"stop timeout must be at most {_MAX_GRACE} seconds, got {timeout!r}")
    return grace


class Sandbox:
    """A sandbox known to containerd, bound to the Client that made or loaded it.

    ``metadata`` is the store record as of creation, loading or the last ``update``;
    ``labels()`` reads them fresh from the store.
    """

    __slots__ = ("_client", "_info", "_pid")

    def __init__(self, client: Client, info: SandboxInfo, *, pid: int | None = None) -> None:
        self._client = client
        self._info = info
        self._pid = pid

    def __repr__(self) -> str:
        return f"<Sandbox {self._info.id!r} sandboxer={self._info.sandboxer!r} pid={self._pid}>"

    @property
    def id(self) -> str:
        """The sandbox id."""
        return self._info.id

    @property
    def client(self) -> Client:
        """The Client this handle calls through."""
        return self._client

    @property
    def metadata(self) -> SandboxInfo:
        """The store record this handle holds."""
        return self._info

    @property
    def sandboxer(self) -> str:
        """The sandbox controller that runs this sandbox."""
        return self._info.sandboxer

    @property
    def pid(self) -> int | None:
        """The sandbox's pid once started (or as its controller reported on load), else None."""
        return self._pid

    def _ids(self) -> dict[str, str]:
        return {"sandbox_id": self._info.id, "sandboxer": self._info.sandboxer}

    async def start(self, *, timeout: float | None = None) -> StartResult:
        """Start the sandbox with its controller."""
        _, controller, _ = self._client._stubs()
        resp = await self._client._call(
            controller.start, sandbox_pb.ControllerStartRequest(**self._ids()), timeout
        )
        result = start_from_pb(resp)
        self._pid = result.pid
        return result

    async def stop(
        self, timeout: float | None = None, *, call_timeout: float | None = None
    ) -> None:
        """Stop the sandbox.

        ``timeout`` is the grace in seconds between the polite signal and the kill, sent as
        containerd's ``timeout_secs`` (whole seconds, rounded up); None or 0 leaves it to the
        controller. The call's own deadline is ``call_timeout``, by default the Client's
        timeout plus that grace, so the call outlives the grace it asks for.
        """
        grace = _grace_seconds(timeout)
        _, controller, _ = self._client._stubs()
        if call_timeout is None and self._client.timeout is not None:
            call_timeout = self._client.timeout + (grace or _CONTROLLER_DEFAULT_GRACE)
        await self._client._call(
            controller.stop,
            sandbox_pb.ControllerStopRequest(timeout_secs=grace, **self._ids()),
            call_timeout,
        )

    async def wait(self, *, timeout: float | None = None) -> ExitChannel:
        """Start waiting for the sandbox to exit; the channel is returned at once.

        The Client makes one Wait call per sandbox however many channels wait on it, and puts
        exactly one ``ExitStatus`` on each. Closing a channel ends that channel only.
        ``timeout`` bounds this channel's wait; by default it has no deadline.
        """
        return self._client._start_wait(self._info.id, self._info.sandboxer, timeout)

    async def shutdown(self, *, timeout: float | None = None) -> None:
        """Shut the sandbox down with its controller and delete its store record.

        A sandbox its controller or the store no longer knows is fine: shutdown is idempotent.
        Any other error is raised.
        """
        self._client._stubs()
        await self._shutdown(timeout, cleanup=False)

    async def _shutdown(self, timeout: float | None, *, cleanup: bool) -> None:
        """The shutdown itself; as clean-up it may run after the Client has closed."""
        store, controller, _ = self._client._stub_tuple()
        with contextlib.suppress(NotFoundError):
            await self._client._call(
                controller.shutdown,
                sandbox_pb.ControllerShutdownRequest(**self._ids()),
                timeout,
                cleanup=cleanup,
            )
        with contextlib.suppress(NotFoundError):
            await self._client._call(
                store.delete,
                sandbox_pb.StoreDeleteRequest(sandbox_id=self._info.id),
                timeout,
                cleanup=cleanup,
            )

    async def labels(self, *, timeout: float | None = None) -> dict[str, str]:
        """The sandbox's labels, read fresh from the store."""
        info = await self._client.get_sandbox(self._info.id, timeout=timeout)
        return dict(info.labels)

    async def status(self, verbose: bool = False, *, timeout: float | None = None) -> SandboxStatus:
        """The sandbox's runtime state as its controller reports it."""
        _, controller, _ = self._client._stubs()
        resp = await self._client._call(
            controller.status,
            sandbox_pb.ControllerStatusRequest(verbose=verbose, **self._ids()),
            timeout,
        )
        return status_from_pb(resp)

    async def platform(self, *, timeout: float | None = None) -> Platform:
        """The platform the sandbox runs on."""
        _, controller, _ = self._client._stubs()
        resp = await self._client._call(
            controller.platform, sandbox_pb.ControllerPlatformRequest(**self._ids()), timeout
        )
        return platform_from_pb(resp.platform)

    async def metrics(self, *, timeout: float | None = None) -> Metric:
        """One metrics sample from the controller."""
        _, controller, _ = self._client._stubs()
        resp = await self._client._call(
            controller.metrics, sandbox_pb.ControllerMetricsRequest(**self._ids()), timeout
        )
        return metric_from_pb(resp.metrics, self._info.id)

    async def update(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        extensions: Mapping[str, AnyLike] | None = None,
        fields: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> SandboxInfo:
        """Change the store record and return it as stored.

        Without ``fields``, the fields given (``labels``, ``extensions``) are replaced whole;
        with them, only those paths change (``labels.<key>``, ``extensions.<key>``, ...).
        """
        new_labels = dict(self._info.labels) if labels is None else check_labels(labels)
        problem = labels_problem(new_labels)
        if problem is not None:
            raise InvalidArgumentError(f"invalid labels on sandbox {self.id!r}: {problem}")
        new_extensions: dict[str, AnyValue] = dict(self._info.extensions)
        if extensions is not None:
            if "" in extensions:
                raise InvalidArgumentError(
                    f"extension key must not be empty on sandbox {self.id!r}"
                )
            new_extensions = {
                k: to_any_value(v, what=f"extension {k!r}") for k, v in extensions.items()
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
        store, _, _ = self._client._stubs()
        resp = await self._client._call(
            store.update,
            sandbox_pb.StoreUpdateRequest(sandbox=sandbox_to_pb(draft), fields=list(fields)),
            timeout,
        )
        if resp.sandbox is not None:
            self._info = sandbox_from_pb(resp.sandbox)
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
        timeout: float | None = None,
    ) -> Container:
        """Create a container that belongs to this sandbox.

        It runs under the sandbox's runtime and spec unless told otherwise.
        """
        problem = identifier_problem(container_id)
        if problem is not None:
            raise InvalidArgumentError(f"invalid container ID: {problem}")
        label_map = dict(labels or {})
        problem = labels_problem(label_map)
        if problem is not None:
            raise InvalidArgumentError(f"invalid labels on container {container_id!r}: {problem}")
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
        ext = {k: to_any_value(v, what=f"extension {k!r}") for k, v in (extensions or {}).items()}
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
        _, _, containers = self._client._stubs()
        resp = await self._client._call(
            containers.create, containers_pb.CreateContainerRequest(container=record), timeout
        )
        return container_from_pb(resp.container or record)
