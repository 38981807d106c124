"""What Status and Metrics tell of a started sandbox beyond its task's state: the limits and
seccomp profile its container's spec holds it to (:class:`~._harden.InForce`), and what its
log kept and dropped.

The spec is read once, at Start or, for a sandbox a restarted sandboxer took back, from
containerd's record of the sandbox's container on first need.
"""

from __future__ import annotations

import dataclasses

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._models import AnyValue
from .._serve._refusals import failed_precondition
from .._wire._convert import any_to_pb
from .._wire._pb import MetricPb, sandbox_pb
from ._harden import InForce, in_force
from ._podlog import dropped_bytes
from ._pods import PodRuntime
from ._podstate import PodEntry

__all__ = ("in_force_of", "metrics_in_force", "started_info")


async def in_force_of(runtime: PodRuntime, entry: PodEntry) -> InForce | None:
    """What the sandbox's container's spec holds it to; None when it has no container."""
    if entry.in_force is None:
        spec = await runtime.spec(entry.record.namespace, entry.record.sandbox_id)
        if spec is not None:
            entry.in_force = in_force(spec)
    return entry.in_force


async def started_info(
    runtime: PodRuntime, entry: PodEntry, sandbox_dir: str, log_limit: int, *, verbose: bool
) -> dict[str, str]:
    """Status's ``info`` entries of a started sandbox: ``log_dropped_bytes``; with
    ``verbose``, also ``log_limit_bytes`` and :meth:`InForce.info`'s ``seccomp``,
    ``memory_limit_bytes``, ``pids_limit``, ``cpu_limit``, ``userns`` and ``userns_owner``."""
    info = {"log_dropped_bytes": str(dropped_bytes(sandbox_dir))}
    if verbose:
        info["log_limit_bytes"] = str(log_limit)
        found = await in_force_of(runtime, entry)
        if found is not None:
            info.update(found.info())
    return info


async def metrics_in_force(runtime: PodRuntime, entry: PodEntry) -> AnyValue | None:
    """The sandbox task's metrics with the CPU limit its spec sets (cgroup statistics carry
    none); on cgroup v2, what the sandbox's parent cgroup counts instead of its task's leaf
    (its process, execs and members: :meth:`._cgroup2.SandboxCgroups.usage`); None without
    a task."""
    record = entry.record
    metrics = await runtime.metrics(record.namespace, record.sandbox_id)
    if metrics is None:
        return None
    found = await in_force_of(runtime, entry)
    cpu_limit = found.cpu_limit if found is not None else None
    cgroups, where = runtime.cgroups, (record.namespace, record.sandbox_id)
    whole = cgroups.usage(*where) if cgroups is not None else None
    return dataclasses.replace(metrics, cpu_limit=cpu_limit, **(whole or {})).to_any()


async def metrics_answer(
    runtime: PodRuntime, entry: PodEntry
) -> sandbox_pb.ControllerMetricsResponse:
    """Metrics' answer for a sandbox: FAILED_PRECONDITION unless it runs."""
    data = await metrics_in_force(runtime, entry) if entry.running else None
    sandbox_id = entry.record.sandbox_id
    if data is None:
        raise failed_precondition(f"sandbox {go_quote(sandbox_id)} is not running")
    return sandbox_pb.ControllerMetricsResponse(
        metrics=MetricPb(timestamp=utcnow(), id=sandbox_id, data=any_to_pb(data))
    )
