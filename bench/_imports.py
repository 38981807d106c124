"""``import sandboxclient`` in a fresh interpreter, next to other imports in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys

__all__ = ("import_seconds", "import_times")

_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str) -> float:
    """Wall time of ``import module`` in a new interpreter (its start-up not counted)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def import_times(modules: list[str], rounds: int = 7) -> dict[str, list[float]]:
    """Each module's import time, ``rounds`` times, alternating modules within each round."""
    times: dict[str, list[float]] = {m: [] for m in modules}
    for module in modules:
        import_seconds(module)  # warm the file cache and the bytecode
    for _ in range(rounds):
        for module in modules:
            times[module].append(import_seconds(module))
    return times


def median(values: list[float]) -> float:
    """The median, for the report."""
    return statistics.median(values)
