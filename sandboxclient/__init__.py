"""Asyncio-native client for containerd 2.x's sandbox API.

>>> async with Client("/run/containerd/containerd.sock", namespace="default") as client:
...     sb = await client.new_sandbox("sb1", with_sandbox_runtime("io.containerd.runc.v2"))
...     await sb.start()
...     channel = await sb.wait()
...     await sb.stop(grace=5)
...     status = await channel
...     await sb.shutdown()

OCI runtime specs for ``with_sandbox_spec`` are built with :mod:`sandboxclient.oci`.
"""

from . import errors, oci
from ._client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, Client, NewSandboxKeywords
from ._common import UNKNOWN_EXIT_STATUS
from ._connection import USE_CLIENT_DEFAULT, ClientState, Timeout, UseClientDefault
from ._container import Container
from ._containers import ContainerStore
from ._controller import Controller
from ._event_models import (
    ContainerCreate,
    ContainerDelete,
    ContainerUpdate,
    ContentCreate,
    ContentDelete,
    Event,
    EventPayload,
    EventsLagged,
    EventsReconnected,
    ImageCreate,
    ImageDelete,
    ImageUpdate,
    NamespaceCreate,
    NamespaceDelete,
    NamespaceUpdate,
    SandboxCreate,
    SandboxExit,
    SandboxStart,
    SnapshotCommit,
    SnapshotPrepare,
    SnapshotRemove,
    TaskCheckpointed,
    TaskCreate,
    TaskDelete,
    TaskExecAdded,
    TaskExecStarted,
    TaskExit,
    TaskIO,
    TaskOOM,
    TaskPaused,
    TaskResumed,
    TaskStart,
)
from ._events import EventStream
from ._io import DEVNULL, PIPE, STDOUT
from ._models import (
    AnyValue,
    ContainerInfo,
    ExitStatus,
    Metric,
    Mount,
    Platform,
    RuntimeInfo,
    SandboxInfo,
    SandboxState,
    SandboxStatus,
    StartResult,
)
from ._options import (
    NewSandboxOpt,
    SandboxDraft,
    SpecOpt,
    with_sandbox_extension,
    with_sandbox_labels,
    with_sandbox_runtime,
    with_sandbox_spec,
    with_sandboxer,
)
from ._process import Process
from ._process_models import CompletedProcess, ProcessInfo, ProcessStatus, TaskInfo, TaskState
from ._sandbox import Sandbox
from ._sandbox_metrics import SANDBOX_METRICS_TYPE_URL, SandboxMetrics
from ._server_info import SandboxerInfo, ServerVersion
from ._store import SandboxStore
from ._streams import ProcessWriter
from ._task import Task
from ._wait import ExitChannel
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CanceledError,
    ClientClosedError,
    ConflictError,
    ContainerdError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    NotModifiedError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)

__version__ = "0.1.0"

__all__ = (
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "DEVNULL",
    "PIPE",
    "SANDBOX_METRICS_TYPE_URL",
    "STDOUT",
    "UNKNOWN_EXIT_STATUS",
    "USE_CLIENT_DEFAULT",
    "AbortedError",
    "AlreadyExistsError",
    "AnyValue",
    "CanceledError",
    "Client",
    "ClientClosedError",
    "ClientState",
    "CompletedProcess",
    "ConflictError",
    "Container",
    "ContainerCreate",
    "ContainerDelete",
    "ContainerInfo",
    "ContainerStore",
    "ContainerUpdate",
    "ContainerdError",
    "ContentCreate",
    "ContentDelete",
    "Controller",
    "DataLossError",
    "DeadlineExceededError",
    "Event",
    "EventPayload",
    "EventStream",
    "EventsLagged",
    "EventsReconnected",
    "ExitChannel",
    "ExitStatus",
    "FailedPreconditionError",
    "ImageCreate",
    "ImageDelete",
    "ImageUpdate",
    "InternalError",
    "InvalidArgumentError",
    "Metric",
    "Mount",
    "NamespaceCreate",
    "NamespaceDelete",
    "NamespaceUpdate",
    "NewSandboxKeywords",
    "NewSandboxOpt",
    "NotFoundError",
    "NotModifiedError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "Platform",
    "Process",
    "ProcessInfo",
    "ProcessStatus",
    "ProcessWriter",
    "ResourceExhaustedError",
    "RuntimeInfo",
    "Sandbox",
    "SandboxCreate",
    "SandboxDraft",
    "SandboxExit",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxStart",
    "SandboxState",
    "SandboxStatus",
    "SandboxStore",
    "SandboxerInfo",
    "ServerVersion",
    "SnapshotCommit",
    "SnapshotPrepare",
    "SnapshotRemove",
    "SpecOpt",
    "StartResult",
    "Task",
    "TaskCheckpointed",
    "TaskCreate",
    "TaskDelete",
    "TaskExecAdded",
    "TaskExecStarted",
    "TaskExit",
    "TaskIO",
    "TaskInfo",
    "TaskOOM",
    "TaskPaused",
    "TaskResumed",
    "TaskStart",
    "TaskState",
    "Timeout",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "UseClientDefault",
    "errors",
    "oci",
    "with_sandbox_extension",
    "with_sandbox_labels",
    "with_sandbox_runtime",
    "with_sandbox_spec",
    "with_sandboxer",
)
