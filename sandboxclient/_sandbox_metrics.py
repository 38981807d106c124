"""A sandbox's or a task's resource usage as a typed record, whatever reported it.

:class:`SandboxMetrics` is what ``await sandbox.metrics()``, ``await task.metrics()`` and
``Controller.metrics()`` give: the memory in use and its limit, OOM kills, CPU time and its
limit, and the number of tasks and its limit. A sandbox's usage is its task's cgroup's, so
one record serves both. The payloads it is decoded from are listed in the wire layer
(``_wire/_metrics``); the type URLs here name them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Final

from ._models import AnyValue

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


@dataclass(frozen=True, slots=True)
class SandboxMetrics:
    """One sample of a sandbox's or a task's resource usage.

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
    timestamp: datetime | None = None
    """When the sample was taken, as the answer says (tz-aware UTC), if it says."""

    def to_any(self) -> AnyValue:
        """This sample as :data:`SANDBOX_METRICS_TYPE_URL` JSON (``source`` is kept in it; the
        timestamp travels beside it, in the Metric message)."""
        fields = asdict(self)
        del fields["timestamp"]
        return AnyValue(SANDBOX_METRICS_TYPE_URL, json.dumps(fields).encode())
