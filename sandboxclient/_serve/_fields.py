"""The fields of request messages, handled once for the stand-in and the sandboxer.

- :func:`required` and :func:`required_sandbox` refuse a request that leaves a message unset
  (containerd 2.1.9 dies on several of these: the servers refuse them instead);
- :class:`FieldPaths` applies containerd's field-path updates (``labels``, ``labels.<key>``,
  ``spec``...), as the sandbox store, the containers store and the sandboxer's Update do;
- :func:`copy_message` gives a deep copy that shares nothing with the original.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import betterproto2

from .._facts._golang import go_quote
from .._wire._pb import SandboxPb
from ._refusals import invalid_argument, must_be_set

__all__ = ("SANDBOX_FIELDS", "FieldPaths", "copy_message", "required", "required_sandbox")

_T = TypeVar("_T")
_M = TypeVar("_M", bound=betterproto2.Message)


def required(value: _T | None, name: str) -> _T:
    """``value``, or the INVALID_ARGUMENT refusal naming the unset field ``name``."""
    if value is None:
        raise must_be_set(name)
    return value


def required_sandbox(sandbox: SandboxPb | None) -> SandboxPb:
    """A request's ``sandbox``, refused when it or its ``runtime`` is unset.

    An empty but present runtime message is fine, as it is for containerd.
    """
    checked = required(sandbox, "sandbox")
    required(checked.runtime, "sandbox.Runtime")
    return checked


def copy_message(message: _M) -> _M:
    """A deep copy of ``message`` (through its wire form, so no nested object is shared)."""
    return type(message).parse(bytes(message))


@dataclass(frozen=True)
class FieldPaths:
    """The fields of one message type that a field-path update may name.

    ``fields`` maps each path to the message attribute it names; ``maps`` are the map
    fields among them whose entries can also be named one by one (``labels.<key>``);
    ``default`` is what an update without paths replaces.
    """

    fields: Mapping[str, str]
    maps: frozenset[str]
    default: tuple[str, ...]
    absent: Mapping[str, Callable[[], object]] = field(default_factory=dict)
    """Per map field, what ``<map>.<key>`` stores when the new message lacks the key (as
    containerd's stores store Go's zero value); without an entry the key is removed."""
    drop_empty: bool = False
    """Treat an empty string value as absent, and leave empty values out of a map copied
    whole (containerd's stores keep them until the write, which drops empty labels)."""

    def apply(self, current: _M, new: _M, paths: Sequence[str], subject: str) -> _M:
        """A copy of ``current`` with the fields ``paths`` name taken from ``new``.

        A path that names no updatable field is refused with INVALID_ARGUMENT
        ``cannot update "<path>" field on <subject>``; ``current`` is never changed.
        """
        updated = copy_message(current)
        for path in paths or self.default:
            head, dot, key = path.partition(".")
            if dot and head in self.maps:
                self._apply_entry(updated, new, head, key)
            elif path in self.fields:
                value = getattr(new, self.fields[path])
                if path in self.maps:
                    value = {k: v for k, v in value.items() if not self._empty(v)}
                setattr(updated, self.fields[path], value)
            else:
                raise invalid_argument(f"cannot update {go_quote(path)} field on {subject}")
        return updated

    def _apply_entry(self, updated: object, new: object, head: str, key: str) -> None:
        attribute = self.fields[head]
        target = getattr(updated, attribute)
        value = getattr(new, attribute).get(key)
        if value is None or self._empty(value):
            make = self.absent.get(head)
            if make is None:
                target.pop(key, None)
                return
            value = make()
        target[key] = value

    def _empty(self, value: object) -> bool:
        return self.drop_empty and isinstance(value, str) and not value


SANDBOX_FIELDS: Final = FieldPaths(
    fields={name: name for name in ("labels", "extensions", "spec", "runtime")},
    maps=frozenset({"labels", "extensions"}),
    default=("labels", "extensions", "spec", "runtime"),
)
"""What a sandbox update may name: containerd's sandbox store and the sandboxer alike."""
