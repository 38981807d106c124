"""Time limits of a sandbox: ``lifetime=`` and ``idle_timeout=``, as labels of its record.

A sandbox's time limits travel as two labels of its record in containerd's sandbox store,
so that every client sees them and the sandboxer that runs it gets them with Create (and
with the Update that :meth:`Sandbox.set_lifetime` sends):

- :data:`DEADLINE_LABEL`: the moment (RFC 3339, UTC) past which the sandbox is ended;
- :data:`IDLE_TIMEOUT_LABEL`: seconds without an exec (files are exec too) after which it is.

The sandboxer enforces them, not the client (this project's isolating sandboxer does, see
``docs/sandboxer.md``): past either, the sandbox is killed and shut down with everything it
owns, whether or not a client is connected. It then exits with :data:`LIFETIME_EXIT_STATUS`
or :data:`IDLE_EXIT_STATUS`, which its Wait answers and containerd's ``/sandboxes/exit``
event carries. The labels are what was asked; the controller's Status tells what is in force
(:attr:`SandboxStatus.deadline`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from ..errors import FailedPreconditionError
from ._golang import go_quote

__all__ = (
    "DEADLINE_LABEL",
    "IDLE_EXIT_STATUS",
    "IDLE_TIMEOUT_LABEL",
    "LIFETIME_EXIT_STATUS",
    "MAX_TIME_LIMIT",
    "checked_seconds",
    "deadline_text",
    "enforced_limits",
    "info_time",
    "lifetime_labels",
    "parse_deadline",
    "parse_idle_timeout",
)

DEADLINE_LABEL: Final = "io.sandboxclient.deadline"
"""The label holding a sandbox's deadline: RFC 3339 in UTC, ``2026-01-02T03:04:05.678901Z``."""

IDLE_TIMEOUT_LABEL: Final = "io.sandboxclient.idle-timeout"
"""The label holding a sandbox's idle timeout, in seconds (a decimal number)."""

LIFETIME_EXIT_STATUS: Final = 124
"""The exit status of a sandbox ended at its deadline (as GNU ``timeout`` exits 124)."""

IDLE_EXIT_STATUS: Final = 125
"""The exit status of a sandbox ended for having been idle for its ``idle_timeout``."""

MAX_TIME_LIMIT: Final = 366 * 24 * 3600.0
"""The longest ``lifetime`` or ``idle_timeout`` taken, in seconds (a year and a day)."""


def checked_seconds(value: object, field: str) -> float:
    """``value`` as seconds for ``field``: TypeError unless an int or float (a bool is
    not), ValueError, naming ``field``, unless finite, > 0 and at most
    :data:`MAX_TIME_LIMIT`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{field} must be a finite number of seconds > 0, got {value!r}")
    if seconds > MAX_TIME_LIMIT:
        raise ValueError(f"{field} must be at most {MAX_TIME_LIMIT:g} seconds, got {value!r}")
    return seconds


def deadline_text(when: datetime) -> str:
    """``when`` as :data:`DEADLINE_LABEL` holds it (RFC 3339 in UTC, microseconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_deadline(text: str) -> datetime:
    """The tz-aware deadline a :data:`DEADLINE_LABEL` value names; ValueError, naming
    the label, when it names none (a time without its zone included)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ValueError(
            f"label {DEADLINE_LABEL} must be an RFC 3339 time with its zone, got {text!r}"
        )
    return when.astimezone(UTC)


def parse_idle_timeout(text: str) -> float:
    """The seconds an :data:`IDLE_TIMEOUT_LABEL` value names; ValueError, naming the label,
    for anything :func:`checked_seconds` would refuse."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    try:
        return checked_seconds(value, f"label {IDLE_TIMEOUT_LABEL}")
    except ValueError:
        raise ValueError(
            f"label {IDLE_TIMEOUT_LABEL} must be a number of seconds > 0 and at most "
            f"{MAX_TIME_LIMIT:g}, got {text!r}"
        ) from None


def lifetime_labels(
    lifetime: object,
    idle_timeout: object,
    *,
    now: datetime,
    labels: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The labels that ask for ``lifetime`` (seconds from ``now``) and ``idle_timeout``
    (None: not asked), checked; ValueError when ``labels`` sets one of them already."""
    found: dict[str, str] = {}
    if lifetime is not None:
        seconds = checked_seconds(lifetime, "lifetime")
        found[DEADLINE_LABEL] = deadline_text(now + timedelta(seconds=seconds))
    if idle_timeout is not None:
        found[IDLE_TIMEOUT_LABEL] = repr(checked_seconds(idle_timeout, "idle_timeout"))
    for key in found:
        if labels is not None and key in labels:
            what = "lifetime" if key == DEADLINE_LABEL else "idle_timeout"
            raise ValueError(f"{what}= and the label {key} were both given: give one of them")
    return found


def info_time(info: Mapping[str, str], key: str) -> datetime | None:
    """The tz-aware time a Status ``info`` entry holds, or None (absent, or not a time)."""
    text = info.get(key)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None


def enforced_limits(
    sandbox_id: str, info: Mapping[str, str], limits: Mapping[str, str], sandboxer: str
) -> None:
    """FailedPreconditionError unless a Status ``info`` shows the ``limits`` asked for in
    force: a sandboxer that ignores the labels would let the sandbox outlive them."""
    shown = {DEADLINE_LABEL: "deadline", IDLE_TIMEOUT_LABEL: "idle_timeout"}
    missing = [shown[key] for key in limits if shown[key] not in info]
    if missing:
        raise FailedPreconditionError(
            f"the {go_quote(sandboxer)} sandboxer does not enforce time limits: its Status of "
            f"sandbox {go_quote(sandbox_id)} shows no {' or '.join(missing)} (lifetime= and "
            "idle_timeout= need a sandboxer that does, such as this project's isolating one)"
        )
