"""What ``Sandbox.update`` writes to a sandbox's store record: the draft and its field paths."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from .._facts._golang import go_quote
from .._models import AnyValue, SandboxInfo
from .._wire._convert import AnyLike, to_any_value
from ._options import checked_extension_key, checked_labels

__all__ = ("record_update",)


def record_update(
    info: SandboxInfo,
    labels: Mapping[str, str] | None,
    extensions: Mapping[str, AnyLike] | None,
    fields: Sequence[str] | None,
) -> tuple[SandboxInfo, list[str]]:
    """The record ``info`` with ``labels`` and ``extensions`` (checked; None: kept), and the
    field paths to write: ``fields``, or by default those given. An empty list means nothing
    is to be written (the store would read it as "rewrite the whole record")."""
    new_labels = dict(info.labels) if labels is None else checked_labels(labels, info.id)
    new_extensions: dict[str, AnyValue] = dict(info.extensions)
    if extensions is not None:
        new_extensions = {
            checked_extension_key(k, info.id): to_any_value(v, what=f"extension {go_quote(k)}")
            for k, v in extensions.items()
        }
    if fields is None:
        given = (("labels", labels), ("extensions", extensions))
        fields = [name for name, value in given if value is not None]
    draft = dataclasses.replace(info, labels=new_labels, extensions=new_extensions)
    return draft, list(fields)
