"""A Metrics answer to the typed :class:`~sandboxclient.SandboxMetrics`, whatever its payload.

The payloads decoded (``SandboxMetrics.source`` names the one a sample came from):

- ``types.sandboxclient.io/sandbox-metrics``, the JSON this project's isolating sandboxer
  answers a sandbox's Metrics with (its task's cgroup statistics, decoded);
- ``io.containerd.cgroups.v1.Metrics`` and ``io.containerd.cgroups.v2.Metrics``, what a runc
  task's Metrics carries on cgroup v1 and v2 hosts;
- ``types.sandboxclient.io/process-metrics``, the process sandboxer's JSON (one process read
  from /proc: no limits, no task count).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, Final

from .._facts._clock import to_utc
from .._facts._golang import go_quote
from .._sandbox_metrics import (
    CGROUPS_V1_METRICS_TYPE_URL,
    CGROUPS_V2_METRICS_TYPE_URL,
    PROCESS_METRICS_TYPE_URL,
    SANDBOX_METRICS_TYPE_URL,
    SandboxMetrics,
)
from ..errors import InternalError
from . import _pb
from ._pb import MetricPb

__all__ = ("decode_metrics", "metrics_from_pb")

# The cgroup modules are loaded on first decode (see _pb), not at import.

# Past this a limit is the kernel's "no limit" (v1 shows PAGE_COUNTER_MAX pages in bytes,
# v2 and the protobuf mappings the largest uint64).
_UNLIMITED: Final = 1 << 62
_NS_PER_SECOND: Final = 1_000_000_000
_US_PER_SECOND: Final = 1_000_000


def metrics_from_pb(pb: MetricPb | None, whose: str) -> SandboxMetrics:
    """The sample of a Metrics answer, decoded; ``whose`` names the sandbox or task for the
    InternalError a sample that carries nothing, or nothing decodable, is."""
    try:
        if pb is None or pb.data is None:
            raise ValueError("the sample carries no data")
        sample = decode_metrics(pb.data.type_url, pb.data.value)
    except ValueError as exc:
        raise InternalError(f"metrics of {whose}: {exc}") from exc
    return dataclasses.replace(sample, timestamp=to_utc(pb.timestamp))


def decode_metrics(type_url: str, value: bytes) -> SandboxMetrics:
    """One sample's payload decoded; ValueError for another type or one that does not decode."""
    decoder = _DECODERS.get(type_url)
    if decoder is None:
        known = ", ".join(sorted(_DECODERS))
        raise ValueError(f"metrics of type {go_quote(type_url)} are none of {known}")
    try:
        return decoder(value)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"metrics of type {go_quote(type_url)} do not decode: {exc}") from None


def _limit(value: int) -> int | None:
    return None if value <= 0 or value >= _UNLIMITED else value


def _optional_int(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer or null")
    return value


def _optional_number(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} must be a number or null")
    return float(value)


def _from_json(value: bytes) -> SandboxMetrics:
    raw = json.loads(value)
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    usage = raw["memory_usage_bytes"]
    cpu = raw.get("cpu_usage_seconds", 0.0)
    if isinstance(usage, bool) or not isinstance(usage, int):
        raise TypeError("memory_usage_bytes must be an integer")
    if isinstance(cpu, bool) or not isinstance(cpu, int | float):
        raise TypeError("cpu_usage_seconds must be a number")
    return SandboxMetrics(
        memory_usage_bytes=usage,
        memory_limit_bytes=_optional_int(raw, "memory_limit_bytes"),
        memory_max_usage_bytes=_optional_int(raw, "memory_max_usage_bytes"),
        oom_kills=_optional_int(raw, "oom_kills"),
        cpu_usage_seconds=float(cpu),
        pids=_optional_int(raw, "pids"),
        pids_limit=_optional_int(raw, "pids_limit"),
        cpu_limit=_optional_number(raw, "cpu_limit"),
        source=str(raw.get("source") or SANDBOX_METRICS_TYPE_URL),
    )


def _from_v1(value: bytes) -> SandboxMetrics:
    metrics = _pb.cgroups_v1_pb.Metrics.parse(value)
    memory = metrics.memory
    usage = memory.usage if memory is not None else None
    oom = metrics.memory_oom_control
    cpu = metrics.cpu.usage if metrics.cpu is not None else None
    pids = metrics.pids
    return SandboxMetrics(
        memory_usage_bytes=usage.usage if usage is not None else 0,
        memory_limit_bytes=_limit(usage.limit) if usage is not None else None,
        memory_max_usage_bytes=usage.max if usage is not None else None,
        oom_kills=oom.oom_kill if oom is not None else None,
        cpu_usage_seconds=(cpu.total / _NS_PER_SECOND) if cpu is not None else 0.0,
        pids=pids.current if pids is not None else None,
        pids_limit=_limit(pids.limit) if pids is not None else None,
        source=CGROUPS_V1_METRICS_TYPE_URL,
    )


def _from_v2(value: bytes) -> SandboxMetrics:
    metrics = _pb.cgroups_v2_pb.Metrics.parse(value)
    memory = metrics.memory
    events = metrics.memory_events
    pids = metrics.pids
    return SandboxMetrics(
        memory_usage_bytes=memory.usage if memory is not None else 0,
        memory_limit_bytes=_limit(memory.usage_limit) if memory is not None else None,
        memory_max_usage_bytes=(memory.max_usage or None) if memory is not None else None,
        oom_kills=events.oom_kill if events is not None else None,
        cpu_usage_seconds=(
            metrics.cpu.usage_usec / _US_PER_SECOND if metrics.cpu is not None else 0.0
        ),
        pids=pids.current if pids is not None else None,
        pids_limit=_limit(pids.limit) if pids is not None else None,
        source=CGROUPS_V2_METRICS_TYPE_URL,
    )


def _from_process(value: bytes) -> SandboxMetrics:
    raw = json.loads(value)
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    return SandboxMetrics(
        memory_usage_bytes=int(raw["rss_bytes"]),
        cpu_usage_seconds=float(raw["cpu_seconds"]),
        source=PROCESS_METRICS_TYPE_URL,
    )


_DECODERS: Final[dict[str, Callable[[bytes], SandboxMetrics]]] = {
    SANDBOX_METRICS_TYPE_URL: _from_json,
    CGROUPS_V1_METRICS_TYPE_URL: _from_v1,
    CGROUPS_V2_METRICS_TYPE_URL: _from_v2,
    PROCESS_METRICS_TYPE_URL: _from_process,
}
