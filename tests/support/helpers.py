"""Helpers the server-side tests share."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._plumbing._connection import Connection
from sandboxclient._plumbing._pipes import readable
from sandboxclient._wire._pb import containers_pb as cpb
from sandboxclient._wire._pb import sandbox_pb as spb
from sandboxclient.sandboxer import ProcessSandboxer
from sandboxclient.testing import PLUGIN_NAME
from tests.support.constants import REPO_ROOT

_T = TypeVar("_T")


def client_tasks(before: set[asyncio.Task[Any]] | None = None) -> list[asyncio.Task[Any]]:
    """The library's background tasks still running (those not in ``before``): what a test
    that closed its Client must find empty, or the Client leaked a task."""
    tasks = asyncio.all_tasks() - (before or set())
    return [t for t in tasks if not t.done() and t.get_name().startswith("sandboxclient")]


def tasks_since(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Every task started since ``before`` still running, named or not, but for the
    in-process servers' own (their request handlers, and the stand-in's follower of each
    running sandbox) and the caller."""
    return {
        t
        for t in asyncio.all_tasks() - before
        if not t.done()
        and t is not asyncio.current_task()
        and not getattr(t.get_coro(), "__qualname__", "").startswith("request_handler")
        and not t.get_name().startswith("fake-containerd-")
    }


async def tasks_finish(before: set[asyncio.Task[Any]] | None = None, timeout: float = 5) -> None:
    """Wait (on the tasks themselves) until the library's background tasks have ended."""
    pending = client_tasks(before)
    if pending:
        await asyncio.wait(pending, timeout=timeout)


async def cleanups_finish(timeout: float = 20) -> None:
    """Wait (on the tasks themselves) until the clean-up the library runs on its own time
    (the kill and delete of a timed-out or cancelled run, say) has ended."""
    pending = [
        t
        for t in client_tasks()
        if t.get_name().startswith(
            ("sandboxclient-cleanup", "sandboxclient-discard-", "sandboxclient-forget-")
        )
    ]
    if pending:
        _, late = await asyncio.wait(pending, timeout=timeout)
        assert not late, f"clean-up still running after {timeout} s: {late}"


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


class GatedSandboxer(ProcessSandboxer):
    """Holds Controller.Create until released, so a test can cancel in between."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def create(self, message: spb.ControllerCreateRequest) -> spb.ControllerCreateResponse:
        self.entered.set()
        await self.release.wait()
        return await super().create(message)


CONTROLLER_IDS = ("ctl1", "ctl2")
"""The only ids raw Controller requests in tests use, so that what they start is shut down."""


def live_tasks() -> set[asyncio.Task[Any]]:
    """Running tasks, less the test runner's own (fixtures tear down in another task)."""
    return {
        t
        for t in asyncio.all_tasks()
        if not t.done() and "TestRunner" not in getattr(t.get_coro(), "__qualname__", "")
    }


def pid_gone(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie nobody has reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def pid_namespace_members(pid_ns: str) -> set[int]:
    """The host pids of every live process in pid namespace ``pid_ns`` (a ``/proc/PID/ns/pid``
    link's text)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == pid_ns and not pid_gone(int(name)):
                    found.add(int(name))
            except OSError:
                continue
    return found


async def wait_readable(fd: int, timeout: float = 10.0) -> None:
    """Return once the event loop reports ``fd`` readable (TimeoutError after ``timeout``)."""
    async with asyncio.timeout(timeout):
        await readable(fd)


async def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for ``pid`` to exit, woken by its pidfd (no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await wait_readable(fd, timeout)
    finally:
        os.close(fd)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Look at ``condition()`` every 10 ms until it holds; AssertionError after ``timeout``.

    Only for state nothing signals (a server's handler tasks, say): where the suite has a
    signal (``Backend.wait_for_call``, ``Changes``, a pidfd) wait on it instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            raise AssertionError(f"{condition} did not hold within {timeout} s")
        await asyncio.sleep(0.01)


async def expect_error(call: Any, status: Status, message: str | None = None) -> str:
    """Await ``call``, which must fail with ``status`` (and ``message``, if given)."""
    with pytest.raises(GRPCError) as info:
        await call
    assert info.value.status is status, info.value
    text = info.value.message or ""
    if message is not None:
        assert text == message
    return text


@dataclass(frozen=True)
class Wire:
    """Raw stubs to one backend, in one namespace (None: no namespace header at all)."""

    channel: Channel
    namespace: str | None
    sandboxer: str

    def elsewhere(self, namespace: str | None) -> Wire:
        """The same stubs in another namespace."""
        return dataclasses.replace(self, namespace=namespace)

    def _metadata(self) -> dict[str, str]:
        return {} if self.namespace is None else {NAMESPACE_HEADER: self.namespace}

    def store(self) -> spb.StoreStub:
        """The sandbox Store."""
        return spb.StoreStub(self.channel, metadata=self._metadata(), timeout=20)

    def controller(self) -> spb.ControllerStub:
        """The sandbox Controller."""
        return spb.ControllerStub(self.channel, metadata=self._metadata(), timeout=20)

    def containers(self) -> cpb.ContainersStub:
        """The Containers service."""
        return cpb.ContainersStub(self.channel, metadata=self._metadata(), timeout=20)


@contextlib.asynccontextmanager
async def wire_to(address: str, namespace: str) -> AsyncIterator[Wire]:
    """Stubs to ``address`` in ``namespace``; what the rows left there is removed after."""
    async with Channel(path=address) as channel:
        wire = Wire(channel, namespace, PLUGIN_NAME)
        try:
            yield wire
        finally:
            await clean(wire)


async def clean(w: Wire) -> None:
    """Remove what raw requests left in ``w``'s namespace: the Controller's sandboxes of
    :data:`CONTROLLER_IDS`, store records and containers."""
    for sandbox_id in CONTROLLER_IDS:
        with contextlib.suppress(GRPCError):
            await w.controller().shutdown(
                spb.ControllerShutdownRequest(sandbox_id=sandbox_id, sandboxer=w.sandboxer)
            )
    with contextlib.suppress(GRPCError):
        for record in (await w.store().list(spb.StoreListRequest())).list:
            await w.store().delete(spb.StoreDeleteRequest(sandbox_id=record.sandbox_id))
    with contextlib.suppress(GRPCError):
        for container in (await w.containers().list(cpb.ListContainersRequest())).containers:
            await w.containers().delete(cpb.DeleteContainerRequest(id=container.id))


class Raw:
    """Raw requests over the library's own connection class and its one error mapping.

    For tests that must send what the public API never would (a record without a runtime,
    a call without a namespace) and see the error the Client would raise.
    """

    def __init__(self, connection: Connection, sandboxer: str) -> None:
        self.connection = connection
        self.sandboxer = sandboxer

    @property
    def store(self) -> spb.StoreStub:
        return self.connection.stub(spb.StoreStub)

    @property
    def controller(self) -> spb.ControllerStub:
        return self.connection.stub(spb.ControllerStub)

    @property
    def containers(self) -> cpb.ContainersStub:
        return self.connection.stub(cpb.ContainersStub)

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


def args_spec(*args: str) -> dict[str, object]:
    """The least OCI spec, as JSON, that runs ``args``: what a test's container needs."""
    return {"process": {"args": list(args)}}


SANDBOXER_MODULE = (sys.executable, "-m", "sandboxclient.sandboxer")
"""The command line that starts the sandboxer's module (give it :func:`module_env`)."""


def module_env() -> dict[str, str]:
    """The test's environment with the repository first on ``PYTHONPATH``, for a child that
    runs one of the project's modules."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
