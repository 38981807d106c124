"""One sandbox controller, as Go's ``client.SandboxController(name)`` gives it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ._facts._clock import to_utc
from ._facts._golang import go_quote
from ._models import (
    ExitStatus,
    Mount,
    Platform,
    SandboxInfo,
    SandboxStatus,
    StartResult,
)
from ._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout, UseClientDefault
from ._plumbing._wait import ExitChannel, WaitRegistry
from ._sandbox_metrics import SandboxMetrics
from ._wire._convert import (
    AnyLike,
    any_to_pb,
    mount_to_pb,
    platform_from_pb,
    sandbox_to_pb,
    start_from_pb,
    status_from_pb,
    to_any_value,
)
from ._wire._metrics import metrics_from_pb
from ._wire._pb import sandbox_pb

__all__ = ("CONTROLLER_DEFAULT_GRACE", "Controller")

CONTROLLER_DEFAULT_GRACE = 10.0
"""What controllers wait before killing when a stop gives no grace (containerd's CRI: 10 s)."""
_MAX_GRACE = 2**32 - 1


def grace_seconds(grace: float | None) -> int:
    """``grace`` as containerd's uint32 ``timeout_secs``, refusing what it cannot carry."""
    if grace is None:
        return 0
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not math.isfinite(grace):
        raise ValueError(f"stop grace must be a finite number of seconds >= 0, got {grace!r}")
    if grace < 0:
        raise ValueError(f"stop grace must be a finite number of seconds >= 0, got {grace!r}")
    seconds = math.ceil(grace)
    if seconds > _MAX_GRACE:
        raise ValueError(f"stop grace must be at most {_MAX_GRACE} seconds, got {grace!r}")
    return seconds


class Controller:
    """The sandbox controller (sandboxer) ``name``, reached through containerd.

    Every method names the sandbox by id; ``Sandbox`` calls these for its own.
    """

    def __init__(self, connection: Connection, waits: WaitRegistry, name: str) -> None:
        self._connection = connection
        self._waits = waits
        self._name = name

    def __repr__(self) -> str:
        return f"<Controller {self._name!r}>"

    @property
    def name(self) -> str:
        """The sandboxer's name, as containerd's config knows it."""
        return self._name

    def _stub(self) -> sandbox_pb.ControllerStub:
        return self._connection.stub(sandbox_pb.ControllerStub)

    async def create(
        self,
        sandbox: SandboxInfo,
        *,
        rootfs: Sequence[Mount] = (),
        netns_path: str = "",
        annotations: Mapping[str, str] | None = None,
        options: AnyLike | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> None:
        """Have the controller create ``sandbox`` (whose store record must exist)."""
        await self._connection.call(
            self._stub().create,
            sandbox_pb.ControllerCreateRequest(
                sandbox_id=sandbox.id,
                rootfs=[mount_to_pb(m) for m in rootfs],
                options=None
                if options is None
                else any_to_pb(to_any_value(options, what="options")),
                netns_path=netns_path,
                annotations=dict(annotations or {}),
                # Always with a runtime message: containerd 2.1 crashes without one.
                sandbox=sandbox_to_pb(sandbox),
                sandboxer=self._name,
            ),
            timeout,
        )

    async def start(self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> StartResult:
        """Start the sandbox."""
        resp = await self._connection.call(
            self._stub().start,
            sandbox_pb.ControllerStartRequest(sandbox_id=sandbox_id, sandboxer=self._name),
            timeout,
        )
        return start_from_pb(resp)

    async def stop(
        self,
        sandbox_id: str,
        *,
        grace: float | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> None:
        """Stop the sandbox: the polite signal, then the kill after ``grace`` seconds.

        ``grace`` travels as containerd's ``timeout_secs`` (whole seconds, rounded up); None
        or 0 leaves it to the controller. By default the call's deadline is the Client's
        plus that grace, so the call outlives the grace it asks for.
        """
        seconds = grace_seconds(grace)
        if isinstance(timeout, UseClientDefault) and self._connection.timeout is not None:
            timeout = self._connection.timeout + (seconds or CONTROLLER_DEFAULT_GRACE)
        await self._connection.call(
            self._stub().stop,
            sandbox_pb.ControllerStopRequest(
                sandbox_id=sandbox_id, timeout_secs=seconds, sandboxer=self._name
            ),
            timeout,
            idempotent=True,
        )

    def wait(self, sandbox_id: str, *, timeout: float | None = None) -> ExitChannel:
        """A channel for the sandbox's exit, returned at once (see ``Sandbox.wait``)."""
        request = sandbox_pb.ControllerWaitRequest(sandbox_id=sandbox_id, sandboxer=self._name)
        stub = self._stub()

        async def wait_once() -> ExitStatus:
            resp = await self._connection.call(stub.wait, request, None)
            return ExitStatus(resp.exit_status, to_utc(resp.exited_at))

        return self._waits.channel(
            ("sandbox", self._name, sandbox_id),
            wait_once,
            what=f"sandbox {go_quote(sandbox_id)}",
            timeout=timeout,
        )

    async def status(
        self, sandbox_id: str, *, verbose: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> SandboxStatus:
        """The sandbox's state as the controller reports it."""
        resp = await self._connection.call(
            self._stub().status,
            sandbox_pb.ControllerStatusRequest(
                sandbox_id=sandbox_id, verbose=verbose, sandboxer=self._name
            ),
            timeout,
            idempotent=True,
        )
        return status_from_pb(resp)

    async def platform(self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Platform:
        """The platform the sandbox runs on."""
        resp = await self._connection.call(
            self._stub().platform,
            sandbox_pb.ControllerPlatformRequest(sandbox_id=sandbox_id, sandboxer=self._name),
            timeout,
            idempotent=True,
        )
        return platform_from_pb(resp.platform)

    async def metrics(
        self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> SandboxMetrics:
        """One metrics sample of the sandbox, decoded (see :class:`SandboxMetrics`).

        A sample that carries nothing, or nothing this client decodes, is an InternalError
        naming its type.
        """
        resp = await self._connection.call(
            self._stub().metrics,
            sandbox_pb.ControllerMetricsRequest(sandbox_id=sandbox_id, sandboxer=self._name),
            timeout,
            idempotent=True,
        )
        return metrics_from_pb(resp.metrics, f"sandbox {go_quote(sandbox_id)}")

    async def update(
        self,
        sandbox: SandboxInfo,
        fields: Sequence[str] = (),
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> None:
        """Tell the controller of changed fields of ``sandbox``."""
        await self._connection.call(
            self._stub().update,
            sandbox_pb.ControllerUpdateRequest(
                sandbox_id=sandbox.id,
                sandboxer=self._name,
                sandbox=sandbox_to_pb(sandbox),
                fields=list(fields),
            ),
            timeout,
        )

    async def shutdown(self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Have the controller release everything the sandbox holds."""
        await self._connection.call(
            self._stub().shutdown,
            sandbox_pb.ControllerShutdownRequest(sandbox_id=sandbox_id, sandboxer=self._name),
            timeout,
            idempotent=True,
        )
