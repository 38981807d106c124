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
