"""The connection to containerd: one channel, one namespace, the tasks it owns."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import betterproto2
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from ._convert import (
    AnyLike,
    SandboxPb,
    SandboxRuntimePb,
    any_to_pb,
    containers_pb,
    extensions_to_pb,
    sandbox_from_pb,
    sandbox_pb,
    to_utc,
    utcnow,
)
from ._models import UNKNOWN_EXIT_STATUS, ExitChannel, ExitStatus, SandboxInfo
from ._options import (
    NewSandboxOpt,
    SandboxDraft,
    with_sandbox_extension,
    with_sandbox_labels,
    with_sandbox_runtime,
    with_sandbox_spec,
    with_sandboxer,
)
from ._sandbox import Sandbox
from ._validation import identifier_problem, labels_problem
from .errors import (
    CanceledError,
    ClientClosedError,
    ContainerdError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    map_error,
    raise_mapped,
)

__all__ = ("DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "Client", "ClientState")

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_TIMEOUT = 30.0
NAMESPACE_HEADER = "containerd-namespace"
_ROLLBACK_TIMEOUT = 10.0
# Backoff of a wait whose daemon or controller went away, as containerd's proxy does it.
_RETRY_FIRST = 0.128
_RETRY_MAX = 4.096

_log = logging.getLogger("sandboxclient")
_Resp = TypeVar("_Resp", bound=betterproto2.Message)
_Req = TypeVar("_Req", bound=betterproto2.Message)

# What a failed call can raise below the library; everything else propagates untouched.
_CALL_ERRORS = (GRPCError, StreamTerminatedError, ProtocolError, OSError, asyncio.TimeoutError)


_CONNECTION_LOST = (StreamTerminatedError, ConnectionResetError, BrokenPipeError)
_SAFE_TO_RESEND: frozenset[type[betterproto2.Message]] = frozenset(
    {
        sandbox_pb.StoreGetRequest,
        sandbox_pb.StoreListRequest,
        sandbox_pb.ControllerStatusRequest,
        sandbox_pb.ControllerPlatformRequest,
        sandbox_pb.ControllerMetricsRequest,
        sandbox_pb.ControllerShutdownRequest,
        sandbox_pb.ControllerStopRequest,
        containers_pb.GetContainerRequest,
        containers_pb.ListContainersRequest,
    }
)


class ClientState(enum.Enum):
    """Where a Client is in its life."""

    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


def _socket_path(address: str) -> str:
    if address.startswith("unix://"):
        return address[len("unix://") :]
    if address.startswith("unix:"):
        return address[len("unix:") :]
    return address


class Client:
    """A connection to containerd in one namespace.

    Use it as ``async with Client(address) as client:`` or call ``aclose()`` when done. The
    channel connects on the first call. Every call carries the namespace and a deadline (the
    client's ``timeout`` unless the call gives its own); waits have none unless asked.
    Closing the Client cancels every wait it started; their channels then yield a status whose
    error is a ``ClientClosedError``.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        namespace: str = "default",
        sandboxer: str = "shim",
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(address, str) or not address:
            raise ValueError("address must be a non-empty socket path")
        problem = identifier_problem(namespace) if isinstance(namespace, str) else "not a str"
        if problem is not None:
            raise InvalidArgumentError(f"namespace validation: {problem}")
        if not isinstance(sandboxer, str) or not sandboxer:
            raise ValueError("sandboxer must be a non-empty string")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive or None")
        self._address = _socket_path(address)
        self._namespace = namespace
        self._sandboxer = sandboxer
        self._timeout = timeout
        self._metadata: Mapping[str, str] = {NAMESPACE_HEADER: namespace}
        self._state = ClientState.UNOPENED
        self._channel: Channel | None = None
        self._store: sandbox_pb.StoreStub | None = None
        self._controller: sandbox_pb.ControllerStub | None = None
        self._containers: containers_pb.ContainersStub | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The daemon's socket path."""
        return self._address

    @property
    def namespace(self) -> str:
        """The containerd namespace every call is made in."""
        return self._namespace

    @property
    def sandboxer(self) -> str:
        """The default sandbox controller for new sandboxes."""
        return self._sandboxer

    @property
    def timeout(self) -> float | None:
        """The default deadline of a call, in seconds."""
        return self._timeout

    @property
    def state(self) -> ClientState:
        """UNOPENED until the first call or ``async with``, then OPENED, then CLOSED."""
        return self._state

    async def __aenter__(self) -> Client:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open(self) -> None:
        if self._state is ClientState.CLOSED:
            raise ClientClosedError("the client is closed")
        if self._channel is None:
            self._channel = Channel(path=self._address)
            self._store = sandbox_pb.StoreStub(self._channel, metadata=self._metadata)
            self._controller = sandbox_pb.ControllerStub(self._channel, metadata=self._metadata)
            self._containers = containers_pb.ContainersStub(self._channel, metadata=self._metadata)
            self._state = ClientState.OPENED

    async def aclose(self) -> None:
        """Cancel every outstanding wait and close the connection. Safe to call twice."""
        if self._state is ClientState.CLOSED:
            return
        self._state = ClientState.CLOSED
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Shielded so that a cancelled close still reaps what it cancelled.
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)
        if self._channel is not None:
            self._channel.close()

    # -- calls -------------------------------------------------------------------------------

    def _stubs(
        self,
    ) -> tuple[sandbox_pb.StoreStub, sandbox_pb.ControllerStub, containers_pb.ContainersStub]:
        if self._state is not ClientState.OPENED:
            self._open()
        assert self._store is not None
        assert self._controller is not None
        assert self._containers is not None
        return self._store, self._controller, self._containers

    async def _call(
        self,
        method: Callable[..., Awaitable[_Resp]],
        request: betterproto2.Message,
        timeout: float | None = None,
        *,
        default_timeout: bool = True,
    ) -> _Resp:
        """Make one unary call, mapping every failure to the errors tree."""
        if timeout is None and default_timeout:
            timeout = self._timeout
        try:
            return await method(request, timeout=timeout)
        except _CONNECTION_LOST as exc:
            # A daemon that restarted leaves a dead connection that the loop may not have
            # noticed yet; a call that is safe to repeat goes once more on a new one.
            if type(request) not in _SAFE_TO_RESEND:
                raise_mapped(exc, address=self._address)
        except _CALL_ERRORS as exc:
            raise_mapped(exc, address=self._address)
        try:
            return await method(request, timeout=timeout)
        except _CALL_ERRORS as exc:
            raise_mapped(exc, address=self._address)

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- sandboxes ---------------------------------------------------------------------------

    async def new_sandbox(
        self,
        sandbox_id: str,
        *opts: NewSandboxOpt,
        labels: Mapping[str, str] | None = None,
        runtime: str | None = None,
        runtime_options: AnyLike | None = None,
        spec: Mapping[str, Any] | None = None,
        extensions: Mapping[str, AnyLike] | None = None,
        sandboxer: str | None = None,
        timeout: float | None = None,
    ) -> Sandbox:
        """Create a sandbox in the store and with its controller, and return its handle.

        Options apply in order, then the keyword forms. If the controller refuses the sandbox,
        the store record is deleted before the error is raised, so nothing is left behind.
        """
        if not sandbox_id:
            raise ValueError("sandbox ID must be specified")
        problem = identifier_problem(sandbox_id)
        if problem is not None:
            raise InvalidArgumentError(f"invalid sandbox ID: {problem}")
        # The keyword forms are the same options, applied after the positional ones.
        keyword_opts: list[NewSandboxOpt] = []
        if runtime is not None or runtime_options is not None:
            keyword_opts.append(with_sandbox_runtime(runtime or "", runtime_options))
        if labels is not None:
            keyword_opts.append(with_sandbox_labels(labels))
        if spec is not None:
            keyword_opts.append(with_sandbox_spec(spec))
        for key, value in (extensions or {}).items():
            keyword_opts.append(with_sandbox_extension(key, value))
        if sandboxer is not None:
            keyword_opts.append(with_sandboxer(sandboxer))
        draft = SandboxDraft(sandbox_id)
        for opt in (*opts, *keyword_opts):
            opt(draft)
        _check_draft(draft)
        return await self._create_sandbox(draft, timeout)

    async def _create_sandbox(self, draft: SandboxDraft, timeout: float | None) -> Sandbox:
        store, controller, _ = self._stubs()
        now = utcnow()
        record = SandboxPb(
            sandbox_id=draft.id,
            # Always present: a sandbox without a runtime message crashes containerd 2.1.
            runtime=SandboxRuntimePb(
                name=draft.runtime_name, options=any_to_pb(draft.runtime_options)
            ),
            spec=any_to_pb(draft.spec),
            labels=draft.labels,
            created_at=now,
            updated_at=now,
            extensions=extensions_to_pb(draft.extensions),
            sandboxer=draft.sandboxer or self._sandboxer,
        )
        created = await self._call(
            store.create, sandbox_pb.StoreCreateRequest(sandbox=record), timeout
        )
        stored = created.sandbox or record
        if stored.runtime is None:
            stored.runtime = SandboxRuntimePb()
        try:
            await self._call(
                controller.create,
                sandbox_pb.ControllerCreateRequest(
                    sandbox_id=draft.id, sandbox=stored, sandboxer=stored.sandboxer
                ),
                timeout,
            )
        except BaseException:
            await self._rollback(draft.id, stored.sandboxer)
            raise
        return Sandbox(self, sandbox_from_pb(stored))

    @contextlib.asynccontextmanager
    async def sandbox(
        self,
        sandbox_id: str,
        *opts: NewSandboxOpt,
        timeout: float | None = None,
        **options: Any,
    ) -> AsyncIterator[Sandbox]:
        """Create and start a sandbox for the ``async with`` block, and shut it down after.

        Takes the arguments of ``new_sandbox``. The shutdown runs on normal exit, on error and
        on cancellation; it is shielded from the cancellation so nothing is left behind.
        """
        sb = await self.new_sandbox(sandbox_id, *opts, timeout=timeout, **options)
        try:
            await sb.start(timeout=timeout)
            yield sb
        finally:
            with anyio.CancelScope(shield=True):
                await sb.shutdown(timeout=timeout)

    async def _rollback(self, sandbox_id: str, sandboxer: str) -> None:
        """Undo a half-made sandbox: what the controller started, then the store record.

        Shielded and bounded, so a cancelled or failed creation still leaves nothing behind.
        """
        store, controller, _ = self._stubs()
        undo: list[tuple[Callable[..., Awaitable[Any]], betterproto2.Message]] = [
            (
                controller.shutdown,
                sandbox_pb.ControllerShutdownRequest(sandbox_id=sandbox_id, sandboxer=sandboxer),
            ),
            (store.delete, sandbox_pb.StoreDeleteRequest(sandbox_id=sandbox_id)),
        ]
        with anyio.CancelScope(shield=True), anyio.move_on_after(_ROLLBACK_TIMEOUT):
            for method, request in undo:
                try:
                    await self._call(method, request, _ROLLBACK_TIMEOUT)
                except NotFoundError:
                    pass
                except ContainerdError as exc:
                    _log.warning("rolling back sandbox %s: %s", sandbox_id, exc)

    async def load_sandbox(self, sandbox_id: str, *, timeout: float | None = None) -> Sandbox:
        """The handle of an existing sandbox, with its pid when its controller knows it."""
        info = await self.get_sandbox(sandbox_id, timeout=timeout)
        _, controller, _ = self._stubs()
        pid: int | None = None
        try:
            status = await self._call(
                controller.status,
                sandbox_pb.ControllerStatusRequest(sandbox_id=sandbox_id, sandboxer=info.sandboxer),
                timeout,
            )
            pid = status.pid or None
        except (NotFoundError, UnimplementedError):
            # The record is still worth a handle: it is how the caller can shut it down.
            pass
        return Sandbox(self, info, pid=pid)

    async def get_sandbox(self, sandbox_id: str, *, timeout: float | None = None) -> SandboxInfo:
        """The store record of a sandbox."""
        if not sandbox_id:
            raise ValueError("sandbox ID must be specified")
        store, _, _ = self._stubs()
        resp = await self._call(
            store.get, sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id), timeout
        )
        if resp.sandbox is None:
            raise NotFoundError(f"sandbox {sandbox_id!r} not found")
        return sandbox_from_pb(resp.sandbox)

    async def list_sandboxes(
        self, *filters: str, timeout: float | None = None
    ) -> list[SandboxInfo]:
        """The store records matching any of ``filters`` (containerd filter syntax), or all."""
        store, _, _ = self._stubs()
        resp = await self._call(
            store.list, sandbox_pb.StoreListRequest(filters=list(filters)), timeout
        )
        return [sandbox_from_pb(item) for item in resp.list]

    async def delete_sandbox(self, sandbox_id: str, *, timeout: float | None = None) -> None:
        """Remove a sandbox's store record only; ``Sandbox.shutdown`` also tells its controller."""
        store, _, _ = self._stubs()
        await self._call(
            store.delete, sandbox_pb.StoreDeleteRequest(sandbox_id=sandbox_id), timeout
        )

    # -- waiting -----------------------------------------------------------------------------

    def _start_wait(self, sandbox_id: str, sandboxer: str, timeout: float | None) -> ExitChannel:
        _, controller, _ = self._stubs()
        queue: asyncio.Queue[ExitStatus] = asyncio.Queue(maxsize=1)
        request = sandbox_pb.ControllerWaitRequest(sandbox_id=sandbox_id, sandboxer=sandboxer)
        task = self._spawn(
            self._wait(controller, request, queue, timeout), f"sandboxclient-wait-{sandbox_id}"
        )
        return ExitChannel(queue, task)

    async def _wait(
        self,
        controller: sandbox_pb.ControllerStub,
        request: sandbox_pb.ControllerWaitRequest,
        queue: asyncio.Queue[ExitStatus],
        timeout: float | None,
    ) -> None:
        try:
            status = await self._wait_with_retries(controller, request, timeout)
        except asyncio.CancelledError:
            error: ContainerdError = (
                ClientClosedError("the client was closed while waiting")
                if self._state is ClientState.CLOSED
                else CanceledError("the wait channel was closed")
            )
            queue.put_nowait(ExitStatus(UNKNOWN_EXIT_STATUS, None, error))
            raise
        except Exception as exc:
            mapped = map_error(exc) or UnknownError(f"wait failed: {exc!r}")
            status = ExitStatus(UNKNOWN_EXIT_STATUS, None, mapped)
        queue.put_nowait(status)

    async def _wait_with_retries(
        self,
        controller: sandbox_pb.ControllerStub,
        request: sandbox_pb.ControllerWaitRequest,
        timeout: float | None,
    ) -> ExitStatus:
        """Wait through daemon and controller restarts, until the exit or the deadline."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = _RETRY_FIRST
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceededError(
                    f"sandbox {request.sandbox_id!r} did not exit within {timeout} s"
                )
            try:
                resp = await self._call(controller.wait, request, remaining, default_timeout=False)
            except UnavailableError as exc:
                pause = delay if remaining is None else min(delay, remaining)
                _log.info("wait for %s: %s; retrying in %.3f s", request.sandbox_id, exc, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            except DeadlineExceededError:
                if deadline is not None and loop.time() >= deadline:
                    raise DeadlineExceededError(
                        f"sandbox {request.sandbox_id!r} did not exit within {timeout} s"
                    ) from None
                raise
            return ExitStatus(resp.exit_status, to_utc(resp.exited_at))


def _check_draft(draft: SandboxDraft) -> None:
    problem = labels_problem(draft.labels)
    if problem is not None:
        raise InvalidArgumentError(f"invalid labels on sandbox {draft.id!r}: {problem}")
    for key in draft.extensions:
        if not key:
            raise InvalidArgumentError(f"extension key must not be empty on sandbox {draft.id!r}")
