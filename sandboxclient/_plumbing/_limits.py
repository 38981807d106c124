"""``new_sandbox``'s typed limits, ``cpu=``, ``memory=`` and ``pids=``, as a user of Modal
or e2b expects them: checked at once, then written into the spec's ``linux.resources``.

``cpu`` is CPUs' worth of time (``0.5``, ``2``): a CFS quota of ``cpu`` x 100 ms per 100 ms
period, as ``oci.with_cpus``. ``memory`` is bytes, an int or a size such as ``"512Mi"``,
``"1Gi"`` or ``"1.5G"`` (binary ``Ki``..``Ti``, decimal ``k``/``K``..``T``), as Kubernetes
writes quantities and the sandboxer's flags take them (one parser, :mod:`.._facts._sizes`); a
sandboxer that sets no swap limit of its own (this project's isolating sandboxer) gives it
no swap on top. ``pids`` is the most processes and threads at once.

A sandbox made with none of them gets its sandboxer's defaults; a spec given as well keeps
what it says, and a keyword that contradicts it is refused rather than chosen between.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Final

from .. import oci
from .._facts._sizes import checked_size

__all__ = ("checked_memory", "with_limits")

_I64_MAX: Final = 2**63 - 1


def checked_memory(memory: object) -> int:
    """Bytes from ``memory=``: a positive int, or a size string (see :mod:`.._facts._sizes`)."""
    positive = "a positive number of bytes"
    return checked_size(memory, "memory=", example="512Mi", least=1, at_least=positive)


def _checked_cpu(cpu: object) -> float:
    if isinstance(cpu, bool) or not isinstance(cpu, int | float):
        raise TypeError(f"cpu= must be a number of CPUs, got {type(cpu).__name__}")
    # The kernel's smallest CFS quota is 1 ms per 100 ms period.
    if not (math.isfinite(cpu) and 0.01 <= cpu <= 1_000_000):
        raise ValueError(f"cpu= must be a number of CPUs of at least 0.01, got {cpu!r}")
    return float(cpu)


def _checked_pids(pids: object) -> int:
    if isinstance(pids, bool) or not isinstance(pids, int):
        raise TypeError(f"pids= must be an int, got {type(pids).__name__}")
    if not 0 < pids <= _I64_MAX:
        raise ValueError(f"pids= must be a positive number of processes, got {pids}")
    return pids


def with_limits(
    spec: Mapping[str, Any] | None,
    *,
    cpu: float | None,
    memory: int | str | None,
    pids: int | None,
) -> Mapping[str, Any] | None:
    """``spec`` with the limits given written into its ``linux.resources`` (a new dict, or
    ``spec`` itself when none is given); with no spec, a spec of those resources alone,
    which a sandboxer merges over its defaults.

    Raises TypeError or ValueError naming the keyword; ValueError when the spec sets the
    same limit to another value.
    """
    wanted: list[tuple[str, tuple[str, str], Any, oci.SpecOpt]] = []
    if cpu is not None:
        cores = _checked_cpu(cpu)
        opt = oci.with_cpus(cores)
        probe: dict[str, Any] = {}
        opt(probe)
        quota = probe["linux"]["resources"]["cpu"]["quota"]
        wanted.append(("cpu", ("cpu", "quota"), quota, opt))
    if memory is not None:
        size = checked_memory(memory)
        wanted.append(("memory", ("memory", "limit"), size, oci.with_memory_limit(size)))
    if pids is not None:
        count = _checked_pids(pids)
        wanted.append(("pids", ("pids", "limit"), count, oci.with_pids_limit(count)))
    if not wanted:
        return spec
    result: dict[str, Any] = copy.deepcopy(dict(spec)) if spec is not None else {}
    resources = ((result.get("linux") or {}).get("resources")) or {}
    for keyword, (section, key), value, opt in wanted:
        given = (resources.get(section) or {}).get(key) if isinstance(resources, dict) else None
        if given is not None and given != value:
            raise ValueError(
                f"{keyword}= asks for linux.resources.{section}.{key} {value}, but the spec "
                f"sets {given!r}: give one of them"
            )
        opt(result)
    return result
