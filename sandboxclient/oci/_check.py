"""Argument checks shared by the options, and safe access to a spec's sections.

Every check raises with the option's name first, so a failure in a long list of options says
which one was wrong. Values are shown shortened, and never for what may hold a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

SpecOpt = Callable[[dict[str, Any]], None]
"""A callable that edits an OCI runtime spec in place (every ``with_*`` here makes one)."""

__all__ = (
    "I64_MAX",
    "MAX_ID",
    "U32_MAX",
    "U64_MAX",
    "SpecOpt",
    "check_abs_path",
    "check_bool",
    "check_int",
    "check_json",
    "check_mapping",
    "check_str",
    "check_strings",
    "list_at",
    "section",
    "shown",
)

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1
MAX_ID = 2**31 - 1
"""runc refuses uids and gids above MaxInt32, and containerd follows it."""

_SHOWN_MAX = 48


def shown(value: object) -> str:
    """``repr(value)``, cut short so a long (or pasted) value does not flood the message."""
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def _type_name(value: object) -> str:
    return type(value).__name__


def check_str(opt: str, what: str, value: object, *, empty: bool = False) -> str:
    """``value`` if it is a str without NUL (and, unless ``empty``, not empty)."""
    if not isinstance(value, str):
        raise TypeError(f"{opt}: {what} must be a str, got {_type_name(value)}")
    if not value and not empty:
        raise ValueError(f"{opt}: {what} must not be empty")
    # A NUL ends the string at the C boundary: the runtime would use a different value.
    if "\x00" in value:
        raise ValueError(f"{opt}: {what} must not contain a NUL byte")
    return value


def check_abs_path(opt: str, what: str, value: object) -> str:
    """``value`` if it is an absolute path without NUL."""
    path = check_str(opt, what, value)
    if not path.startswith("/"):
        raise ValueError(f"{opt}: {what} must be an absolute path, got {shown(path)}")
    return path


def check_int(opt: str, what: str, value: object, low: int, high: int, expect: str) -> int:
    """``value`` if it is an int (a bool is refused) with ``low <= value <= high``.

    ``expect`` completes "{what} must be ..." when the value is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{opt}: {what} must be an int, got {_type_name(value)}")
    if not low <= value <= high:
        raise ValueError(f"{opt}: {what} must be {expect}, got {value}")
    return value


def check_bool(opt: str, what: str, value: object) -> bool:
    """``value`` if it is a bool (1 and 0 are refused: they usually mean a mixed-up argument)."""
    if not isinstance(value, bool):
        raise TypeError(f"{opt}: {what} must be a bool, got {_type_name(value)}")
    return value


def check_strings(opt: str, what: str, values: object, of: str = "str") -> list[Any]:
    """A list of the iterable's items; a lone str or bytes is refused, not split into letters.

    The items are not checked here: ``of`` only names them in the message.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{opt}: {what} must be a list of {of}, got {_type_name(values)}")
    return list(values)


def check_json(opt: str, what: str, value: object) -> Any:
    """A deep copy of ``value`` made of JSON types only (so later edits by the caller do not
    leak into specs, and the spec always serialises)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{opt}: {what} is not JSON-serialisable: {exc}") from exc


def section(opt: str, parent: dict[str, Any], key: str) -> dict[str, Any]:
    """``parent[key]``, made an empty object when missing or null."""
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    elif not isinstance(value, dict):
        raise TypeError(f"{opt}: the spec's {key!r} must be a JSON object, got {_type_name(value)}")
    return value


def list_at(opt: str, parent: dict[str, Any], key: str) -> list[Any]:
    """``parent[key]``, made an empty list when missing or null."""
    value = parent.get(key)
    if value is None:
        value = parent[key] = []
    elif not isinstance(value, list):
        raise TypeError(f"{opt}: the spec's {key!r} must be a JSON array, got {_type_name(value)}")
    return value


def check_mapping(opt: str, what: str, value: object) -> Mapping[Any, Any]:
    """``value`` if it is a mapping."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{opt}: {what} must be a mapping, got {_type_name(value)}")
    return value
