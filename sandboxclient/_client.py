"""The connection to containerd: one channel, one namespace, the tasks it owns."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar

import betterproto2
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from ._common import NAMESPACE_HEADER, UNKNOWN_EXIT_STATUS, to_utc, utcnow
from ._convert import (
    AnyLike,
    any_to_pb,
    extensions_to_pb,
    sandbox_from_pb,
    to_any_value,
)
from ._errdefs import map_error, raise_mapped
from ._models import (
    ExitChannel,
    ExitStatus,
    SandboxInfo,
)
from ._options import (
    NewSandboxOpt,
    SandboxDraft,
    with_sandbox_extension,
    with_sandbox_labels,
    with_sandbox_runtime,
    with_sandbox_spec,
    with_sandboxer,
)
from ._pb import SandboxPb, SandboxRuntimePb, containers_pb, sandbox_pb
from ._sandbox import Sandbox
from ._validation import identifier_problem, labels_problem
from ._wire import _Channel, _RecordListReply, _RecordReply
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
)

__all__ = ("DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "Client", "ClientState")

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_TIMEOUT = 30.0
_STORE_GET = "/containerd.services.sandbox.v1.Store/Get"
_STORE_LIST = "/containerd.services.sandbox.v1.Store/List"
_ROLLBACK_TIMEOUT = 10.0
# Backoff of a wait whose daemon or controller went away, as containerd's proxy does it.
_RETRY_FIRST = 0.128
_RETRY_MAX = 4.096

_log = logging.getLogger("sandboxclient")
_Resp = TypeVar("_Resp", bound=betterproto2.Message)
_Req = TypeVar("_Req", bound=betterproto2.Message)
_T = TypeVar("_T")

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
        self._channel: _Channel | None = None
        self._store: sandbox_pb.StoreStub | None = None
        self._controller: sandbox_pb.ControllerStub | None = None
        self._containers: containers_pb.ContainersStub | None = None
        self._cleanups: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waits: dict[tuple[str, str], _SharedWait] = {}

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
            self._channel = _Channel(self._address)
            self._store = sandbox_pb.StoreStub(self._channel, metadata=self._metadata)
            self._controller = sandbox_pb.ControllerStub(self._channel, metadata=self._metadata)
            self._containers = containers_pb.ContainersStub(self._channel, metadata=self._metadata)
            self._state = ClientState.OPENED

    async def aclose(self) -> None:
        """Cancel every outstanding wait, finish any clean-up under way, close the connection.

        Safe to call twice or at once from several tasks; a cancelled ``aclose()`` still
        closes (the cancellation is raised once it has).
        """
        if self._closing is None:
            self._state = ClientState.CLOSED
            self._closing = asyncio.ensure_future(self._close())
        await _unstoppable(self._closing)

    async def _close(self) -> None:
        try:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            # Roll-backs and scoped shutdowns are bounded; let them finish their work.
            while self._cleanups:
                await asyncio.wait(list(self._cleanups))
        finally:
            if self._channel is not None:
                await self._channel.shut()

    async def _cleanup(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run clean-up work to its end even if the caller is cancelled, then re-raise that.

        The Client owns it: ``aclose()`` waits for it, and it may use the connection after
        the Client has closed, closing it again when done.
        """
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanup_done)
        return await _unstoppable(task)

    def _cleanup_done(self, task: asyncio.Task[Any]) -> None:
        self._cleanups.discard(task)
        if self._state is ClientState.CLOSED and not self._cleanups and self._channel is not None:
            self._channel.close()

    # -- calls -------------------------------------------------------------------------------

    def _stubs(
        self,
    ) -> tuple[sandbox_pb.StoreStub, sandbox_pb.ControllerStub, containers_pb.ContainersStub]:
        if self._state is not ClientState.OPENED:
            self._open()
        return self._stub_tuple()

    def _stub_tuple(
        self,
    ) -> tuple[sandbox_pb.StoreStub, sandbox_pb.ControllerStub, containers_pb.ContainersStub]:
        assert self._store is not None
        assert self._controller is not None
        assert self._containers is not None
        return self._store, self._controller, self._containers

    async def _call(
        self,
        method: Callable[..., Awaitable[_T]],
        request: betterproto2.Message,
        timeout: float | None = None,
        *,
        default_timeout: bool = True,
        cleanup: bool = False,
    ) -> _T:
        """Make one unary call, mapping every failure to the errors tree.

        Once the Client is closed only clean-up work may call; anything else, including a
        call that was in flight when it closed, raises ``ClientClosedError``.
        """
        if timeout is None and default_timeout:
            timeout = self._timeout
        if self._state is ClientState.CLOSED and not cleanup:
            raise ClientClosedError("the client is closed")
        try:
            return await method(request, timeout=timeout)
        except _CONNECTION_LOST as exc:
            self._raise_if_closed(exc, cleanup)
            # A daemon that restarted leaves a dead connection that the loop may not have
            # noticed yet; a call that is safe to repeat goes once more on a new one.
            if type(request) not in _SAFE_TO_RESEND:
                raise_mapped(exc, address=self._address)
        except _CALL_ERRORS as exc:
            self._raise_if_closed(exc, cleanup)
            raise_mapped(exc, address=self._address)
        try:
            return await method(request, timeout=timeout)
        except _CALL_ERRORS as exc:
            self._raise_if_closed(exc, cleanup)
            raise_mapped(exc, address=self._address)

    def _raise_if_closed(self, exc: BaseException, cleanup: bool) -> None:
        if self._state is ClientState.CLOSED and not cleanup:
            raise ClientClosedError("the client was closed during the call") from exc

    def _spawn(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        task = asyncio.ensure_future(coro)
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
        if runtime is not None:
            keyword_opts.append(with_sandbox_runtime(runtime, runtime_options))
        elif runtime_options is not None:
            keyword_opts.append(_with_runtime_options(runtime_options))
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
        try:
            created = await self._call(
                store.create, sandbox_pb.StoreCreateRequest(sandbox=record), timeout
            )
        except BaseException as exc:
            if _may_have_landed(exc):
                # The daemon may have written the record without our hearing back.
                await self._cleanup(self._rollback_unanswered(record, now))
            raise
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
            await self._cleanup(self._rollback(draft.id, stored.sandboxer, controller=True))
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
        on cancellation, to its end even if cancelled again. If the block raised or was
        cancelled, that is what propagates, and a failed shutdown is logged; otherwise the
        shutdown's own error is raised.
        """
        sb = await self.new_sandbox(sandbox_id, *opts, timeout=timeout, **options)
        bound = timeout or self._timeout or _ROLLBACK_TIMEOUT
        try:
            await sb.start(timeout=timeout)
            yield sb
        except BaseException:
            try:
                await self._cleanup(sb._shutdown(bound, cleanup=True))
            except ContainerdError as exc:
                _log.warning("shutting down sandbox %s after an error: %s", sandbox_id, exc)
            raise
        await self._cleanup(sb._shutdown(bound, cleanup=True))

    async def _rollback_unanswered(self, record: SandboxPb, sent_at: datetime) -> None:
        """Delete the record of a Store.Create that got no answer, if it is provably ours.

        The daemon stamps its own creation time, so a record made after the request was sent,
        for the same sandboxer and runtime, is ours; one that was there before (the answer
        would have been AlreadyExists) belongs to someone else and is left alone.
        """
        store, _, _ = self._stub_tuple()
        try:
            got = await self._call(
                store.get,
                sandbox_pb.StoreGetRequest(sandbox_id=record.sandbox_id),
                _ROLLBACK_TIMEOUT / 2,
                cleanup=True,
            )
        except NotFoundError:
            return
        except ContainerdError as exc:
            _log.warning("could not check sandbox %s for roll-back: %s", record.sandbox_id, exc)
            return
        found = got.sandbox
        if (
            found is None
            or found.created_at is None
            or to_utc(found.created_at) < sent_at  # type: ignore[operator]
            or found.sandboxer != record.sandboxer
            or (found.runtime.name if found.runtime else "")
            != (record.runtime.name if record.runtime else "")
        ):
            return
        await self._rollback(record.sandbox_id, record.sandboxer, controller=False)

    async def _rollback(self, sandbox_id: str, sandboxer: str, *, controller: bool) -> None:
        """Undo a half-made sandbox: what the controller started, then the store record.

        Runs as clean-up (see ``_cleanup``), within ``_ROLLBACK_TIMEOUT`` in all.
        """
        store, ctrl, _ = self._stub_tuple()
        undo: list[tuple[Callable[..., Awaitable[Any]], betterproto2.Message]] = []
        if controller:
            undo.append(
                (
                    ctrl.shutdown,
                    sandbox_pb.ControllerShutdownRequest(
                        sandbox_id=sandbox_id, sandboxer=sandboxer
                    ),
                )
            )
        undo.append((store.delete, sandbox_pb.StoreDeleteRequest(sandbox_id=sandbox_id)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ROLLBACK_TIMEOUT
        for method, request in undo:
            remaining = deadline - loop.time()
            # Each step gets its share, so a slow first step cannot starve the store delete.
            share = max(remaining / 2 if method is not store.delete else remaining, 0.05)
            try:
                await self._call(method, request, share, cleanup=True)
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
        self._stubs()
        info: SandboxInfo | None = await self._call(
            self._get_record, sandbox_pb.StoreGetRequest(sandbox_id=sandbox_id), timeout
        )
        if info is None:
            raise NotFoundError(f"sandbox {sandbox_id!r} not found")
        return info

    async def list_sandboxes(
        self, *filters: str, timeout: float | None = None
    ) -> list[SandboxInfo]:
        """The store records matching any of ``filters`` (containerd filter syntax), or all."""
        self._stubs()
        infos: list[SandboxInfo] = await self._call(
            self._list_records, sandbox_pb.StoreListRequest(filters=list(filters)), timeout
        )
        return infos

    async def _get_record(
        self, request: sandbox_pb.StoreGetRequest, *, timeout: float | None
    ) -> SandboxInfo | None:
        """Store.Get, its answer decoded straight into the public record."""
        info: SandboxInfo | None = await self._unary(_STORE_GET, request, _RecordReply, timeout)
        return info

    async def _list_records(
        self, request: sandbox_pb.StoreListRequest, *, timeout: float | None
    ) -> list[SandboxInfo]:
        """Store.List, its answer decoded straight into the public records."""
        infos: list[SandboxInfo] = await self._unary(
            _STORE_LIST, request, _RecordListReply, timeout
        )
        return infos

    async def _unary(
        self, route: str, request: betterproto2.Message, reply: type, timeout: float | None
    ) -> Any:
        assert self._channel is not None
        stream: Any
        async with self._channel.request(
            route,
            Cardinality.UNARY_UNARY,
            type(request),
            reply,
            timeout=timeout,
            metadata=self._metadata,
        ) as stream:
            await stream.send_message(request, end=True)
            answer = await stream.recv_message()
        return answer

    async def delete_sandbox(self, sandbox_id: str, *, timeout: float | None = None) -> None:
        """Remove a sandbox's store record only; ``Sandbox.shutdown`` also tells its controller."""
        store, _, _ = self._stubs()
        await self._call(
            store.delete, sandbox_pb.StoreDeleteRequest(sandbox_id=sandbox_id), timeout
        )

    # -- waiting -----------------------------------------------------------------------------

    def _start_wait(self, sandbox_id: str, sandboxer: str, timeout: float | None) -> ExitChannel:
        """A channel on the one Wait call in flight for this sandbox, started if need be.

        Each channel has its own small task, so closing it (or its ``timeout``) ends that
        channel alone; the Wait call ends when its last channel does, or when it answers.
        """
        _, controller, _ = self._stubs()
        key = (sandbox_id, sandboxer)
        shared = self._waits.get(key)
        if shared is None or shared.task.done():
            request = sandbox_pb.ControllerWaitRequest(sandbox_id=sandbox_id, sandboxer=sandboxer)
            task = self._spawn(
                self._wait_shared(controller, request), f"sandboxclient-wait-{sandbox_id}"
            )
            shared = _SharedWait(key, task)
            self._waits[key] = shared
            task.add_done_callback(functools.partial(self._forget_wait, shared))
        shared.users += 1
        channel = ExitChannel()
        follower = self._spawn(
            _follow(shared.task, channel, sandbox_id, timeout), f"sandboxclient-exit-{sandbox_id}"
        )
        follower.add_done_callback(functools.partial(self._channel_done, shared, channel))
        channel._attach(follower)
        return channel

    def _forget_wait(self, shared: _SharedWait, _task: object = None) -> None:
        if self._waits.get(shared.key) is shared:
            del self._waits[shared.key]

    def _channel_done(
        self, shared: _SharedWait, channel: ExitChannel, task: asyncio.Task[None]
    ) -> None:
        """A channel's task ended: give the channel its status if it has none yet, and let go
        of the Wait call, cancelling it if no other channel waits on it."""
        shared.users -= 1
        if shared.users == 0 and not shared.task.done():
            self._forget_wait(shared)
            shared.task.cancel()
        if task.cancelled():
            error: ContainerdError = (
                ClientClosedError("the client was closed while waiting")
                if self._state is ClientState.CLOSED
                else CanceledError("the wait channel was closed")
            )
            channel._deliver(ExitStatus(UNKNOWN_EXIT_STATUS, None, error))
        elif task.exception() is not None:
            exc = task.exception()
            channel._deliver(
                ExitStatus(UNKNOWN_EXIT_STATUS, None, UnknownError(f"wait failed: {exc!r}"))
            )

    async def _wait_shared(
        self, controller: sandbox_pb.ControllerStub, request: sandbox_pb.ControllerWaitRequest
    ) -> ExitStatus:
        """The Wait call itself, with no deadline: every channel keeps its own."""
        try:
            return await self._wait_with_retries(controller, request, None)
        except Exception as exc:
            mapped = map_error(exc) or UnknownError(f"wait failed: {exc!r}")
            return ExitStatus(UNKNOWN_EXIT_STATUS, None, mapped)

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


def _runtime_name(record: SandboxPb) -> str:
    return record.runtime.name if record.runtime is not None else ""


def _may_have_landed(exc: BaseException) -> bool:
    """Whether a call that failed with ``exc`` may still have been carried out by the daemon."""
    if isinstance(exc, asyncio.CancelledError | DeadlineExceededError | ClientClosedError):
        return True
    # A lost connection, unlike one that was never made, may have carried the request.
    return isinstance(exc, UnavailableError) and isinstance(exc.__cause__, _CONNECTION_LOST)


def _with_runtime_options(options: AnyLike) -> NewSandboxOpt:
    """Set the runtime's options and keep the name an earlier option chose."""
    packed = to_any_value(options, what="runtime options")

    def apply(draft: SandboxDraft) -> None:
        draft.runtime_options = packed

    return apply


def _check_draft(draft: SandboxDraft) -> None:
    problem = labels_problem(draft.labels)
    if problem is not None:
        raise InvalidArgumentError(f"invalid labels on sandbox {draft.id!r}: {problem}")
    for key in draft.extensions:
        if not key:
            raise InvalidArgumentError(f"extension key must not be empty on sandbox {draft.id!r}")


async def _unstoppable(work: asyncio.Future[_T]) -> _T:
    """Await ``work`` to its end however often the caller is cancelled, then re-raise that.

    Plain asyncio cancellation goes through anyio's shields; this does not.
    """
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return work.result()


class _SharedWait:
    """The Wait call in flight for one (sandbox id, sandboxer) and how many channels use it."""

    __slots__ = ("key", "task", "users")

    def __init__(self, key: tuple[str, str], task: asyncio.Task[ExitStatus]) -> None:
        self.key = key
        self.task = task
        self.users = 0


async def _follow(
    shared: asyncio.Task[ExitStatus],
    channel: ExitChannel,
    sandbox_id: str,
    timeout: float | None,
) -> None:
    """One channel's part of a shared wait: its status, or its own deadline."""
    if timeout is None:
        status = await asyncio.shield(shared)
    else:
        try:
            async with asyncio.timeout(timeout):
                status = await asyncio.shield(shared)
        except TimeoutError:
            status = ExitStatus(
                UNKNOWN_EXIT_STATUS,
                None,
                DeadlineExceededError(f"sandbox {sandbox_id!r} did not exit within {timeout} s"),
            )
    channel._deliver(status)
