"""Conversions between the wire messages and the public records of ``_models``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any as _Any

import betterproto2

from .._facts._clock import to_utc
from .._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from .._models import (
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
from .._process_models import ProcessStatus, TaskInfo, TaskState
from ._pb import (
    AnyPb,
    MountPb,
    PlatformPb,
    SandboxPb,
    SandboxRuntimePb,
    containers_pb,
    sandbox_pb,
    task_types_pb,
)
from ._records import make_any_value, make_runtime_info, make_sandbox_info

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


AnyLike = betterproto2.Message | tuple[str, bytes] | AnyValue
"""What options accept as a typed payload."""


def to_any_value(value: AnyLike, *, what: str) -> AnyValue:
    """Normalise an option payload; ``what`` names it in the error."""
    if isinstance(value, AnyValue):
        return value
    if isinstance(value, tuple):
        if (
            len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], bytes | bytearray | memoryview)
        ):
            return AnyValue(value[0], bytes(value[1]))
        shown = ", ".join(type(item).__name__ for item in value)
        raise TypeError(f"{what}: a (type_url, bytes) pair is expected, got a tuple of ({shown})")
    if isinstance(value, betterproto2.Message):
        return AnyValue(message_type_url(value), bytes(value))
    raise TypeError(
        f"{what}: expected a betterproto2 message, a (type_url, bytes) pair or an AnyValue, "
        f"got {type(value).__name__}"
    )


def any_to_pb(value: AnyValue | None) -> AnyPb | None:
    """The wire form of an optional payload."""
    if value is None:
        return None
    return AnyPb(type_url=value.type_url, value=value.value)


def any_from_pb(value: AnyPb | None) -> AnyValue | None:
    """The public form of an optional wire payload."""
    if value is None:
        return None
    return AnyValue(value.type_url, bytes(value.value))


def spec_to_any(spec: Mapping[str, _Any]) -> AnyValue:
    """An OCI runtime spec as containerd's typeurl encodes it: JSON under the spec URL."""
    try:
        data = json.dumps(spec, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"spec is not JSON-serialisable: {exc}") from exc
    return AnyValue(RUNTIME_SPEC_TYPE_URL, data)


_EMPTY_MAP: Mapping[str, _Any] = MappingProxyType({})


def _frozen(mapping: Mapping[str, _Any]) -> Mapping[str, _Any]:
    return MappingProxyType(dict(mapping)) if mapping else _EMPTY_MAP


def _extensions_from_pb(extensions: Mapping[str, AnyPb]) -> Mapping[str, AnyValue]:
    if not extensions:
        return _EMPTY_MAP
    return MappingProxyType(
        # A map entry without a value is an empty Any in proto3.
        {
            k: make_any_value(v.type_url, bytes(v.value))
            if v is not None
            else make_any_value("", b"")
            for k, v in extensions.items()
        }
    )


_NO_RUNTIME = RuntimeInfo("")
# The runtime without options last converted: the records of one answer mostly share one, and
# an immutable record can serve them all. One entry, so no peer can grow it.
_last_plain_runtime = _NO_RUNTIME


def _runtime_from_pb(
    runtime: SandboxRuntimePb | containers_pb.ContainerRuntime | None,
) -> RuntimeInfo:
    global _last_plain_runtime
    if runtime is None:
        return _NO_RUNTIME
    options = runtime.options
    if options is None:
        last = _last_plain_runtime
        if last.name != runtime.name:
            last = _last_plain_runtime = make_runtime_info(runtime.name, None)
        return last
    return make_runtime_info(
        runtime.name,
        None if options is None else make_any_value(options.type_url, bytes(options.value)),
    )


def sandbox_from_pb(pb: SandboxPb) -> SandboxInfo:
    """The public view of a store record.

    Store.List answers hundreds of these: the records are built through their slots (see
    ``_records``) and times the codec already made UTC are kept as they are.
    """
    created_at = pb.created_at
    if created_at is not None and created_at.tzinfo is not UTC:
        created_at = to_utc(created_at)
    updated_at = pb.updated_at
    if updated_at is not None and updated_at.tzinfo is not UTC:
        updated_at = to_utc(updated_at)
    spec = pb.spec
    return make_sandbox_info(
        pb.sandbox_id,
        _runtime_from_pb(pb.runtime),
        pb.sandboxer,
        created_at,
        updated_at,
        _frozen(pb.labels),
        _extensions_from_pb(pb.extensions),
        None if spec is None else make_any_value(spec.type_url, bytes(spec.value)),
    )


def extensions_to_pb(extensions: Mapping[str, AnyValue]) -> dict[str, AnyPb]:
    """The wire form of an extensions map."""
    return {k: AnyPb(type_url=v.type_url, value=v.value) for k, v in extensions.items()}


def sandbox_to_pb(info: SandboxInfo) -> SandboxPb:
    """The wire form of a record; the runtime message is always present (see the crash list)."""
    return SandboxPb(
        sandbox_id=info.id,
        runtime=SandboxRuntimePb(name=info.runtime.name, options=any_to_pb(info.runtime.options)),
        spec=any_to_pb(info.spec_any),
        labels=dict(info.labels),
        created_at=info.created_at,
        updated_at=info.updated_at,
        extensions={
            k: AnyPb(type_url=v.type_url, value=v.value) for k, v in info.extensions.items()
        },
        sandboxer=info.sandboxer,
    )


def container_to_pb(info: ContainerInfo) -> containers_pb.Container:
    """The wire form of a container record (times are the daemon's to set)."""
    return containers_pb.Container(
        id=info.id,
        labels=dict(info.labels),
        image=info.image,
        runtime=containers_pb.ContainerRuntime(
            name=info.runtime.name, options=any_to_pb(info.runtime.options)
        ),
        spec=any_to_pb(info.spec_any),
        snapshotter=info.snapshotter,
        snapshot_key=info.snapshot_key,
        extensions=extensions_to_pb(info.extensions),
        sandbox=info.sandbox_id,
    )


def container_from_pb(pb: containers_pb.Container) -> ContainerInfo:
    """The public view of a container record."""
    spec_any = any_from_pb(pb.spec)
    return ContainerInfo(
        id=pb.id,
        sandbox_id=pb.sandbox,
        runtime=_runtime_from_pb(pb.runtime),
        image=pb.image,
        labels=_frozen(pb.labels),
        snapshotter=pb.snapshotter,
        snapshot_key=pb.snapshot_key,
        created_at=to_utc(pb.created_at),
        updated_at=to_utc(pb.updated_at),
        extensions=_extensions_from_pb(pb.extensions),
        spec_any=spec_any,
    )


def start_from_pb(pb: sandbox_pb.ControllerStartResponse) -> StartResult:
    """The public view of a Start answer."""
    return StartResult(
        pid=pb.pid,
        address=pb.address,
        version=pb.version,
        created_at=to_utc(pb.created_at),
        labels=_frozen(pb.labels),
        spec_any=any_from_pb(pb.spec),
    )


def status_from_pb(pb: sandbox_pb.ControllerStatusResponse) -> SandboxStatus:
    """The public view of a Status answer.

    A sandbox that has not exited has no ``exited_at``: controllers send Go's zero time, and
    containerd 2.1's proxy turns an unset one into the Unix epoch; both mean None here.
    """
    exited_at = _exit_time(pb.exited_at)
    if exited_at == _UNIX_EPOCH:
        exited_at = None
    return SandboxStatus(
        id=pb.sandbox_id,
        state=SandboxState(pb.state),
        pid=pb.pid,
        created_at=to_utc(pb.created_at),
        exited_at=exited_at,
        address=pb.address,
        version=pb.version,
        info=_frozen(pb.info),
        extra=any_from_pb(pb.extra),
    )


def mount_to_pb(mount: Mount) -> MountPb:
    """The wire form of a mount."""
    return MountPb(
        type=mount.type, source=mount.source, target=mount.target, options=list(mount.options)
    )


def mount_from_pb(pb: MountPb) -> Mount:
    """The public view of a mount."""
    return Mount(pb.type, pb.source, pb.target, tuple(pb.options))


def platform_from_pb(pb: PlatformPb | None) -> Platform:
    """The public view of a Platform answer."""
    if pb is None:
        return Platform("", "")
    return Platform(pb.os, pb.architecture, pb.variant, pb.os_version, tuple(pb.os_features))


# A task that has not exited reports Go's zero time, 0001-01-01, as its exit time.
_GO_ZERO_YEAR = 1
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _exit_time(value: datetime | None) -> datetime | None:
    if value is None or value.year == _GO_ZERO_YEAR:
        return None
    return to_utc(value)


def task_state_from_pb(status: int) -> TaskState:
    """containerd's task status enum as a TaskState (UNKNOWN for values it lacks)."""
    return _TASK_STATES.get(int(status), TaskState.UNKNOWN)


_TASK_STATES = {
    0: TaskState.UNKNOWN,
    1: TaskState.CREATED,
    2: TaskState.RUNNING,
    3: TaskState.STOPPED,
    4: TaskState.PAUSED,
    5: TaskState.PAUSING,
}


def task_info_from_pb(pb: task_types_pb.Process) -> TaskInfo:
    """The public view of a task or exec process."""
    state = task_state_from_pb(pb.status)
    stopped = state is TaskState.STOPPED
    return TaskInfo(
        container_id=pb.container_id,
        exec_id="" if pb.id == pb.container_id else pb.id,
        pid=pb.pid,
        state=state,
        stdin=pb.stdin,
        stdout=pb.stdout,
        stderr=pb.stderr,
        terminal=pb.terminal,
        returncode=pb.exit_status if stopped else None,
        exited_at=_exit_time(pb.exited_at) if stopped else None,
    )


def process_status_from_pb(pb: task_types_pb.Process) -> ProcessStatus:
    """A task's or process's status."""
    info = task_info_from_pb(pb)
    return ProcessStatus(info.state, info.pid, info.returncode, info.exited_at)


def exit_status(code: int, exited_at: datetime | None) -> ExitStatus:
    """An observed exit, its time converted."""
    return ExitStatus(code, _exit_time(exited_at))
