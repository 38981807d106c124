"""User-namespace id mappings, shared by ``with_user_namespace`` and idmapped mounts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._check import U32_MAX, check_int, check_strings

__all__ = ("IDMapping", "IDMappingLike", "id_mappings")


@dataclass(frozen=True, slots=True)
class IDMapping:
    """``size`` ids from ``container_id`` in the container map to ``host_id`` up on the host
    (Go's ``specs.LinuxIDMapping``).

    Checked when made: ids and size are ints in 0..2**32-1, size at least 1, and neither
    range runs past 2**32.
    """

    container_id: int
    host_id: int
    size: int

    def __post_init__(self) -> None:
        _check_mapping("IDMapping", "mapping", self.container_id, self.host_id, self.size)

    def to_dict(self) -> dict[str, int]:
        """The mapping as the spec's JSON object."""
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


IDMappingLike = IDMapping | tuple[int, int, int] | Mapping[str, int]
"""An :class:`IDMapping`, a ``(container_id, host_id, size)`` triple or the spec's JSON object
(``containerID``, ``hostID``, ``size``)."""


def _check_mapping(opt: str, what: str, container_id: int, host_id: int, size: int) -> None:
    check_int(opt, f"{what} container id", container_id, 0, U32_MAX, "between 0 and 2**32-1")
    check_int(opt, f"{what} host id", host_id, 0, U32_MAX, "between 0 and 2**32-1")
    check_int(opt, f"{what} size", size, 1, U32_MAX, "between 1 and 2**32-1")
    if max(container_id, host_id) + size > U32_MAX + 1:
        raise ValueError(f"{opt}: {what} runs past the last id (2**32-1)")


def id_mappings(opt: str, what: str, mappings: object, *, empty: bool) -> list[IDMapping]:
    """The mappings, each given as :data:`IDMappingLike`, as records; ``empty`` allows none."""
    result = []
    for index, item in enumerate(check_strings(opt, what, mappings, of="id mappings")):
        label = f"{what}[{index}]"
        if isinstance(item, IDMapping):
            result.append(item)
            continue
        fields: Iterable[Any]
        if isinstance(item, Mapping):
            keys = {"containerID", "hostID", "size"}
            if set(item) != keys:
                raise ValueError(f"{opt}: {label} must have exactly the keys {sorted(keys)}")
            fields = (item["containerID"], item["hostID"], item["size"])
        elif isinstance(item, tuple) and len(item) == 3:
            fields = item
        else:
            raise TypeError(
                f"{opt}: {label} must be an IDMapping, a (container_id, host_id, size) tuple "
                f"or a mapping, got {type(item).__name__}"
            )
        container_id, host_id, size = fields
        _check_mapping(opt, label, container_id, host_id, size)
        result.append(IDMapping(container_id, host_id, size))
    if not result and not empty:
        raise ValueError(f"{opt}: {what} must hold at least one mapping")
    return result
