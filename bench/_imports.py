"""``import sandboxclient`` in a fresh interpreter, next to other imports in the same run."""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

__all__ = ("import_seconds", "import_times")

_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


_CACHE: list[str] = []


def _env(bytecode: bool) -> dict[str, str]:
    env = dict(os.environ)
    if bytecode:
        # As an installed package has it: compiled once, then read from the cache. The cache
        # goes to a folder of its own, so the work tree gets no __pycache__.
        if not _CACHE:
            _CACHE.append(tempfile.mkdtemp(prefix="sbx-pycache-"))
            atexit.register(shutil.rmtree, _CACHE[0], ignore_errors=True)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = _CACHE[0]
    else:
        # Installed packages keep their own caches; the work tree's modules get compiled.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def import_seconds(module: str, *, bytecode: bool = True) -> float:
    """Wall time of ``import module`` in a new interpreter (its start-up not counted).

    With ``bytecode`` the modules come from a bytecode cache (warm it with one call first);
    without it the work tree's modules are compiled from source, as where
    PYTHONDONTWRITEBYTECODE is set and no cache was ever written there.
    """
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        env=_env(bytecode),
    ).stdout
    return float(out.strip().splitlines()[-1])


def import_times(
    modules: list[str], rounds: int = 7, *, bytecode: bool = True
) -> dict[str, list[float]]:
    """Each module's import time, ``rounds`` times, alternating modules within each round."""
    times: dict[str, list[float]] = {m: [] for m in modules}
    for module in modules:
        import_seconds(module, bytecode=bytecode)  # warm the file cache and the bytecode
    for _ in range(rounds):
        for module in modules:
            times[module].append(import_seconds(module, bytecode=bytecode))
    return times


def median(values: list[float]) -> float:
    """The median, for the report."""
    return statistics.median(values)
