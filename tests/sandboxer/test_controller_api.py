"""A controller written only against the public ``sandboxclient.sandboxer`` API, behind the
stand-in, driven by a ``sandboxclient.Client``: what a controller author starts from."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import sandboxclient.sandboxer as sandboxer_api
from sandboxclient import Client, FailedPreconditionError, NotFoundError, UnimplementedError
from sandboxclient.sandboxer import SandboxController, current_namespace, messages
from sandboxclient.testing import FakeContainerd
from tests.support.constants import RUNTIME

pytestmark = pytest.mark.anyio


@dataclass
class _Pretend:
    """One sandbox of the controller below: no process, just its lifecycle."""

    sandbox: messages.Sandbox
    created_at: datetime
    pid: int = 0
    exit_status: int | None = None
    exited_at: datetime | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class PretendController(SandboxController):
    """Sandboxes that only pretend to run: Start gives them a pid, Stop ends them with 0."""

    def __init__(self) -> None:
        self.sandboxes: dict[tuple[str, str], _Pretend] = {}
        self.seen_namespaces: set[str] = set()

    def _get(self, sandbox_id: str) -> _Pretend:
        namespace = current_namespace()
        self.seen_namespaces.add(namespace)
        found = self.sandboxes.get((namespace, sandbox_id))
        if found is None:
            raise GRPCError(Status.NOT_FOUND, f"no sandbox {sandbox_id}: not found")
        return found

    async def create(
        self, message: messages.ControllerCreateRequest
    ) -> messages.ControllerCreateResponse:
        assert message.sandbox is not None
        key = (current_namespace(), message.sandbox_id)
        self.sandboxes[key] = _Pretend(message.sandbox, datetime.now(UTC))
        return messages.ControllerCreateResponse(sandbox_id=message.sandbox_id)

    async def start(
        self, message: messages.ControllerStartRequest
    ) -> messages.ControllerStartResponse:
        found = self._get(message.sandbox_id)
        found.pid = 4242
        return messages.ControllerStartResponse(
            sandbox_id=message.sandbox_id,
            pid=found.pid,
            created_at=found.created_at,
            labels=dict(found.sandbox.labels),
        )

    async def stop(
        self, message: messages.ControllerStopRequest
    ) -> messages.ControllerStopResponse:
        found = self._get(message.sandbox_id)
        if found.exit_status is None:
            found.exit_status, found.exited_at = 0, datetime.now(UTC)
            found.exited.set()
        return messages.ControllerStopResponse()

    async def wait(
        self, message: messages.ControllerWaitRequest
    ) -> messages.ControllerWaitResponse:
        found = self._get(message.sandbox_id)
        await found.exited.wait()
        assert found.exit_status is not None
        return messages.ControllerWaitResponse(
            exit_status=found.exit_status, exited_at=found.exited_at
        )

    async def status(
        self, message: messages.ControllerStatusRequest
    ) -> messages.ControllerStatusResponse:
        found = self._get(message.sandbox_id)
        running = found.pid != 0 and found.exit_status is None
        return messages.ControllerStatusResponse(
            sandbox_id=message.sandbox_id,
            pid=found.pid,
            state="SANDBOX_READY" if running else "SANDBOX_NOTREADY",
            info={"pretend": "yes"} if message.verbose else {},
            created_at=found.created_at,
            exited_at=found.exited_at,
        )

    async def metrics(
        self, message: messages.ControllerMetricsRequest
    ) -> messages.ControllerMetricsResponse:
        self._get(message.sandbox_id)
        raise GRPCError(Status.FAILED_PRECONDITION, "nothing to measure: failed precondition")

    async def shutdown(
        self, message: messages.ControllerShutdownRequest
    ) -> messages.ControllerShutdownResponse:
        self.sandboxes.pop((current_namespace(), message.sandbox_id), None)
        return messages.ControllerShutdownResponse()


def test_the_messages_module_is_the_generated_classes_under_their_own_names() -> None:
    assert "messages" in sandboxer_api.__all__
    for name in messages.__all__:
        cls = getattr(messages, name)
        assert isinstance(cls, type), name
        assert cls.__name__ == name or name in {"Sandbox", "SandboxRuntime", "Any"}, name
    assert messages.Sandbox.__name__ == "Sandbox"
    assert messages.Any.__name__ == "Any"
    # All nine calls, both ways.
    for call in ("Create", "Start", "Platform", "Stop", "Wait", "Status", "Shutdown"):
        assert f"Controller{call}Request" in messages.__all__
        assert f"Controller{call}Response" in messages.__all__
    assert {"Metric", "Mount", "Platform", "SandboxRuntime"} <= set(messages.__all__)


async def test_a_minimal_controller_runs_behind_the_stand_in() -> None:
    controller = PretendController()
    async with (
        FakeContainerd(controller=controller, sandboxers=("pretend",)) as fake,
        Client(fake.address, namespace="team-a", sandboxer="pretend") as client,
    ):
        sb = await client.new_sandbox("p1", runtime=RUNTIME, labels={"app": "web"})
        assert fake.sandbox_ids("team-a") == ["p1"]
        assert list(controller.sandboxes) == [("team-a", "p1")]
        started = await sb.start()
        assert started.pid == 4242
        assert started.labels == {"app": "web"}
        status = await sb.status(verbose=True)
        assert status.ready
        assert status.info == {"pretend": "yes"}

        channel = await sb.wait()
        await asyncio.wait_for(fake.wait_for_call("Controller/Wait"), 10)
        assert not channel.done()
        await sb.stop(timeout=1)
        result = await asyncio.wait_for(channel.get(), 10)
        assert (result.error, result.returncode) == (None, 0)
        assert not (await sb.status()).ready

        # The controller's own errors come through with their class; Platform is answered
        # UNIMPLEMENTED before it, as containerd 2.1 does.
        with pytest.raises(FailedPreconditionError, match="nothing to measure"):
            await sb.metrics()
        with pytest.raises(UnimplementedError):
            await sb.platform()
        assert fake.call_count("Controller/Platform") == 1

        await sb.shutdown()
        assert controller.sandboxes == {}
        assert fake.sandbox_ids("team-a") == []
        with pytest.raises(NotFoundError):
            await sb.status()
    assert controller.seen_namespaces == {"team-a"}
