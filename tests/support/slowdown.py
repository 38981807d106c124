"""How much slower than this machine the tests' machine is: ``SANDBOXCLIENT_TEST_SLOWDOWN``
(a factor, 1 unless set). The cgroup v2 pass sets it, its VM emulating every instruction;
the fixtures' start and call bounds grow by it, the tests' own figures do not."""

from __future__ import annotations

import os


def slowdown() -> float:
    """The factor from the environment (at least 1)."""
    raw = os.environ.get("SANDBOXCLIENT_TEST_SLOWDOWN", "1")
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"SANDBOXCLIENT_TEST_SLOWDOWN={raw!r} is not a number") from None
    return max(1.0, factor)


def slowed(seconds: float) -> float:
    """``seconds`` on the tests' machine."""
    return seconds * slowdown()
