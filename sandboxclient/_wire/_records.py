"""The records that answers are converted into most, built field by field through their slots.

A frozen dataclass's generated ``__init__`` stores each field with ``object.__setattr__``,
looked up and called once per field: for ``SandboxInfo``'s eight fields that was a third of
what converting one Store.List record cost (1.3 µs of 4). These records have slots, so each
field is a member descriptor of the class whose ``__set__`` stores the value directly; being
frozen lives in the class's ``__setattr__``, which that does not go through, and the records
stay as frozen to their users as before. The makers below take every field positionally, in
the order of the dataclass's fields, and are checked against the class once, at import: a
record that gains a field, a default computed in ``__init__``, or a ``__post_init__`` stops
the import rather than being built wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .._models import AnyValue, RuntimeInfo, SandboxInfo

__all__ = ("make_any_value", "make_runtime_info", "make_sandbox_info")

_Setter = Callable[[Any, Any], None]


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple[_Setter, ...]:
    """The slot setters of ``cls``'s fields ``names``, which must be all of them, in order.

    TypeError if ``cls`` is not a slotted dataclass whose ``__init__`` only stores its
    fields, so that setting them one by one builds what calling it would.
    """
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__} is not a slotted dataclass")
    fields = dataclasses.fields(cls)
    if tuple(f.name for f in fields) != names:
        raise TypeError(
            f"{cls.__qualname__} has the fields {tuple(f.name for f in fields)}, not {names}"
        )
    if hasattr(cls, "__post_init__") or any(not f.init for f in fields):
        raise TypeError(f"{cls.__qualname__}.__init__ does more than store its fields")
    return tuple(cls.__dict__[name].__set__ for name in names)


_new = object.__new__

_any_type_url, _any_value = slot_setters(AnyValue, ("type_url", "value"))


def make_any_value(type_url: str, value: bytes) -> AnyValue:
    """``AnyValue(type_url, value)``."""
    record: AnyValue = _new(AnyValue)
    _any_type_url(record, type_url)
    _any_value(record, value)
    return record


_runtime_name, _runtime_options = slot_setters(RuntimeInfo, ("name", "options"))


def make_runtime_info(name: str, options: AnyValue | None) -> RuntimeInfo:
    """``RuntimeInfo(name, options)``."""
    record: RuntimeInfo = _new(RuntimeInfo)
    _runtime_name(record, name)
    _runtime_options(record, options)
    return record


(
    _sb_id,
    _sb_runtime,
    _sb_sandboxer,
    _sb_created_at,
    _sb_updated_at,
    _sb_labels,
    _sb_extensions,
    _sb_spec_any,
) = slot_setters(
    SandboxInfo,
    (
        "id",
        "runtime",
        "sandboxer",
        "created_at",
        "updated_at",
        "labels",
        "extensions",
        "spec_any",
    ),
)


def make_sandbox_info(
    id: str,
    runtime: RuntimeInfo,
    sandboxer: str,
    created_at: datetime | None,
    updated_at: datetime | None,
    labels: Mapping[str, str],
    extensions: Mapping[str, AnyValue],
    spec_any: AnyValue | None,
) -> SandboxInfo:
    """``SandboxInfo(...)`` with every field given, in the order of its fields."""
    record: SandboxInfo = _new(SandboxInfo)
    _sb_id(record, id)
    _sb_runtime(record, runtime)
    _sb_sandboxer(record, sandboxer)
    _sb_created_at(record, created_at)
    _sb_updated_at(record, updated_at)
    _sb_labels(record, labels)
    _sb_extensions(record, extensions)
    _sb_spec_any(record, spec_any)
    return record
