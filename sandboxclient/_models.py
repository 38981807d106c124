"""Public, immutable views of what containerd returns."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from ._facts import _lifetime
from ._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from .errors import ContainerdError

__all__ = (
    "UNKNOWN_EXIT_STATUS",
    "AnyValue",
    "ContainerInfo",
    "ExitStatus",
    "Mount",
    "Platform",
    "RuntimeInfo",
    "SandboxInfo",
    "SandboxState",
    "SandboxStatus",
    "StartResult",
)


_EMPTY: Mapping[str, Any] = MappingProxyType({})

UNKNOWN_EXIT_STATUS: Final = 255
"""The exit code reported when the real one cannot be known, as containerd's shims do."""


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

    @property
    def deadline(self) -> datetime | None:
        """The deadline its ``lifetime`` asked for (tz-aware), from its label; None without
        one, or when the label names no time."""
        try:
            return _lifetime.parse_deadline(self.labels[_lifetime.DEADLINE_LABEL])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class ContainerInfo(_SpecCarrier):
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
class StartResult(_SpecCarrier):
    """What the controller reports when a sandbox starts.

    ``spec`` is the OCI runtime spec the controller says it started the sandbox with
    (containerd API 1.12, from 2.3; older daemons send none, so it is None).
    """

    pid: int
    address: str
    version: int
    created_at: datetime | None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    spec_any: AnyValue | None = None
    """The spec exactly as sent, whatever its type."""


class SandboxState(enum.StrEnum):
    """A sandbox's state as its controller names it.

    A state containerd does not define is kept as it came, as a member whose name and value
    are that text, so nothing a controller says is lost.
    """

    READY = "SANDBOX_READY"
    NOTREADY = "SANDBOX_NOTREADY"
    UNKNOWN = "SANDBOX_UNKNOWN"

    @classmethod
    def _missing_(cls, value: object) -> SandboxState | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    """A sandbox's runtime state as its controller reports it."""

    id: str
    state: SandboxState
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
        return self.state is SandboxState.READY

    @property
    def deadline(self) -> datetime | None:
        """The deadline the controller enforces (tz-aware; ``info["deadline"]``), or None."""
        return _lifetime.info_time(self.info, "deadline")

    @property
    def idle_deadline(self) -> datetime | None:
        """When the sandbox ends if no exec comes first (``info["idle_deadline"]``); None
        without an idle timeout, or while an exec runs in it."""
        return _lifetime.info_time(self.info, "idle_deadline")


@dataclass(frozen=True, slots=True)
class Mount:
    """A mount as containerd passes it to a runtime: ``mount -t type -o options source target``."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Platform:
    """The platform a sandbox runs on."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    """Required OS features (containerd API 1.12, from 2.3; older daemons send none)."""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a sandbox, task or process ended, or why its exit could not be learned.

    ``error`` is None when ``returncode`` is the real exit code; otherwise ``returncode`` is
    ``UNKNOWN_EXIT_STATUS`` (255) and ``error`` says what went wrong.
    """

    returncode: int
    exited_at: datetime | None = None
    error: ContainerdError | None = None

    @property
    def observed(self) -> bool:
        """Whether ``returncode`` is the real exit code (whatever it is)."""
        return self.error is None

    @property
    def success(self) -> bool:
        """Whether the exit was observed and its code is 0."""
        return self.error is None and self.returncode == 0
