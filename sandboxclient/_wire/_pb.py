"""The one door to the generated protobuf code.

Hand-written modules (client, sandboxer and stand-in alike) import message classes and
service stubs from here, never from ``_proto`` directly, so a change of code generator
touches this file alone. The public API never hands these classes out: the client converts
them to the records of ``_models`` (see ``_convert``).

The sandbox and containers modules load with this one. The others (tasks, images, content,
snapshots, leases, events, version, introspection, namespaces, task types, runc options,
transfer, streaming and their types,
cgroup metrics, ``google.rpc``) load on first use, since together they would cost more at
``import sandboxclient`` than the whole client does: ``from ._pb import tasks_pb`` works as
usual.

Module names: ``<service>_pb`` is package ``containerd.services.<service>.v1``; the event
payloads of package ``containerd.events`` are ``event_payloads_pb``, except the image events,
which containerd declares in the images package (``images_pb.ImageCreate``, type URL
``containerd.services.images.v1.ImageCreate``). betterproto2 renames a few messages in
Python case: ``TaskIO`` is ``TaskIo``, ``TaskOOM`` is ``TaskOom``, nested messages join their
parent's name (``ContainerCreateRuntime``); :func:`message_type` finds a class by its
protobuf name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import betterproto2

from .._proto.containerd.services.containers import v1 as containers_pb
from .._proto.containerd.services.sandbox import v1 as sandbox_pb
from .._proto.containerd.types import Descriptor as DescriptorPb
from .._proto.containerd.types import Envelope as EnvelopePb
from .._proto.containerd.types import Metric as MetricPb
from .._proto.containerd.types import Mount as MountPb
from .._proto.containerd.types import Platform as PlatformPb
from .._proto.containerd.types import RuntimeInfo as RuntimeInfoPb
from .._proto.containerd.types import RuntimeRequest as RuntimeRequestPb
from .._proto.containerd.types import RuntimeVersion as RuntimeVersionPb
from .._proto.containerd.types import Sandbox as SandboxPb
from .._proto.containerd.types import SandboxRuntime as SandboxRuntimePb
from .._proto.google.protobuf import Any as AnyPb
from .._proto.google.protobuf import Empty as EmptyPb
from .._proto.google.protobuf import FieldMask as FieldMaskPb
from .._proto.google.protobuf import Timestamp as TimestampPb
from .._proto.message_pool import default_message_pool

if TYPE_CHECKING:
    from .._proto.containerd import events as event_payloads_pb
    from .._proto.containerd.runc import v1 as runc_options_pb
    from .._proto.containerd.services.content import v1 as content_pb
    from .._proto.containerd.services.events import v1 as events_pb
    from .._proto.containerd.services.images import v1 as images_pb
    from .._proto.containerd.services.introspection import v1 as introspection_pb
    from .._proto.containerd.services.leases import v1 as leases_pb
    from .._proto.containerd.services.namespaces import v1 as namespaces_pb
    from .._proto.containerd.services.snapshots import v1 as snapshots_pb
    from .._proto.containerd.services.streaming import v1 as streaming_pb
    from .._proto.containerd.services.tasks import v1 as tasks_pb
    from .._proto.containerd.services.transfer import v1 as transfer_pb
    from .._proto.containerd.services.version import v1 as version_pb
    from .._proto.containerd.types import transfer as transfer_types_pb
    from .._proto.containerd.v1 import types as task_types_pb
    from .._proto.google import rpc as rpc_pb
    from .._proto.io.containerd.cgroups import v1 as cgroups_v1_pb
    from .._proto.io.containerd.cgroups import v2 as cgroups_v2_pb

__all__ = (
    "AnyPb",
    "DescriptorPb",
    "EmptyPb",
    "EnvelopePb",
    "FieldMaskPb",
    "MetricPb",
    "MountPb",
    "PlatformPb",
    "RuntimeInfoPb",
    "RuntimeRequestPb",
    "RuntimeVersionPb",
    "SandboxPb",
    "SandboxRuntimePb",
    "TimestampPb",
    "cgroups_v1_pb",
    "cgroups_v2_pb",
    "containers_pb",
    "content_pb",
    "event_payloads_pb",
    "events_pb",
    "images_pb",
    "introspection_pb",
    "leases_pb",
    "message_type",
    "namespaces_pb",
    "rpc_pb",
    "runc_options_pb",
    "sandbox_pb",
    "snapshots_pb",
    "streaming_pb",
    "task_types_pb",
    "tasks_pb",
    "transfer_pb",
    "transfer_types_pb",
    "version_pb",
)

_LAZY = {
    "cgroups_v1_pb": "io.containerd.cgroups.v1",
    "cgroups_v2_pb": "io.containerd.cgroups.v2",
    "content_pb": "containerd.services.content.v1",
    "event_payloads_pb": "containerd.events",
    "events_pb": "containerd.services.events.v1",
    "images_pb": "containerd.services.images.v1",
    "introspection_pb": "containerd.services.introspection.v1",
    "leases_pb": "containerd.services.leases.v1",
    "namespaces_pb": "containerd.services.namespaces.v1",
    "rpc_pb": "google.rpc",
    "runc_options_pb": "containerd.runc.v1",
    "snapshots_pb": "containerd.services.snapshots.v1",
    "streaming_pb": "containerd.services.streaming.v1",
    "task_types_pb": "containerd.v1.types",
    "tasks_pb": "containerd.services.tasks.v1",
    "transfer_pb": "containerd.services.transfer.v1",
    "transfer_types_pb": "containerd.types.transfer",
    "version_pb": "containerd.services.version.v1",
}
"""Lazily loaded modules: their name here and their protobuf package."""

# betterproto2 registers each class under "type.googleapis.com/<full name>".
_POOL_PREFIX = "type.googleapis.com/"


def _load(name: str) -> object:
    """Import the lazily loaded module ``name`` and keep it as this module's attribute."""
    module = globals().get(name)
    if module is None:
        module = importlib.import_module(f"sandboxclient._proto.{_LAZY[name]}")
        globals()[name] = module
    return module


if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return _load(name)


def message_type(type_url: str) -> type[betterproto2.Message] | None:
    """The generated class of a protobuf full name, or ``None`` if there is none.

    ``type_url`` is what containerd puts in an ``Any``: the bare full name, such as
    ``containerd.events.TaskExit`` (a ``type.googleapis.com/`` prefix is accepted too).
    Loads every lazily loaded module, since a class is known only once its module is.
    """
    for name in _LAZY:
        _load(name)
    full_name = type_url.removeprefix(_POOL_PREFIX)
    return default_message_pool.url_to_type.get(_POOL_PREFIX + full_name)
