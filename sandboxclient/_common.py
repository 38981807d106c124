"""Facts the client, the sandboxer and the stand-in share, each defined once."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Final

__all__ = (
    "EMPTY_TYPE_URL",
    "GO_ZERO_TIME",
    "NAMESPACE_HEADER",
    "RUNTIME_SPEC_TYPE_URL",
    "STATE_NOTREADY",
    "STATE_READY",
    "STATE_UNKNOWN",
    "UNKNOWN_EXIT_STATUS",
    "go_arch",
    "to_utc",
    "utcnow",
)

RUNTIME_SPEC_TYPE_URL: Final = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
"""The type URL containerd's typeurl gives an OCI runtime spec, carried as JSON."""

EMPTY_TYPE_URL: Final = "google.protobuf.Empty"
"""containerd's typeurl names protobuf payloads by their bare full name."""

NAMESPACE_HEADER: Final = "containerd-namespace"
"""The gRPC metadata key containerd carries the namespace in."""

GO_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time``: what containerd's controllers send as the exit time of a sandbox
that has not exited (an unset one becomes the Unix epoch on its way through containerd)."""

UNKNOWN_EXIT_STATUS: Final = 255
"""The exit code reported when the real one cannot be known, as containerd's shims do."""

STATE_READY: Final = "SANDBOX_READY"
STATE_NOTREADY: Final = "SANDBOX_NOTREADY"
STATE_UNKNOWN: Final = "SANDBOX_UNKNOWN"

# uname's machine names and Go's GOARCH (with GOARM as the variant) for them.
_GOARCH: Final = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


def go_arch(machine: str | None = None) -> tuple[str, str]:
    """This machine's (or ``machine``'s) architecture and variant as containerd names them."""
    name = (platform.machine() if machine is None else machine).lower()
    return _GOARCH.get(name, (name, ""))


def utcnow() -> datetime:
    """The current time, tz-aware in UTC."""
    return datetime.now(UTC)


def to_utc(value: datetime | None) -> datetime | None:
    """``value`` as tz-aware UTC; naive datetimes are taken to be UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
