"""The base class of a sandbox controller served over grpclib, and :func:`serve`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence

from grpclib.const import Handler
from grpclib.server import Server

from .._serve._calls import CallLog
from .._serve._server import UnixServer, bind_request
from .._wire._pb import sandbox_pb
from ._socket import listen_private

__all__ = ("SandboxController", "serve")


class SandboxController(sandbox_pb.ControllerBase):
    """Base class for a ``containerd.services.sandbox.v1.Controller`` served over grpclib.

    Subclasses override the coroutine methods they support (``create``, ``start``,
    ``platform``, ``stop``, ``wait``, ``status``, ``shutdown``, ``metrics``, ``update``), each
    taking the request message and returning the response message (their classes are in
    :mod:`sandboxclient.sandboxer.messages`); the others answer
    UNIMPLEMENTED. Inside them :func:`current_namespace` gives the caller's namespace: every
    call is refused before the method runs when the ``containerd-namespace`` header is
    missing (FAILED_PRECONDITION) or invalid (INVALID_ARGUMENT), as containerd does. Raise
    :class:`~grpclib.exceptions.GRPCError` to answer an error.

    The ``sandboxer`` field of the requests is not looked at: containerd routes by it before
    forwarding, and leaves it empty in the Update requests it forwards to proxy plugins.
    """

    def __mapping__(self) -> dict[str, Handler]:
        mapping: dict[str, Handler] = super().__mapping__()
        return {
            name: bind_request(handler, check_namespace=True) for name, handler in mapping.items()
        }

    async def aclose(self) -> None:
        """Release what the controller holds; the base class holds nothing."""


class _Counted:
    """A service whose calls are counted by a :class:`CallLog` as they arrive."""

    def __init__(self, service: SandboxController, calls: CallLog) -> None:
        self._service = service
        self._calls = calls

    def __mapping__(self) -> dict[str, Handler]:
        return self._calls.bind(self._service.__mapping__())


@contextlib.asynccontextmanager
async def serve(
    controller: SandboxController,
    path: str,
    *,
    calls: CallLog | None = None,
    group: int | None = None,
    services: Sequence[object] = (),
) -> AsyncIterator[Server]:
    """Serve ``controller`` on the unix socket ``path`` for the body of the ``async with``.

    The socket is mode 0600 whatever the umask (0660, owned by ``group``, with a group): it
    is never reachable with a wider mode, not even for a moment (see :mod:`._socket`).
    Yields the running grpclib :class:`~grpclib.server.Server`. On exit the server stops, the
    calls in progress are cancelled and the socket file is removed; ``controller`` itself is
    left open (call its ``aclose()``). With ``calls``, every call is counted there as it
    arrives, before the controller's method runs (see :class:`CallLog`). ``services`` are
    served beside it (grpclib services, which need no namespace).
    """
    service: SandboxController | _Counted = controller
    if calls is not None:
        service = _Counted(controller, calls)
    server = UnixServer([service, *services])
    await listen_private(server, path, group=group)
    try:
        yield server
    finally:
        try:
            await server.shutdown()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
