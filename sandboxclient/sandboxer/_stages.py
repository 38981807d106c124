"""Where an isolated sandbox's Start, Stop and Shutdown spend their time, stage by stage, for
the cold-start benchmark (``bench/_coldstart.py``).

Such a call runs under :func:`timing`; the code on its path calls :func:`mark` at the end of
each stage, which charges the time since the previous mark (or the call's beginning) to that
stage. Outside a timed call, :func:`mark` does nothing. Only when the environment names a
file in :data:`STAGES_ENV` is a call timed at all: each one then appends a JSON line
``{"sandbox": ID, "call": "start", "total": SECONDS, "stages": {NAME: SECONDS, ...}}`` to
that file (``call`` is ``start``, ``stop`` or ``shutdown``). Without it a call pays one
dictionary lookup.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Final

__all__ = ("STAGES_ENV", "mark", "timing")

STAGES_ENV: Final = "SANDBOXCLIENT_SANDBOXER_STAGES"
"""The environment variable naming the file a timed Start appends its stages to."""

_log = logging.getLogger("sandboxclient.sandboxer")


class _Stopwatch:
    def __init__(self) -> None:
        self.began = self.last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.last
        self.last = now


_current: contextvars.ContextVar[_Stopwatch | None] = contextvars.ContextVar(
    "sandboxclient_sandboxer_stages", default=None
)


def mark(stage: str) -> None:
    """Charge the time since the last mark of the call under way to ``stage``."""
    watch = _current.get()
    if watch is not None:
        watch.mark(stage)


@contextlib.contextmanager
def timing(sandbox_id: str, call: str = "start") -> Iterator[None]:
    """Time the ``call`` (``start``, ``stop``, ``shutdown``) of ``sandbox_id`` run inside, if
    :data:`STAGES_ENV` names a file; what no mark claimed goes to ``rest``."""
    path = os.environ.get(STAGES_ENV)
    if not path:
        yield
        return
    watch = _Stopwatch()
    token = _current.set(watch)
    try:
        yield
    finally:
        watch.mark("rest (records, watch)" if call == "start" else "rest (records)")
        _current.reset(token)
        took = time.perf_counter() - watch.began
        line = {"sandbox": sandbox_id, "call": call, "total": took, "stages": watch.stages}
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as exc:
            _log.warning("cannot write the %s's stages to %s: %s", call, path, exc)
