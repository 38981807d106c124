"""The events containerd publishes, as frozen records: one class per payload, and markers.

``Client.events()`` gives an :class:`EventStream`; iterating it yields an :class:`Event`
(whose ``payload`` is one of the records here), or an :class:`EventsLagged` or
:class:`EventsReconnected` marker::

    from sandboxclient import events

    async for item in client.events('topic=="/tasks/exit"'):
        if isinstance(item, events.Event) and isinstance(item.payload, events.TaskExit):
            print(item.payload.container_id, item.payload.returncode)

Every payload containerd 2.x publishes for tasks, containers, sandboxes, images, snapshots,
namespaces and content has a record here, named after containerd's message; a payload of
any other type stays an ``AnyValue``. The field names are containerd's, except the exit
code, ``returncode`` everywhere in this library (containerd's ``exit_status``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ._facts._clock import to_utc
from ._models import AnyValue, Mount

__all__ = (
    "EVENT_TYPES",
    "ContainerCreate",
    "ContainerDelete",
    "ContainerUpdate",
    "ContentCreate",
    "ContentDelete",
    "Event",
    "EventPayload",
    "EventsLagged",
    "EventsReconnected",
    "ImageCreate",
    "ImageDelete",
    "ImageUpdate",
    "NamespaceCreate",
    "NamespaceDelete",
    "NamespaceUpdate",
    "SandboxCreate",
    "SandboxExit",
    "SandboxStart",
    "SnapshotCommit",
    "SnapshotPrepare",
    "SnapshotRemove",
    "TaskCheckpointed",
    "TaskCreate",
    "TaskDelete",
    "TaskExecAdded",
    "TaskExecStarted",
    "TaskExit",
    "TaskIO",
    "TaskOOM",
    "TaskPaused",
    "TaskResumed",
    "TaskStart",
)

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TaskIO:
    """The stream paths a task was created with."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class TaskCreate:
    """``/tasks/create``: a task was created."""

    container_id: str = ""
    bundle: str = ""
    rootfs: tuple[Mount, ...] = ()
    io: TaskIO | None = None
    checkpoint: str = ""
    pid: int = 0


@dataclass(frozen=True, slots=True)
class TaskStart:
    """``/tasks/start``: a task's own process started."""

    container_id: str = ""
    pid: int = 0


@dataclass(frozen=True, slots=True)
class TaskDelete:
    """``/tasks/delete``: a task (``id`` its container's) or an exec was deleted."""

    container_id: str = ""
    pid: int = 0
    returncode: int = 0
    """The exit code (containerd's ``exit_status``)."""
    exited_at: datetime | None = None
    id: str = ""


@dataclass(frozen=True, slots=True)
class TaskExit:
    """``/tasks/exit``: a task's process or an exec (``id``) exited."""

    container_id: str = ""
    id: str = ""
    pid: int = 0
    returncode: int = 0
    """The exit code (containerd's ``exit_status``)."""
    exited_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskOOM:
    """``/tasks/oom``: the task's cgroup ran out of memory."""

    container_id: str = ""


@dataclass(frozen=True, slots=True)
class TaskExecAdded:
    """``/tasks/exec-added``: an exec was created."""

    container_id: str = ""
    exec_id: str = ""


@dataclass(frozen=True, slots=True)
class TaskExecStarted:
    """``/tasks/exec-started``: an exec started."""

    container_id: str = ""
    exec_id: str = ""
    pid: int = 0


@dataclass(frozen=True, slots=True)
class TaskPaused:
    """``/tasks/paused``."""

    container_id: str = ""


@dataclass(frozen=True, slots=True)
class TaskResumed:
    """``/tasks/resumed``."""

    container_id: str = ""


@dataclass(frozen=True, slots=True)
class TaskCheckpointed:
    """``/tasks/checkpointed``."""

    container_id: str = ""
    checkpoint: str = ""


@dataclass(frozen=True, slots=True)
class ContainerCreate:
    """``/containers/create``: ``runtime`` is the runtime's name."""

    id: str = ""
    image: str = ""
    runtime: str = ""


@dataclass(frozen=True, slots=True)
class ContainerUpdate:
    """``/containers/update``."""

    id: str = ""
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    snapshot_key: str = ""


@dataclass(frozen=True, slots=True)
class ContainerDelete:
    """``/containers/delete``."""

    id: str = ""


@dataclass(frozen=True, slots=True)
class SandboxCreate:
    """``/sandboxes/create`` (published by containerd's Controller service)."""

    sandbox_id: str = ""


@dataclass(frozen=True, slots=True)
class SandboxStart:
    """``/sandboxes/start``."""

    sandbox_id: str = ""


@dataclass(frozen=True, slots=True)
class SandboxExit:
    """``/sandboxes/exit`` (published only when someone calls the Controller's Wait)."""

    sandbox_id: str = ""
    returncode: int = 0
    """The exit code (containerd's ``exit_status``)."""
    exited_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImageCreate:
    """``/images/create``."""

    name: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ImageUpdate:
    """``/images/update``."""

    name: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ImageDelete:
    """``/images/delete``."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotPrepare:
    """``/snapshot/prepare``."""

    key: str = ""
    parent: str = ""
    snapshotter: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotCommit:
    """``/snapshot/commit``."""

    key: str = ""
    name: str = ""
    snapshotter: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotRemove:
    """``/snapshot/remove``."""

    key: str = ""
    snapshotter: str = ""


@dataclass(frozen=True, slots=True)
class NamespaceCreate:
    """``/namespaces/create``."""

    name: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class NamespaceUpdate:
    """``/namespaces/update``."""

    name: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class NamespaceDelete:
    """``/namespaces/delete``."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class ContentCreate:
    """``/content/create``."""

    digest: str = ""
    size: int = 0
    media_type: str = ""


@dataclass(frozen=True, slots=True)
class ContentDelete:
    """``/content/delete``."""

    digest: str = ""


EventPayload = (
    TaskCreate
    | TaskStart
    | TaskDelete
    | TaskExit
    | TaskOOM
    | TaskExecAdded
    | TaskExecStarted
    | TaskPaused
    | TaskResumed
    | TaskCheckpointed
    | ContainerCreate
    | ContainerUpdate
    | ContainerDelete
    | SandboxCreate
    | SandboxStart
    | SandboxExit
    | ImageCreate
    | ImageUpdate
    | ImageDelete
    | SnapshotPrepare
    | SnapshotCommit
    | SnapshotRemove
    | NamespaceCreate
    | NamespaceUpdate
    | NamespaceDelete
    | ContentCreate
    | ContentDelete
)
"""Any typed event payload."""

_EVENTS = "containerd.events."
EVENT_TYPES: Mapping[str, type[EventPayload]] = MappingProxyType(
    {
        **{
            _EVENTS + cls.__name__: cls
            for cls in (
                TaskCreate,
                TaskStart,
                TaskDelete,
                TaskExit,
                TaskOOM,
                TaskExecAdded,
                TaskExecStarted,
                TaskPaused,
                TaskResumed,
                TaskCheckpointed,
                ContainerCreate,
                ContainerUpdate,
                ContainerDelete,
                SandboxCreate,
                SandboxStart,
                SandboxExit,
                SnapshotPrepare,
                SnapshotCommit,
                SnapshotRemove,
                NamespaceCreate,
                NamespaceUpdate,
                NamespaceDelete,
                ContentCreate,
                ContentDelete,
            )
        },
        # containerd declares the image events in its images service's package.
        **{
            "containerd.services.images.v1." + cls.__name__: cls
            for cls in (ImageCreate, ImageUpdate, ImageDelete)
        },
    }
)
"""Each payload's type URL (containerd's bare full name) and its record."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its topic (``/tasks/exit``...), namespace, time and payload.

    ``payload`` is the typed record of its type URL, or the ``AnyValue`` as it came when
    its type is not one this library knows (or did not decode).
    """

    topic: str
    namespace: str
    timestamp: datetime | None
    payload: EventPayload | AnyValue


@dataclass(frozen=True, slots=True)
class EventsLagged:
    """The consumer fell behind: ``dropped`` events were not kept, at this point."""

    dropped: int


@dataclass(frozen=True, slots=True)
class EventsReconnected:
    """The subscription was lost (a daemon restart, say) and made again at ``at``.

    containerd keeps no replay: events in between are missing; reconcile with List and
    Status.
    """

    at: datetime


def payload_from_pb(cls: type[EventPayload], message: Any) -> EventPayload:
    """``cls`` built field for field from a decoded payload message."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        values[f.name] = _value(f.name, getattr(message, pb_field_name(f.name)))
    return cls(**values)


def pb_field_name(name: str) -> str:
    """The name containerd's message gives the record's field ``name``."""
    return _PB_NAMES.get(name, name)


_PB_NAMES = {"returncode": "exit_status"}


def _value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return None if value.year == 1 else to_utc(value)
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    if name == "rootfs":
        return tuple(Mount(m.type, m.source, m.target, tuple(m.options)) for m in value)
    if name == "io":
        return (
            None
            if value is None
            else TaskIO(value.stdin, value.stdout, value.stderr, value.terminal)
        )
    if name == "runtime" and not isinstance(value, str):
        return "" if value is None else value.name
    return value
