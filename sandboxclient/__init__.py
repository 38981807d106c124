"""Asyncio-native client for containerd 2.x's sandbox API.

>>> async with Client("/run/containerd/containerd.sock", namespace="default") as client:
...     sb = await client.new_sandbox("sb1", runtime="io.containerd.runc.v2")
...     await sb.start()
...     channel = await sb.wait()
...     await sb.stop(grace=5)
...     status = await channel
...     await sb.shutdown()

OCI runtime specs for ``spec=`` are built with :mod:`sandboxclient.oci`; the errors are in
:mod:`sandboxclient.errors`, the event records in :mod:`sandboxclient.events`.
"""

from . import errors, events, oci
from ._client import (
    DEFAULT_ADDRESS,
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
    Client,
)
from ._container import Container
from ._controller import Controller
from ._events import EventStream
from ._facts._lifetime import (
    DEADLINE_LABEL,
    IDLE_EXIT_STATUS,
    IDLE_TIMEOUT_LABEL,
    LIFETIME_EXIT_STATUS,
)
from ._facts._netcheck import NetworkCheck, PluginCheck
from ._facts._network import Bandwidth, EgressPolicy, PortMapping, SandboxNetwork
from ._file_info import FileInfo, FileType
from ._files import Files
from ._image_models import Descriptor, Image, ImageConfig, PullProgress
from ._imageops._credentials import Credentials
from ._models import (
    UNKNOWN_EXIT_STATUS,
    AnyValue,
    ContainerInfo,
    ExitStatus,
    Mount,
    Platform,
    RuntimeInfo,
    SandboxInfo,
    SandboxState,
    SandboxStatus,
    StartResult,
)
from ._plumbing._connection import USE_CLIENT_DEFAULT, ClientState, Timeout
from ._plumbing._pipes import ProcessWriter
from ._plumbing._sandboxer_handlers import RuntimeHandlerInfo
from ._plumbing._server_info import SandboxerInfo, ServerVersion
from ._plumbing._stream_args import DEVNULL, PIPE, STDOUT
from ._plumbing._version import ContainerdVersion
from ._plumbing._wait import ExitChannel
from ._pool import PoolStats, SandboxPool
from ._process import Process
from ._process_models import CompletedProcess, ProcessInfo, ProcessStatus, TaskState
from ._sandbox import Sandbox
from ._sandbox_metrics import SandboxMetrics
from ._task import Task
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CanceledError,
    ClientClosedError,
    CommandTimeoutError,
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
    "DEADLINE_LABEL",
    "DEFAULT_ADDRESS",
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "DEVNULL",
    "IDLE_EXIT_STATUS",
    "IDLE_TIMEOUT_LABEL",
    "LIFETIME_EXIT_STATUS",
    "PIPE",
    "STDOUT",
    "UNKNOWN_EXIT_STATUS",
    "USE_CLIENT_DEFAULT",
    "AbortedError",
    "AlreadyExistsError",
    "AnyValue",
    "Bandwidth",
    "CanceledError",
    "Client",
    "ClientClosedError",
    "ClientState",
    "CommandTimeoutError",
    "CompletedProcess",
    "ConflictError",
    "Container",
    "ContainerInfo",
    "ContainerdError",
    "ContainerdVersion",
    "Controller",
    "Credentials",
    "DataLossError",
    "DeadlineExceededError",
    "Descriptor",
    "EgressPolicy",
    "EventStream",
    "ExitChannel",
    "ExitStatus",
    "FailedPreconditionError",
    "FileInfo",
    "FileType",
    "Files",
    "Image",
    "ImageConfig",
    "InternalError",
    "InvalidArgumentError",
    "Mount",
    "NetworkCheck",
    "NotFoundError",
    "NotModifiedError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "Platform",
    "PluginCheck",
    "PoolStats",
    "PortMapping",
    "Process",
    "ProcessInfo",
    "ProcessStatus",
    "ProcessWriter",
    "PullProgress",
    "ResourceExhaustedError",
    "RuntimeHandlerInfo",
    "RuntimeInfo",
    "Sandbox",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxNetwork",
    "SandboxPool",
    "SandboxState",
    "SandboxStatus",
    "SandboxerInfo",
    "ServerVersion",
    "StartResult",
    "Task",
    "TaskState",
    "Timeout",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "errors",
    "events",
    "oci",
)
