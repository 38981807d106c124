"""A sandbox's resource usage as a typed record, whatever its controller reports it in.

:class:`SandboxMetrics` is what ``await sandbox.metrics()`` gives: the memory in use and its
limit, OOM kills, CPU time and limit, and the number of tasks and its limit. It decodes

- :data:`SANDBOX_METRICS_TYPE_URL`, the JSON this project's isolating sandboxer answers
  Metrics with (its task's cgroup statistics, decoded);
- ``io.containerd.cgroups.v1.Metrics`` and ``io.containerd.cgroups.v2.Metrics``, what a
  runc task's ``Task.metrics()`` carries on cgroup v1 and v2 hosts;
- ``types.sandboxclient.io/process-metrics``, the process sandboxer's JSON (one process
  read from /proc: no limits, no task count).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Final

from ._models import AnyValue
from ._wire import _pb
from ._wire._errdefs import go_quote

__all__ = (
    "CGROUPS_V1_METRICS_TYPE_URL",
    "CGROUPS_V2_METRICS_TYPE_URL",
    "PROCESS_METRICS_TYPE_URL",
    "SANDBOX_METRICS_TYPE_URL",
    "SandboxMetrics",
)

SANDBOX_METRICS_TYPE_URL: Final = "types.sandboxclient.io/sandbox-metrics"
"""The type URL of a :class:`SandboxMetrics` as JSON (see :meth:`SandboxMetrics.to_any`)."""
CGROUPS_V1_METRICS_TYPE_URL: Final = "io.containerd.cgroups.v1.Metrics"
"""What a runc task's metrics are on a cgroup v1 host."""
CGROUPS_V2_METRICS_TYPE_URL: Final = "io.containerd.cgroups.v2.Metrics"
"""What a runc task's metrics are on a cgroup v2 host."""
PROCESS_METRICS_TYPE_URL: Final = "types.sandboxclient.io/process-metrics"
"""The process sandboxer's metrics: one process's CPU time and memory, as JSON."""

# The cgroup modules are loaded on first decode (see _pb), not at import.

# Past this a limit is the kernel's "no limit" (v1 shows PAGE_COUNTER_MAX pages in bytes,
# v2 and the protobuf mappings the largest uint64).
_UNLIMITED: Final = 1 << 62
_NS_PER_SECOND: Final = 1_000_000_000
_US_PER_SECOND: Final = 1_000_000


def _limit(value: int) -> int | None:
    return None if value <= 0 or value >= _UNLIMITED else value


@dataclass(frozen=True, slots=True)
class SandboxMetrics:
    """One sample of a sandbox's resource usage.

    A field is None when the source does not tell it (a limit: when there is none).
    ``source`` is the type URL the sample was decoded from.
    """

    memory_usage_bytes: int
    memory_limit_bytes: int | None = None
    memory_max_usage_bytes: int | None = None
    oom_kills: int | None = None
    """How many processes the kernel's OOM killer killed for the memory limit."""
    cpu_usage_seconds: float = 0.0
    pids: int | None = None
    """Tasks (processes and threads) in the sandbox's cgroup."""
    pids_limit: int | None = None
    cpu_limit: float | None = None
    """CPUs' worth of time the sandbox may use (its CFS quota over the period); None when
    unlimited or not told (a task's cgroup statistics do not carry it: this project's
    isolating sandboxer adds it from the sandbox's spec)."""
    source: str = SANDBOX_METRICS_TYPE_URL

    @classmethod
    def decode(cls, data: AnyValue) -> SandboxMetrics:
        """Decode the payload of a metrics sample (a ``Task.metrics()`` sample's ``data``, say;
        see the module's docstring for the types).

        Raises ValueError for another type, or a payload that does not decode.
        """
        decoder = _DECODERS.get(data.type_url)
        if decoder is None:
            known = ", ".join(sorted(_DECODERS))
            raise ValueError(f"metrics of type {go_quote(data.type_url)} are none of {known}")
        try:
            return decoder(data.value)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f"metrics of type {go_quote(data.type_url)} do not decode: {exc}"
            ) from None

    def to_any(self) -> AnyValue:
        """This sample as :data:`SANDBOX_METRICS_TYPE_URL` JSON (``source`` is kept in it)."""
        return AnyValue(SANDBOX_METRICS_TYPE_URL, json.dumps(asdict(self)).encode())


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


_DECODERS = {
    SANDBOX_METRICS_TYPE_URL: _from_json,
    CGROUPS_V1_METRICS_TYPE_URL: _from_v1,
    CGROUPS_V2_METRICS_TYPE_URL: _from_v2,
    PROCESS_METRICS_TYPE_URL: _from_process,
}
