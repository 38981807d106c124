"""The connection every handle calls through: channel, namespace, deadlines, errors, tasks.

One :class:`Connection` per Client. It opens the channel on first use, puts the namespace on
every call, turns every failure into the errors tree (through ``_errdefs``), owns the
background tasks and the clean-up work that must finish even when its caller is cancelled,
and closes once, leaving nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar

import betterproto2
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from .._facts._wirenames import NAMESPACE_HEADER
from .._wire._errdefs import raise_mapped
from .._wire._grpcframe import LIBRARY_WIRE_ERRORS
from .._wire._protowire import DecodeError
from .._wire._transport import WireChannel, WireOptions
from ..errors import ClientClosedError

__all__ = (
    "CONNECTION_LOST",
    "USE_CLIENT_DEFAULT",
    "ClientState",
    "Connection",
    "Timeout",
    "UseClientDefault",
    "run_to_end",
)

_T = TypeVar("_T")
_S = TypeVar("_S")


class UseClientDefault:
    """The type of :data:`USE_CLIENT_DEFAULT`: "the Client's default deadline"."""

    _instance: UseClientDefault | None = None

    def __new__(cls) -> UseClientDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"

    def __reduce__(self) -> str:
        return "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT: Final = UseClientDefault()
"""A ``timeout`` that means the Client's default; ``None`` means no deadline at all."""

Timeout = float | None | UseClientDefault
"""A call's deadline in seconds, None for none, or :data:`USE_CLIENT_DEFAULT`."""


class ClientState(enum.Enum):
    """Where a Client is in its life."""

    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


# What a failed call can raise below the library; everything else propagates untouched.
_CALL_ERRORS: tuple[type[BaseException], ...] = (
    GRPCError,
    StreamTerminatedError,
    ProtocolError,
    OSError,
    asyncio.TimeoutError,
    DecodeError,
    *LIBRARY_WIRE_ERRORS,
)
# A connection that carried the call and then died: the request may have landed.
CONNECTION_LOST = (StreamTerminatedError, ConnectionResetError, BrokenPipeError)

# Set inside clean-up work (see Connection.run_shielded): such calls may still go out after
# the Client has closed, which is how a roll-back finishes what a closing Client interrupted.
_cleaning_up: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sandboxclient_cleaning_up", default=False
)


def socket_path(address: str) -> str:
    """``address`` without a ``unix://`` or ``unix:`` scheme."""
    for prefix in ("unix://", "unix:"):
        if address.startswith(prefix):
            return address[len(prefix) :]
    return address


class Connection:
    """The channel to containerd in one namespace, and what it owns."""

    def __init__(
        self,
        address: str,
        *,
        namespace: str,
        timeout: float | None,
        wire: WireOptions | None = None,
    ) -> None:
        self._address = socket_path(address)
        self._wire = wire
        self._namespace = namespace
        self._timeout = timeout
        self._metadata: Mapping[str, str] = {NAMESPACE_HEADER: namespace}
        self._state = ClientState.UNOPENED
        self._channel: WireChannel | None = None
        self._stubs: dict[type, Any] = {}
        self._routes: dict[tuple[str, type], Callable[..., Awaitable[Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cleanups: set[asyncio.Task[Any]] = set()
        self._inflight = 0
        self._closing: asyncio.Future[None] | None = None
        self._owned: set[Callable[[], None]] = set()

    @property
    def address(self) -> str:
        """The daemon's socket path."""
        return self._address

    @property
    def namespace(self) -> str:
        """The namespace every call carries."""
        return self._namespace

    @property
    def timeout(self) -> float | None:
        """The default deadline of a call, in seconds (None: no deadline)."""
        return self._timeout

    @property
    def state(self) -> ClientState:
        """UNOPENED until the first call, then OPENED, then CLOSED."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._state is ClientState.CLOSED

    def deadline(self, timeout: Timeout) -> float | None:
        """``timeout`` with :data:`USE_CLIENT_DEFAULT` replaced by the default."""
        if isinstance(timeout, UseClientDefault):
            return self._timeout
        return timeout

    def open(self) -> None:
        """Make the channel (it connects on the first call); ClientClosedError once closed."""
        if self._state is ClientState.CLOSED:
            raise ClientClosedError("the client is closed")
        if self._channel is None:
            self._channel = WireChannel(self._address, self._wire)
            self._state = ClientState.OPENED

    def stub(self, factory: Callable[..., _S]) -> _S:
        """The service stub made by ``factory`` on this channel, made once."""
        stub = self._stubs.get(factory)  # type: ignore[call-overload]
        if stub is None:
            if self._channel is None or not (self.closed and _cleaning_up.get()):
                self.open()
            stub = factory(self._channel, metadata=self._metadata)
            self._stubs[factory] = stub  # type: ignore[index]
        return stub  # type: ignore[no-any-return]

    def route(self, route: str, reply_type: type) -> Callable[..., Awaitable[Any]]:
        """A unary method for ``route`` whose answer is decoded as ``reply_type``."""
        key = (route, reply_type)
        method = self._routes.get(key)
        if method is None:
            method = self._routes[key] = functools.partial(self._unary, route, reply_type)
        return method

    async def _unary(
        self, route: str, reply_type: type, request: betterproto2.Message, *, timeout: float | None
    ) -> Any:
        if self._channel is None:
            self.open()
        assert self._channel is not None
        stream: Any
        async with self._channel.request(
            route,
            Cardinality.UNARY_UNARY,
            type(request),
            reply_type,
            timeout=timeout,
            metadata=self._metadata,
        ) as stream:
            await stream.send_message(request, end=True)
            answer = await stream.recv_message()
        return answer

    async def call(
        self,
        method: Callable[..., Awaitable[_T]],
        request: betterproto2.Message,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        *,
        idempotent: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> _T:
        """Make one unary call, mapping every failure to the errors tree.

        Once the Client is closed only clean-up work may call; anything else, including a
        call that was in flight when it closed, raises ``ClientClosedError``. An
        ``idempotent`` call whose connection was found dead (a daemon that restarted leaves
        one the loop may not have noticed yet) goes once more on a new connection.
        ``metadata`` goes with the namespace (a lease, say).
        """
        cleanup = _cleaning_up.get()
        if self.closed and not cleanup:
            raise ClientClosedError("the client is closed")
        seconds = self.deadline(timeout)
        extra: dict[str, Any] = {}
        if metadata:
            extra["metadata"] = {**self._metadata, **metadata}
        self._inflight += 1
        try:
            try:
                result = await method(request, timeout=seconds, **extra)
            except CONNECTION_LOST as exc:
                self._raise_if_closed(exc, cleanup)
                if not idempotent:
                    raise_mapped(exc, address=self._address)
                result = await method(request, timeout=seconds, **extra)
        except _CALL_ERRORS as exc:
            self._raise_if_closed(exc, cleanup)
            raise_mapped(exc, address=self._address)
        finally:
            self._inflight -= 1
            self._close_if_idle()
        self._raise_if_closed(None, cleanup)
        return result

    async def stream(
        self,
        method: Callable[..., AsyncIterator[_T]],
        request: betterproto2.Message,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AsyncIterator[_T]:
        """The answers of one server-streaming call, every failure mapped as ``call`` does.

        Stopping early (``aclose()`` of the iterator, or leaving ``async for``) ends the
        call's stream.
        """
        cleanup = _cleaning_up.get()
        if self.closed and not cleanup:
            raise ClientClosedError("the client is closed")
        self._inflight += 1
        try:
            answers = method(request, timeout=self.deadline(timeout))
            try:
                async for answer in answers:
                    self._raise_if_closed(None, cleanup)
                    yield answer
            finally:
                close = getattr(answers, "aclose", None)
                if close is not None:
                    await close()
        except _CALL_ERRORS as exc:
            self._raise_if_closed(exc, cleanup)
            raise_mapped(exc, address=self._address)
        finally:
            self._inflight -= 1
            self._close_if_idle()

    @contextlib.asynccontextmanager
    async def server_stream(
        self, route: str, request: betterproto2.Message, reply_type: type[_T]
    ) -> AsyncIterator[AsyncIterator[_T]]:
        """A server-streaming call on ``route`` with no deadline: entered once the request
        is sent, it yields the iterator of answers; leaving ends the call.

        Failures are mapped as ``call`` maps them.
        """
        async with self._stream(
            route, Cardinality.UNARY_STREAM, type(request), reply_type
        ) as stream:
            await stream.send_message(request, end=True)
            yield _answers(stream)

    @contextlib.asynccontextmanager
    async def bidi_stream(
        self, route: str, message_type: type[_T], *, metadata: Mapping[str, str] | None = None
    ) -> AsyncIterator[Any]:
        """A bidirectional call on ``route`` with no deadline (the caller bounds it): yields
        the open stream (``send_message``, ``recv_message``, ``end``); leaving ends the call.
        ``metadata`` goes with the namespace (a lease, say).

        Failures inside or out are mapped as ``call`` maps them.
        """
        async with self._stream(
            route, Cardinality.STREAM_STREAM, message_type, message_type, metadata
        ) as stream:
            yield stream

    @contextlib.asynccontextmanager
    async def _stream(
        self,
        route: str,
        cardinality: Cardinality,
        request_type: type[Any],
        reply_type: type[Any],
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Any]:
        """grpclib's stream of a call counted in flight, its failures mapped."""
        if self.closed:
            raise ClientClosedError("the client is closed")
        if self._channel is None:
            self.open()
        assert self._channel is not None
        self._inflight += 1
        try:
            try:
                stream: Any
                headers = {**self._metadata, **metadata} if metadata else self._metadata
                async with self._channel.request(
                    route, cardinality, request_type, reply_type, metadata=headers
                ) as stream:
                    yield stream
            except _CALL_ERRORS as exc:
                self._raise_if_closed(exc, False)
                raise_mapped(exc, address=self._address)
        finally:
            self._inflight -= 1
            self._close_if_idle()

    def _raise_if_closed(self, exc: BaseException | None, cleanup: bool) -> None:
        if self.closed and not cleanup:
            raise ClientClosedError("the client was closed during the call") from exc

    def spawn(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        """Run ``coro`` as a background task the connection owns: ``aclose`` cancels it."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def own(self, close: Callable[[], None]) -> Callable[[], None]:
        """Have ``aclose()`` call ``close`` (a process's streams, say) unless released first.

        Returns the release: call it once the thing is closed some other way.
        """
        self._owned.add(close)
        return functools.partial(self._owned.discard, close)

    async def run_shielded(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run clean-up ``work`` to its end even if the caller is cancelled, then re-raise that.

        The connection owns it: ``aclose()`` waits for it, and its calls may still go out
        after the Client has closed.
        """
        return await run_to_end(self.start_cleanup(work))

    def start_cleanup(
        self, work: Coroutine[Any, Any, _T], *, name: str = "sandboxclient-cleanup"
    ) -> asyncio.Task[_T]:
        """Start clean-up ``work`` as a task the connection owns, and return at once.

        Owned as :meth:`run_shielded`'s: never cancelled, ``aclose()`` waits for it, its
        calls may go out after the Client has closed. For work no caller should wait on
        (the kill and delete of a timed-out command, say); ``work`` must bound itself and
        handle its own failures.
        """
        context = contextvars.copy_context()
        context.run(_cleaning_up.set, True)
        task = asyncio.get_running_loop().create_task(work, name=name, context=context)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanup_done)
        return task

    def _cleanup_done(self, task: asyncio.Task[Any]) -> None:
        self._cleanups.discard(task)
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        # A call still connecting when aclose() ran may have made a connection since: the
        # last call or clean-up to end after the close closes the channel again.
        if self.closed and not self._inflight and not self._cleanups and self._channel:
            self._channel.close()

    async def aclose(self) -> None:
        """Cancel every background task, let clean-up work finish, close the channel.

        Safe to call twice or at once from several tasks; a cancelled ``aclose()`` still
        closes (the cancellation is raised once it has).
        """
        if self._closing is None:
            self._state = ClientState.CLOSED
            self._closing = asyncio.ensure_future(self._close())
        await run_to_end(self._closing)

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
            owned, self._owned = list(self._owned), set()
            for close in owned:
                close()
            if self._channel is not None:
                self._channel.close()


async def _answers(stream: Any) -> AsyncIterator[Any]:
    while (answer := await stream.recv_message()) is not None:
        yield answer


async def run_to_end(work: asyncio.Future[_T]) -> _T:
    """Await ``work`` to its end however often the caller is cancelled, then re-raise that
    (``work``'s own result or error is then dropped, retrieved so that it is not logged)."""
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not work.cancelled():
            work.exception()
        raise asyncio.CancelledError
    return work.result()
