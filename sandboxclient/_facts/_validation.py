"""containerd's identifier and label rules, shared by the client and the stand-in."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._golang import go_quote

IDENTIFIER_MAX_LENGTH = 76
LABEL_MAX_SIZE = 4096
_IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
IDENTIFIER_PATTERN = _IDENTIFIER_RE.pattern


def identifier_problem(value: str) -> str | None:
    """Say what is wrong with ``value`` as a containerd identifier, or None if it is valid.

    The wording follows containerd's ``identifiers.Validate``.
    """
    if not value:
        return "identifier must not be empty"
    if len(value.encode()) > IDENTIFIER_MAX_LENGTH:  # bytes, as Go's len() counts
        return (
            f"identifier {go_quote(value)} greater than maximum length "
            f"({IDENTIFIER_MAX_LENGTH} characters)"
        )
    # fullmatch: Python's "$" would also match before a final newline, Go's does not.
    if not _IDENTIFIER_RE.fullmatch(value):
        return f"identifier {go_quote(value)} must match {IDENTIFIER_PATTERN}"
    return None


def label_problem(key: str, value: str) -> str | None:
    """Say what is wrong with one label, or None; follows containerd's ``labels.Validate``.

    An empty key is refused too: containerd's store answers it with an untyped error.
    """
    if not key:
        return "label key must not be empty"
    return label_size_problem(key, value)


def label_size_problem(key: str, value: str) -> str | None:
    """The one rule containerd's ``labels.Validate`` has: key plus value at most 4096 bytes."""
    size = len(key.encode()) + len(value.encode())
    if size > LABEL_MAX_SIZE:
        return (
            f"label key and value length ({size} bytes) greater than maximum size "
            f"({LABEL_MAX_SIZE} bytes)"
        )
    return None


def labels_problem(labels: Mapping[str, str]) -> str | None:
    """The first problem among ``labels``, or None."""
    for key, value in labels.items():
        problem = label_problem(key, value)
        if problem is not None:
            return problem
    return None


def checked_identifier(value: object, what: str) -> str:
    """``value`` if it is a valid identifier; TypeError or ValueError naming ``what``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    problem = identifier_problem(value)
    if problem is not None:
        raise ValueError(f"invalid {what}: {problem}")
    return value
