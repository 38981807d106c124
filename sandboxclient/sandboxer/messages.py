"""The messages of containerd's sandbox Controller API, for writing a controller.

A :class:`~sandboxclient.sandboxer.SandboxController` method takes the request message of its
call and returns the response message; these are those classes, the ones the server
decodes and encodes, under the names of the protocol (package
``containerd.services.sandbox.v1``, service ``Controller``):

- Create: :class:`ControllerCreateRequest` -> :class:`ControllerCreateResponse`
- Start: :class:`ControllerStartRequest` -> :class:`ControllerStartResponse`
- Platform: :class:`ControllerPlatformRequest` -> :class:`ControllerPlatformResponse`
- Stop: :class:`ControllerStopRequest` -> :class:`ControllerStopResponse`
- Wait: :class:`ControllerWaitRequest` -> :class:`ControllerWaitResponse`
- Status: :class:`ControllerStatusRequest` -> :class:`ControllerStatusResponse`
- Shutdown: :class:`ControllerShutdownRequest` -> :class:`ControllerShutdownResponse`
- Metrics: :class:`ControllerMetricsRequest` -> :class:`ControllerMetricsResponse`
- Update: :class:`ControllerUpdateRequest` -> :class:`ControllerUpdateResponse`

and the types they carry (package ``containerd.types``): :class:`Sandbox` (with
:class:`SandboxRuntime`, its ``runtime``), :class:`Mount`, :class:`Platform`, :class:`Metric`,
and ``google.protobuf.Any`` as :class:`Any`. Timestamps are tz-aware :class:`datetime.datetime`
values, maps are dicts, unset messages are None.

containerd names protobuf payloads in an ``Any`` by their bare full name
(``google.protobuf.Empty``), not with the ``type.googleapis.com/`` prefix ``Any.pack`` would
add: build ``Any`` values with ``Any(type_url=..., value=...)``. A sandbox's spec is an OCI
runtime spec as JSON bytes, type URL ``types.containerd.io/opencontainers/runtime-spec/1/Spec``.
"""

from __future__ import annotations

from .._wire._pb import (
    AnyPb,
    MetricPb,
    MountPb,
    PlatformPb,
    SandboxPb,
    SandboxRuntimePb,
    sandbox_pb,
)

__all__ = (
    "Any",
    "ControllerCreateRequest",
    "ControllerCreateResponse",
    "ControllerMetricsRequest",
    "ControllerMetricsResponse",
    "ControllerPlatformRequest",
    "ControllerPlatformResponse",
    "ControllerShutdownRequest",
    "ControllerShutdownResponse",
    "ControllerStartRequest",
    "ControllerStartResponse",
    "ControllerStatusRequest",
    "ControllerStatusResponse",
    "ControllerStopRequest",
    "ControllerStopResponse",
    "ControllerUpdateRequest",
    "ControllerUpdateResponse",
    "ControllerWaitRequest",
    "ControllerWaitResponse",
    "Metric",
    "Mount",
    "Platform",
    "Sandbox",
    "SandboxRuntime",
)

Any = AnyPb
Sandbox = SandboxPb
SandboxRuntime = SandboxRuntimePb
Mount = MountPb
Platform = PlatformPb
Metric = MetricPb

ControllerCreateRequest = sandbox_pb.ControllerCreateRequest
ControllerCreateResponse = sandbox_pb.ControllerCreateResponse
ControllerStartRequest = sandbox_pb.ControllerStartRequest
ControllerStartResponse = sandbox_pb.ControllerStartResponse
ControllerPlatformRequest = sandbox_pb.ControllerPlatformRequest
ControllerPlatformResponse = sandbox_pb.ControllerPlatformResponse
ControllerStopRequest = sandbox_pb.ControllerStopRequest
ControllerStopResponse = sandbox_pb.ControllerStopResponse
ControllerWaitRequest = sandbox_pb.ControllerWaitRequest
ControllerWaitResponse = sandbox_pb.ControllerWaitResponse
ControllerStatusRequest = sandbox_pb.ControllerStatusRequest
ControllerStatusResponse = sandbox_pb.ControllerStatusResponse
ControllerShutdownRequest = sandbox_pb.ControllerShutdownRequest
ControllerShutdownResponse = sandbox_pb.ControllerShutdownResponse
ControllerMetricsRequest = sandbox_pb.ControllerMetricsRequest
ControllerMetricsResponse = sandbox_pb.ControllerMetricsResponse
ControllerUpdateRequest = sandbox_pb.ControllerUpdateRequest
ControllerUpdateResponse = sandbox_pb.ControllerUpdateResponse
