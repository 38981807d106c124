"""One reading of a size in bytes, for the client's ``memory=`` and ``disk=`` and the
sandboxer's flags (``--default-memory``, ``--log-limit``), so that both layers take the same
words; and one check of a size given as an int or such words (:func:`checked_size`).

A size is a whole or decimal number with an optional unit, as Kubernetes writes quantities:
binary ``Ki``, ``Mi``, ``Gi``, ``Ti`` (powers of 1024) or decimal ``k``/``K``, ``M``, ``G``,
``T`` (powers of 1000): ``65536``, ``512Mi``, ``1.5Gi``, ``64k``. A fraction of a byte is
rounded up, as Kubernetes rounds. Zero, negative numbers, other units (``MiB``, ``MB``) and
anything else are refused.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

__all__ = ("MAX_SIZE", "SIZE_EXAMPLES", "checked_size", "parse_size")

SIZE_EXAMPLES: Final = "'512Mi', '1Gi', '1.5G' or '65536'"
"""How an error message shows what a size looks like."""

MAX_SIZE: Final = 2**63 - 1
"""The largest size taken: what an int64 holds, as the OCI spec's limits are."""

_SIZE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?")
_SCALE: Final = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def parse_size(text: str) -> int:
    """The positive number of bytes ``text`` says (see the module); ValueError naming the
    text otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as {SIZE_EXAMPLES}")
    size = math.ceil(Fraction(match.group(1)) * _SCALE[match.group(2) or ""])
    if size <= 0:
        raise ValueError(f"{text!r} is not a size such as {SIZE_EXAMPLES}: it must be positive")
    return size


def checked_size(value: object, what: str, *, example: str, least: int, at_least: str) -> int:
    """Bytes from ``value``, an int or a size string (see the module), from ``least`` to
    :data:`MAX_SIZE`. Errors name ``what`` (``"memory="``); a TypeError shows ``example``
    (``"512Mi"``), a ValueError for a size below ``least`` says it must be ``at_least``
    (``"a positive number of bytes"``)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            f"{what} must be an int (bytes) or a size such as {example!r}, "
            f"got {type(value).__name__}"
        )
    if isinstance(value, str):
        try:
            value = parse_size(value)
        except ValueError:
            raise ValueError(
                f"{what} must be a size such as {SIZE_EXAMPLES}, got {value!r}"
            ) from None
    if value < least:
        raise ValueError(f"{what} must be {at_least}, got {value}")
    if value > MAX_SIZE:
        raise ValueError(f"{what} must be at most {MAX_SIZE} bytes, got {value}")
    return value
