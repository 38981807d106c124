"""An in-process stand-in for containerd 2.1's sandbox Store, sandbox Controller and
Containers services, answering with the daemon's gRPC codes and messages.

The parts: :mod:`._filters` (containerd's filter language), :mod:`._records` (the records
and their validation), :mod:`._services` (the gRPC services); :class:`FakeContainerd` puts
them together and serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

from grpclib.const import Handler

from .._calls import CallLog
from .._server import UnixServer, bind_request
from ..sandboxer import ProcessSandboxer, SandboxController
from ._records import Records
from ._services import ContainersService, ControllerRouter, StoreService

__all__ = ("FakeContainerd",)


class FakeContainerd:
    """containerd's sandbox Store, sandbox Controller and Containers services, in process.

    Serves them with grpclib on a unix socket (:attr:`address`) in a fresh temporary folder,
    or at ``path``. Records live in memory, per namespace, and are validated and refused with
    the gRPC codes and messages containerd 2.1.9 answers. The requests that crash that
    daemon are refused with INVALID_ARGUMENT instead. Controller calls are forwarded to
    ``controller`` when their ``sandboxer`` is one of ``sandboxers``: by default a
    :class:`~sandboxclient.sandboxer.ProcessSandboxer` (``--isolation none``: no isolation,
    specs asking for more than ``process.args``/``env``/``cwd`` refused) that runs each
    sandbox as a host process and is closed with the stand-in. Platform answers
    UNIMPLEMENTED, as containerd 2.1's controller service does.

    Use it as an async context manager, or call :meth:`start` and :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        sandboxers: Iterable[str] = ("shim",),
        controller: SandboxController | None = None,
        path: str | None = None,
    ) -> None:
        self._sandboxers = frozenset(sandboxers)
        self._owns_controller = controller is None
        self._controller: SandboxController = (
            controller if controller is not None else ProcessSandboxer()
        )
        self._path = path
        self._tmpdir: str | None = None
        self._records = Records()
        self._server: UnixServer | None = None
        self._socket_bound = False
        self._closed = False
        self._stalled = False
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._calls = CallLog()

    @property
    def address(self) -> str:
        """The path of the unix socket the stand-in listens on."""
        if self._path is None:
            raise RuntimeError("FakeContainerd is not started")
        return self._path

    @property
    def controller(self) -> SandboxController:
        """The controller Controller calls are forwarded to."""
        return self._controller

    @property
    def sandboxers(self) -> frozenset[str]:
        """The sandboxer names the controller answers to."""
        return self._sandboxers

    @property
    def stall(self) -> bool:
        """While True, every call waits before being handled (to test deadlines).

        Setting it back to False lets the waiting calls through.
        """
        return self._stalled

    @stall.setter
    def stall(self, value: bool) -> None:
        self._stalled = bool(value)
        if self._stalled:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    @property
    def crash_requests(self) -> int:
        """How many requests it refused that would have crashed containerd 2.1.9.

        A client must never send one; tests can assert this stays 0.
        """
        return self._records.crash_requests

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandbox store's records in ``namespace``, sorted."""
        return self._records.sandbox_ids(namespace)

    def container_ids(self, namespace: str) -> list[str]:
        """The ids of the container records in ``namespace``, sorted."""
        return self._records.container_ids(namespace)

    def call_count(self, method: str) -> int:
        """How many calls of ``method`` have arrived so far (stalled ones included).

        ``method`` is the route's tail, ``"Controller/Wait"`` or ``"Store/Get"``, the method's
        name alone (``"Wait"``, which names it on every service), or the whole
        route (``"/containerd.services.sandbox.v1.Controller/Wait"``).
        """
        return self._calls.count(method)

    async def wait_for_call(self, method: str, count: int = 1) -> None:
        """Return once ``count`` calls of ``method`` (see :meth:`call_count`) have arrived.

        A call has arrived when the server has its request, before it is handled: the
        signal a test needs to act while the call is in flight.
        """
        await self._calls.wait_for(method, count)

    async def _arrive(self, route: str) -> None:
        self._calls.arrived(route)
        await self._unstalled.wait()

    def _bind(self, mapping: Mapping[str, Handler]) -> dict[str, Handler]:
        return {
            name: bind_request(
                handler, check_namespace=False, gate=functools.partial(self._arrive, name)
            )
            for name, handler in mapping.items()
        }

    async def start(self) -> Self:
        """Start serving; returns the stand-in itself."""
        if self._closed:
            raise RuntimeError("FakeContainerd is closed")
        if self._server is not None:
            raise RuntimeError("FakeContainerd is already started")
        if self._path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fake-containerd-")
            self._path = os.path.join(self._tmpdir, "containerd.sock")
        bind = self._bind
        server = UnixServer(
            [
                StoreService(self._records, bind),
                ControllerRouter(self._records, bind, self._controller, self._sandboxers),
                ContainersService(self._records, bind),
            ]
        )
        try:
            await server.start_unix(self._path)
        except BaseException:
            await self._release()
            raise
        self._socket_bound = True
        self._server = server
        return self

    async def aclose(self) -> None:
        """Stop serving, cancel the calls in progress and close an owned controller.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._unstalled.set()
        server, self._server = self._server, None
        try:
            if server is not None:
                await server.shutdown()
        finally:
            await self._release()

    async def _release(self) -> None:
        """Close an owned controller, then remove the socket and folder this object made."""
        try:
            if self._owns_controller:
                await self._controller.aclose()
        finally:
            self._remove_files()

    def _remove_files(self) -> None:
        if self._path is not None and self._socket_bound:
            self._socket_bound = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
