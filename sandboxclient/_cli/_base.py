"""What every ``sandboxctl`` command shares: names, exit codes, the outcome, argument types."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

__all__ = (
    "ADDRESS_ENV",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RUNTIME",
    "DEFAULT_SANDBOXER",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "NAMESPACE_ENV",
    "PROG",
    "SANDBOXER_ENV",
    "LabelEdit",
    "Outcome",
    "grace_seconds",
    "parse_label",
    "parse_label_edit",
    "positive_seconds",
)

PROG = "sandboxctl"
ADDRESS_ENV = "CONTAINERD_ADDRESS"
NAMESPACE_ENV = "CONTAINERD_NAMESPACE"
SANDBOXER_ENV = "CONTAINERD_SANDBOXER"
DEFAULT_NAMESPACE = "default"
DEFAULT_SANDBOXER = "shim"
DEFAULT_RUNTIME = "io.containerd.runc.v2"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LabelEdit = tuple[str, str | None]
"""One change to a label map: ``(key, value)`` sets it, ``(key, None)`` removes it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command produced.

    ``data`` is printed as one JSON document under ``--json``, ``text`` otherwise; each of
    ``errors`` becomes a ``sandboxctl: error:`` line on stderr; ``code`` is the exit status.
    """

    data: Any
    text: str
    code: int = 0
    errors: tuple[str, ...] = field(default=())


def parse_label(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair; the value may be empty, the key may not."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: expected KEY=VALUE")
    return key, value


def parse_label_edit(text: str) -> LabelEdit:
    """``KEY=VALUE`` (set) or ``KEY-`` (remove) as a :data:`LabelEdit`."""
    if "=" in text:
        return parse_label(text)
    if text.endswith("-") and len(text) > 1:
        return text[:-1], None
    raise argparse.ArgumentTypeError(
        f"invalid label edit {text!r}: expected KEY=VALUE to set or KEY- to remove"
    )


def positive_seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def grace_seconds(text: str) -> float:
    """Zero or more seconds, finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, got {text!r}")
    return value
