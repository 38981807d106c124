"""The one door to the generated code, and conversions between it and the public models.

Hand-written modules import protobuf types from here, never from ``_proto`` directly, so a
change of code generator touches this file alone.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any as _Any

import betterproto2

from ._proto.containerd.services.containers import v1 as containers_pb
from ._proto.containerd.services.sandbox import v1 as sandbox_pb
from ._proto.containerd.types import Metric as MetricPb
from ._proto.containerd.types import Mount as MountPb
from ._proto.containerd.types import Platform as PlatformPb
from ._proto.containerd.types import Sandbox as SandboxPb
from ._proto.containerd.types import SandboxRuntime as SandboxRuntimePb
from ._proto.google.protobuf import Any as AnyPb
from ._proto.google.protobuf import Empty as EmptyPb

__all__ = [
    "EMPTY_TYPE_URL",
    "RUNTIME_SPEC_TYPE_URL",
    "AnyPb",
    "EmptyPb",
    "MetricPb",
    "MountPb",
    "PlatformPb",
    "SandboxPb",
    "SandboxRuntimePb",
    "containers_pb",
    "message_type_url",
    "pack_any",
    "sandbox_pb",
    "to_utc",
    "utcnow",
]

RUNTIME_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
EMPTY_TYPE_URL = "google.protobuf.Empty"
_GOOGLE_PREFIX = "type.googleapis.com/"


def pack_any(type_url: str, value: bytes) -> AnyPb:
    """An Any carrying ``value`` under ``type_url`` exactly as given."""
    return AnyPb(type_url=type_url, value=value)


def message_type_url(message: betterproto2.Message) -> str:
    """The bare full name containerd's typeurl uses for a betterproto2 message."""
    cls = type(message)
    pool: _Any = getattr(sys.modules.get(cls.__module__), "default_message_pool", None)
    url: str | None = None
    if pool is not None:
        url = pool.type_to_url.get(cls)
    if url is None:
        raise TypeError(
            f"{cls.__qualname__} is not a registered betterproto2 message; "
            "pass a (type_url, bytes) pair instead"
        )
    return url.removeprefix(_GOOGLE_PREFIX)


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
