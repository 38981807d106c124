"""Options for the container's cgroup resources: memory, CPU, pids and devices."""

from __future__ import annotations

import math
import re
from typing import Any, Final

from ._check import I64_MAX, SpecOpt, check_int, check_str, list_at, section, shown

__all__ = (
    "CFS_PERIOD",
    "with_cpu_cfs",
    "with_cpu_shares",
    "with_cpus",
    "with_cpuset_cpus",
    "with_cpuset_mems",
    "with_default_unix_devices",
    "with_memory_limit",
    "with_pids_limit",
)

CFS_PERIOD: Final = 100_000
"""The CFS period, in microseconds, that ``with_cpus`` uses unless told otherwise (as
``ctr run --cpus`` and the kernel's default)."""

# The kernel's bounds on cpu.cfs_period_us and the smallest cpu.cfs_quota_us, in microseconds.
_PERIOD_MIN: Final = 1_000
_PERIOD_MAX: Final = 1_000_000
_QUOTA_MIN: Final = 1_000
_LIST_RE: Final = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")

# Character devices every container needs: null, random, full, tty, zero, urandom, console,
# the pty slaves (any minor) and ptmx.
_UNIX_DEVICES: Final = ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (136, None), (5, 2))


def _resources(opt: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
    return section(opt, section(opt, section(opt, spec, "linux"), "resources"), name)


def with_memory_limit(limit: int) -> SpecOpt:
    """Limit the container's memory to ``limit`` bytes (Go's ``WithMemoryLimit``).

    Raises:
        TypeError: not an int.
        ValueError: not positive.
    """
    opt = "with_memory_limit"
    value = check_int(opt, "limit", limit, 1, I64_MAX, "a positive number of bytes")

    def apply(spec: dict[str, Any]) -> None:
        _resources(opt, spec, "memory")["limit"] = value

    return apply


def _set_cfs(opt: str, quota: int, period: int) -> SpecOpt:
    def apply(spec: dict[str, Any]) -> None:
        cpu = _resources(opt, spec, "cpu")
        cpu["quota"] = quota
        cpu["period"] = period

    return apply


def with_cpus(cpus: float, *, period: int = CFS_PERIOD) -> SpecOpt:
    """Let the container use ``cpus`` CPUs' worth of time, e.g. ``1.5``: a CFS quota of
    ``cpus * period`` per ``period`` microseconds (as ``ctr run --cpus``, through Go's
    ``WithCPUCFS``). For the CPUs it may run on, see :func:`with_cpuset_cpus`.

    Raises:
        TypeError: ``cpus`` is not a number (or is a bool).
        ValueError: not positive and finite, a period outside 1000..1000000, or a quota
            under the kernel's 1000 microseconds.
    """
    opt = "with_cpus"
    if isinstance(cpus, bool) or not isinstance(cpus, int | float):
        raise TypeError(f"{opt}: cpus must be a number, got {type(cpus).__name__}")
    if not (math.isfinite(cpus) and cpus > 0):
        raise ValueError(f"{opt}: cpus must be a positive number, got {cpus!r}")
    span = check_int(opt, "period", period, _PERIOD_MIN, _PERIOD_MAX, "between 1000 and 1000000")
    product = cpus * span
    if product > I64_MAX:
        raise ValueError(f"{opt}: cpus is too large for a CFS quota, got {cpus!r}")
    quota = round(product)
    if quota < _QUOTA_MIN:
        raise ValueError(
            f"{opt}: {cpus!r} CPUs give a quota of {quota}us, under the kernel's 1000us"
        )
    return _set_cfs(opt, quota, span)


def with_cpu_cfs(quota: int, period: int) -> SpecOpt:
    """Set the CFS ``quota`` (``-1``: unlimited) and ``period``, both in microseconds (Go's
    ``WithCPUCFS``)."""
    opt = "with_cpu_cfs"
    check_int(opt, "quota", quota, -1, I64_MAX, "-1 (unlimited) or at least 1000")
    if quota != -1 and quota < _QUOTA_MIN:
        raise ValueError(f"{opt}: quota must be -1 (unlimited) or at least 1000, got {quota}")
    span = check_int(opt, "period", period, _PERIOD_MIN, _PERIOD_MAX, "between 1000 and 1000000")
    return _set_cfs(opt, quota, span)


def with_cpu_shares(shares: int) -> SpecOpt:
    """Set the container's CPU weight relative to others (Go's ``WithCPUShares``), in the
    cgroup v1 range 2..262144 (1024 is the default weight)."""
    opt = "with_cpu_shares"
    value = check_int(opt, "shares", shares, 2, 262_144, "between 2 and 262144")

    def apply(spec: dict[str, Any]) -> None:
        _resources(opt, spec, "cpu")["shares"] = value

    return apply


def _cpu_list(opt: str, key: str, what: str, value: str) -> SpecOpt:
    text = check_str(opt, what, value)
    if not _LIST_RE.fullmatch(text):
        raise ValueError(f"{opt}: {what} must be a list such as '0-3,5', got {shown(text)}")

    def apply(spec: dict[str, Any]) -> None:
        _resources(opt, spec, "cpu")[key] = text

    return apply


def with_cpuset_cpus(cpus: str) -> SpecOpt:
    """Run the container only on CPUs ``cpus``, e.g. ``"0-3,5"`` (Go's ``WithCPUs``)."""
    return _cpu_list("with_cpuset_cpus", "cpus", "cpus", cpus)


def with_cpuset_mems(mems: str) -> SpecOpt:
    """Allocate the container's memory only on NUMA nodes ``mems``, e.g. ``"0"`` (Go's
    ``WithCPUsMems``)."""
    return _cpu_list("with_cpuset_mems", "mems", "mems", mems)


def with_pids_limit(limit: int) -> SpecOpt:
    """Allow at most ``limit`` processes and threads in the container (Go's
    ``WithPidsLimit``)."""
    opt = "with_pids_limit"
    value = check_int(opt, "limit", limit, 1, I64_MAX, "a positive number of processes")

    def apply(spec: dict[str, Any]) -> None:
        _resources(opt, spec, "pids")["limit"] = value

    return apply


def with_default_unix_devices() -> SpecOpt:
    """Allow the devices every process expects, such as ``/dev/null``, ``/dev/zero`` and
    terminals, in the device cgroup (Go's ``WithDefaultUnixDevices``)."""
    opt = "with_default_unix_devices"

    def apply(spec: dict[str, Any]) -> None:
        resources = section(opt, section(opt, spec, "linux"), "resources")
        devices = list_at(opt, resources, "devices")
        for major, minor in _UNIX_DEVICES:
            rule: dict[str, Any] = {"allow": True, "type": "c", "major": major}
            if minor is not None:
                rule["minor"] = minor
            rule["access"] = "rwm"
            devices.append(rule)

    return apply
