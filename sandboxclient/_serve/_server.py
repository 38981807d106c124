"""What every gRPC server of the project shares: the request's context and the unix server.

containerd forwards Controller calls to a proxy plugin with the caller's namespace in the
``containerd-namespace`` metadata. grpclib hands a service method only the decoded message,
so each handler is wrapped (:func:`bind_request`) to publish the request's metadata in a
context variable first; :func:`current_namespace` reads it from there. The sandboxer and the
stand-in both serve through :class:`UnixServer`, which answers a route it does not serve with
UNIMPLEMENTED and grpc-go's words (:func:`unknown_route`), and holds requests to the client's
strictness: they are decoded with the strict codec (INTERNAL ``grpc: error unmarshalling
request``, as grpc-go answers), refused over 16 MiB (RESOURCE_EXHAUSTED, before the body is
read, as containerd does), read on connections hardened against garbage with at most
:data:`~._h2proto.SERVER_MAX_STREAMS` concurrent streams (see :mod:`._h2proto` and
:mod:`._grpcframe`); a unary call that ends without its request is refused (INTERNAL) before
the method runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, cast

import grpclib.server
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream

from .._facts._golang import go_quote
from .._facts._validation import identifier_problem
from .._facts._wirenames import NAMESPACE_HEADER
from .._wire._grpcframe import DEFAULT_MAX_MESSAGE_SIZE, HOOKED
from .._wire._h2proto import SERVER_MAX_STREAMS, WireProtocol
from .._wire._pb import EmptyPb
from .._wire._protowire import DecodeError
from .._wire._wirecodec import LimitedCodec
from ._refusals import failed_precondition, invalid_argument

__all__ = (
    "RequestCodec",
    "UnixServer",
    "bind_request",
    "clear_stale_socket",
    "current_metadata",
    "current_namespace",
    "namespace_error",
    "request_scope",
    "unknown_route",
)

_EMPTY: Mapping[str, str] = MappingProxyType({})
_request_metadata: ContextVar[Mapping[str, str] | None] = ContextVar(
    "sandboxclient_request_metadata", default=None
)


def namespace_error(namespace: str | None) -> GRPCError | None:
    """The error containerd answers for this namespace header value, or None if it is valid."""
    if not namespace:
        return failed_precondition("namespace is required")
    problem = identifier_problem(namespace)
    if problem is not None:
        return invalid_argument(f"namespace validation: {problem}")
    return None


def current_metadata() -> Mapping[str, str]:
    """The text metadata of the request being handled (keys in lower case).

    Raises :class:`RuntimeError` outside a request handler.
    """
    metadata = _request_metadata.get()
    if metadata is None:
        raise RuntimeError("current_metadata() called outside a request handler")
    return metadata


def current_namespace() -> str:
    """The containerd namespace of the request being handled.

    Raises the :class:`~grpclib.exceptions.GRPCError` containerd would answer when the
    ``containerd-namespace`` header is missing (FAILED_PRECONDITION) or not a valid identifier
    (INVALID_ARGUMENT), and :class:`RuntimeError` outside a request handler.
    """
    namespace = current_metadata().get(NAMESPACE_HEADER)
    error = namespace_error(namespace)
    if error is not None:
        raise error
    assert namespace is not None
    return namespace


@contextlib.contextmanager
def request_scope(metadata: Mapping[str, str]) -> Iterator[None]:
    """Run the body as if handling a request that carried ``metadata``."""
    token = _request_metadata.set(MappingProxyType({k.lower(): v for k, v in metadata.items()}))
    try:
        yield
    finally:
        _request_metadata.reset(token)


def _text_metadata(stream: Stream[Any, Any]) -> Mapping[str, str]:
    found: dict[str, str] = {}
    metadata = stream.metadata
    if metadata is None:
        return _EMPTY
    for key, value in metadata.items():
        if isinstance(value, str) and key not in found:
            found[key] = value
    return found


class RequestCodec(LimitedCodec):
    """The servers' codec: requests decoded strictly (:mod:`._codec`).

    A request that does not decode is refused with INTERNAL, one over ``limit`` bytes with
    RESOURCE_EXHAUSTED.
    """

    def decode(self, data: bytes, message_type: Any) -> Any:
        """A request read strictly, or the GRPCError containerd would answer."""
        try:
            return super().decode(data, message_type)
        except DecodeError as exc:
            raise GRPCError(Status.INTERNAL, f"grpc: error unmarshalling request: {exc}") from None


class _UnaryRequest:
    """A unary call's stream that refuses a call ending without its request, as grpc-go does
    (grpclib would hand the method ``None``)."""

    def __init__(self, stream: Stream[Any, Any]) -> None:
        self._stream = stream

    async def recv_message(self) -> Any:
        """The request; INTERNAL if the call ended without one."""
        message = await self._stream.recv_message()
        if message is None:
            raise GRPCError(
                Status.INTERNAL,
                "grpc: cardinality violation: received no request message from "
                "non-client-streaming RPC",
            )
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def bind_request(
    handler: Handler,
    *,
    check_namespace: bool,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> Handler:
    """``handler`` with the request's metadata published to :func:`current_metadata`.

    With ``check_namespace`` the namespace header is validated before the method runs;
    ``gate``, when given, is awaited first (the stand-in uses it to stall calls).
    """
    inner: Callable[[Stream[Any, Any]], Awaitable[None]] = handler.func
    unary = not handler.cardinality.client_streaming

    async def func(stream: Stream[Any, Any]) -> None:
        if gate is not None:
            await gate()
        with request_scope(_text_metadata(stream)):
            if check_namespace:
                current_namespace()
            await inner(cast(Stream[Any, Any], _UnaryRequest(stream)) if unary else stream)

    return handler._replace(func=func)


def unknown_route(path: str, routes: Iterable[str]) -> GRPCError:
    """What grpc-go answers a call of ``path`` when its server has only ``routes``."""
    name = path.removeprefix("/")
    service, slash, method = name.rpartition("/")
    if not slash:
        return GRPCError(Status.UNIMPLEMENTED, f"malformed method name: {go_quote(path)}")
    if any(route.removeprefix("/").rpartition("/")[0] == service for route in routes):
        return GRPCError(Status.UNIMPLEMENTED, f"unknown method {method} for service {service}")
    return GRPCError(Status.UNIMPLEMENTED, f"unknown service {service}")


class _Routes(dict[str, Handler]):
    """A server's routes, where one it does not serve is a handler that refuses the call as
    grpc-go does (grpclib answers without a content type, which clients take for UNKNOWN)."""

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key, default)
        if found is not None:
            return found
        error = unknown_route(key, self)

        async def refuse(stream: Stream[Any, Any]) -> None:
            raise error

        return Handler(refuse, Cardinality.UNARY_UNARY, EmptyPb, EmptyPb)


def answer_unknown_routes(protocol: H2Protocol) -> None:
    """Make ``protocol``'s handler refuse the routes it does not serve as grpc-go does."""
    handler = protocol.handler
    if isinstance(handler, grpclib.server.Handler) and not isinstance(handler.mapping, _Routes):
        handler.mapping = _Routes(handler.mapping)


class UnixServer(Server):
    """A grpclib :class:`~grpclib.server.Server` whose shutdown also drops client connections.

    From Python 3.12 on, :meth:`asyncio.Server.wait_closed` waits for every connection to go,
    so a client that keeps its channel open would otherwise hold the shutdown forever.
    Requests are held to the limits described in the module's docstring.
    """

    def __init__(
        self,
        handlers: list[Any],
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_streams: int = SERVER_MAX_STREAMS,
    ) -> None:
        super().__init__(handlers, codec=RequestCodec(max_message_size))
        self._limit = max_message_size
        self._max_streams = max_streams
        # Weak, so the connections that closed do not pile up in a long-running server.
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()
        self._running = False

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        if HOOKED:
            protocol = WireProtocol(
                protocol.handler,
                protocol.config,
                protocol.h2_config,
                limit=self._limit,
                server=True,
                max_streams=self._max_streams,
            )
        self._protocols.add(protocol)
        answer_unknown_routes(protocol)
        return protocol

    async def start_unix(self, path: str) -> None:
        """Listen on the unix socket ``path``, replacing a stale socket file there."""
        clear_stale_socket(path)
        await self.start(path=path)
        self._running = True

    async def shutdown(self) -> None:
        """Stop listening, cancel the calls in progress, drop the connections; idempotent."""
        if not self._running:
            return
        self._running = False
        self.close()
        for protocol in list(self._protocols):
            handler = protocol.handler
            if isinstance(handler, grpclib.server.Handler):
                await handler.wait_closed()
        for protocol in list(self._protocols):
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()
        self._protocols.clear()
        await self.wait_closed()


def clear_stale_socket(path: str) -> None:
    """Remove a stale socket at ``path`` (nothing accepts on it); refuse a live one
    (EADDRINUSE), or anything that is not a socket (EEXIST)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "a server is already listening on", path)
