"""Public, immutable views of what containerd returns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ._common import RUNTIME_SPEC_TYPE_URL, UNKNOWN_EXIT_STATUS
from .errors import ContainerdError

__all__ = (
    "UNKNOWN_EXIT_STATUS",
    "AnyValue",
    "Container",
    "ExitChannel",
    "ExitStatus",
    "Metric",
    "Platform",
    "RuntimeInfo",
    "SandboxInfo",
    "SandboxStatus",
    "StartResult",
)


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AnyValue:
    """A typed payload as containerd stores it: a type URL and the encoded bytes."""

    type_url: str
    value: bytes


def _decode_spec(value: AnyValue | None) -> dict[str, Any] | None:
    if value is None or value.type_url != RUNTIME_SPEC_TYPE_URL:
        return None
    try:
        decoded = json.loads(value.value)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """The runtime a sandbox or container runs under, with its encoded options."""

    name: str
    options: AnyValue | None = None


class _SpecCarrier:
    """A record that stores its spec as sent, and decodes it on request."""

    __slots__ = ()
    spec_any: AnyValue | None

    @property
    def spec(self) -> dict[str, Any] | None:
        """The OCI runtime spec, decoded afresh (yours to change), or None if there is none."""
        return _decode_spec(self.spec_any)


@dataclass(frozen=True, slots=True)
class SandboxInfo(_SpecCarrier):
    """A sandbox record from containerd's sandbox store."""

    id: str
    runtime: RuntimeInfo
    sandboxer: str
    created_at: datetime | None
    updated_at: datetime | None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    extensions: Mapping[str, AnyValue] = field(default_factory=lambda: _EMPTY)
    spec_any: AnyValue | None = None
    """The spec exactly as stored, whatever its type."""


@dataclass(frozen=True, slots=True)
class Container(_SpecCarrier):
    """A container record from containerd's containers store."""

    id: str
    sandbox_id: str
    runtime: RuntimeInfo
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    snapshotter: str = ""
    snapshot_key: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    extensions: Mapping[str, AnyValue] = field(default_factory=lambda: _EMPTY)
    spec_any: AnyValue | None = None
    """The spec exactly as stored, whatever its type."""


@dataclass(frozen=True, slots=True)
class StartResult:
    """What the controller reports when a sandbox starts."""

    pid: int
    address: str
    version: int
    created_at: datetime | None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    """A sandbox's runtime state as its controller reports it."""

    id: str
    state: str
    """``SANDBOX_READY``, ``SANDBOX_NOTREADY`` or ``SANDBOX_UNKNOWN``."""
    pid: int
    created_at: datetime | None
    exited_at: datetime | None
    address: str = ""
    version: int = 0
    info: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    extra: AnyValue | None = None

    @property
    def ready(self) -> bool:
        """Whether the sandbox is running."""
        return self.state == "SANDBOX_READY"


@dataclass(frozen=True, slots=True)
class Platform:
    """The platform a sandbox runs on."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""


@dataclass(frozen=True, slots=True)
class Metric:
    """One metrics sample of a sandbox."""

    id: str
    timestamp: datetime | None
    data: AnyValue | None


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a sandbox ended, or why its exit could not be learned.

    ``error`` is None when ``code`` is the sandbox's real exit code; otherwise ``code`` is
    ``UNKNOWN_EXIT_STATUS`` (255) and ``error`` says what went wrong.
    """

    code: int
    exited_at: datetime | None = None
    error: ContainerdError | None = None

    @property
    def ok(self) -> bool:
        """True when the exit was observed (whatever the code)."""
        return self.error is None


class ExitChannel:
    """The one exit status of a sandbox, delivered by a task its Client owns.

    Await it, call ``get()``, or iterate it with ``async for`` (one item); any number of
    readers, at once or one after another, get the same ``ExitStatus``. ``queue`` is an
    ``asyncio.Queue`` that receives that status too, exactly once, for code that selects over
    queues.
    """

    __slots__ = ("_arrived", "_queue", "_result", "_task")

    def __init__(self) -> None:
        self._queue: asyncio.Queue[ExitStatus] = asyncio.Queue(maxsize=1)
        self._arrived = asyncio.Event()
        self._result: ExitStatus | None = None
        self._task: asyncio.Task[Any] | None = None

    def _attach(self, task: asyncio.Task[Any]) -> None:
        """Bind the task that fills the channel, so ``close()`` can cancel it."""
        self._task = task

    def _deliver(self, status: ExitStatus) -> None:
        """Put the status on the channel; only the first one counts."""
        if self._result is not None:
            return
        self._result = status
        self._queue.put_nowait(status)
        self._arrived.set()

    @property
    def queue(self) -> asyncio.Queue[ExitStatus]:
        """The queue the status is put on, once."""
        return self._queue

    async def get(self) -> ExitStatus:
        """Wait for the exit status and return it."""
        if self._result is None:
            await self._arrived.wait()
        assert self._result is not None
        return self._result

    def result(self) -> ExitStatus:
        """The exit status if it has arrived; raise ``asyncio.InvalidStateError`` if not."""
        if self._result is None:
            raise asyncio.InvalidStateError("exit status not available yet")
        return self._result

    def done(self) -> bool:
        """Whether the exit status has arrived."""
        return self._result is not None

    def close(self) -> None:
        """Stop waiting: cancel the background task.

        If no status had arrived, the channel then yields one whose error is a
        ``CanceledError`` saying it was closed.
        """
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def __await__(self) -> Generator[Any, None, ExitStatus]:
        return self.get().__await__()

    async def __aiter__(self) -> AsyncIterator[ExitStatus]:
        yield await self.get()

    def __repr__(self) -> str:
        state = repr(self._result) if self._result is not None else "pending"
        return f"<ExitChannel {state}>"
