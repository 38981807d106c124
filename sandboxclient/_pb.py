"""The one door to the generated protobuf code.

Hand-written modules (client, sandboxer and stand-in alike) import message classes and
service stubs from here, never from ``_proto`` directly, so a change of code generator
touches this file alone. The public API never hands these classes out: the client converts
them to the records of ``_models`` (see ``_convert``).
"""

from __future__ import annotations

from ._proto.containerd.services.containers import v1 as containers_pb
from ._proto.containerd.services.sandbox import v1 as sandbox_pb
from ._proto.containerd.types import Metric as MetricPb
from ._proto.containerd.types import Mount as MountPb
from ._proto.containerd.types import Platform as PlatformPb
from ._proto.containerd.types import Sandbox as SandboxPb
from ._proto.containerd.types import SandboxRuntime as SandboxRuntimePb
from ._proto.google.protobuf import Any as AnyPb
from ._proto.google.protobuf import Empty as EmptyPb
from ._proto.google.protobuf import FieldMask as FieldMaskPb
from ._proto.google.protobuf import Timestamp as TimestampPb

__all__ = (
    "AnyPb",
    "EmptyPb",
    "FieldMaskPb",
    "MetricPb",
    "MountPb",
    "PlatformPb",
    "SandboxPb",
    "SandboxRuntimePb",
    "TimestampPb",
    "containers_pb",
    "sandbox_pb",
)
