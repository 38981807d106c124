"""Helpers the server-side tests share."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient._connection import Connection
from sandboxclient._pb import containers_pb, sandbox_pb

_T = TypeVar("_T")


def client_tasks(before: set[asyncio.Task[Any]] | None = None) -> list[asyncio.Task[Any]]:
    """The library's background tasks still running (those not in ``before``)."""
    tasks = asyncio.all_tasks() - (before or set())
    return [t for t in tasks if not t.done() and t.get_name().startswith("sandboxclient")]


def tasks_since(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Every task started since ``before`` still running, named or not, but for the
    in-process servers' request handlers and the caller."""
    return {
        t
        for t in asyncio.all_tasks() - before
        if not t.done()
        and t is not asyncio.current_task()
        and not getattr(t.get_coro(), "__qualname__", "").startswith("request_handler")
    }


async def tasks_finish(before: set[asyncio.Task[Any]] | None = None, timeout: float = 5) -> None:
    """Wait (on the tasks themselves) until the library's background tasks have ended."""
    pending = client_tasks(before)
    if pending:
        await asyncio.wait(pending, timeout=timeout)


class Changes:
    """A value tests wait on: ``changed()`` wakes every ``until()`` to look again."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
        """Return once ``predicate()`` holds, looking again at each change."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting until {what}") from None


def pid_gone(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie nobody has reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for ``pid`` to exit, woken by its pidfd (no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await readable
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def expect_error(call: Any, status: Status, message: str | None = None) -> str:
    """Await ``call``, which must fail with ``status`` (and ``message``, if given)."""
    with pytest.raises(GRPCError) as info:
        await call
    assert info.value.status is status, info.value
    text = info.value.message or ""
    if message is not None:
        assert text == message
    return text


class Raw:
    """Raw requests over the library's own connection class and its one error mapping.

    For tests that must send what the public API never would (a record without a runtime,
    a call without a namespace) and see the error the Client would raise.
    """

    def __init__(self, connection: Connection, sandboxer: str) -> None:
        self.connection = connection
        self.sandboxer = sandboxer

    @property
    def store(self) -> sandbox_pb.StoreStub:
        return self.connection.stub(sandbox_pb.StoreStub)

    @property
    def controller(self) -> sandbox_pb.ControllerStub:
        return self.connection.stub(sandbox_pb.ControllerStub)

    @property
    def containers(self) -> containers_pb.ContainersStub:
        return self.connection.stub(containers_pb.ContainersStub)

    async def call(self, method: Callable[..., Awaitable[_T]], request: Any) -> _T:
        return await self.connection.call(method, request)


@contextlib.asynccontextmanager
async def raw_connection(address: str, namespace: str, sandboxer: str) -> AsyncIterator[Raw]:
    """A :class:`Raw` on ``address`` in ``namespace``, closed afterwards."""
    connection = Connection(address, namespace=namespace, timeout=20.0)
    try:
        yield Raw(connection, sandboxer)
    finally:
        await connection.aclose()
