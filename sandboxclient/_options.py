"""Options for ``Client.new_sandbox``, after containerd's ``NewSandboxOpts``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._common import EMPTY_TYPE_URL
from ._models import AnyValue
from ._validation import labels_problem
from ._wire._convert import AnyLike, spec_to_any, to_any_value
from ._wire._errdefs import go_quote
from .errors import InvalidArgumentError

__all__ = (
    "NewSandboxOpt",
    "SandboxDraft",
    "SpecOpt",
    "checked_extension_key",
    "checked_labels",
    "with_sandbox_extension",
    "with_sandbox_labels",
    "with_sandbox_runtime",
    "with_sandbox_spec",
    "with_sandboxer",
)

_EMPTY_OPTIONS = AnyValue(EMPTY_TYPE_URL, b"")


@dataclass(slots=True)
class SandboxDraft:
    """A sandbox being put together by options before it is sent to the store."""

    id: str
    runtime_name: str = ""
    runtime_options: AnyValue | None = None
    spec: AnyValue | None = None
    labels: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, AnyValue] = field(default_factory=dict)
    sandboxer: str | None = None
    """None means the Client's default sandboxer."""


NewSandboxOpt = Callable[[SandboxDraft], None]
"""An option for ``new_sandbox``: a callable that edits the draft."""

SpecOpt = Callable[[dict[str, Any]], None]
"""A callable that edits an OCI runtime spec in place, applied by ``with_sandbox_spec``."""


def with_sandbox_runtime(name: str, options: AnyLike | None = None) -> NewSandboxOpt:
    """Run the sandbox under runtime ``name``.

    ``options`` is a betterproto2 message (packed under its full name), a
    ``(type_url, bytes)`` pair or an ``AnyValue``; without it a packed
    ``google.protobuf.Empty`` is sent, as containerd's Go client does.
    """
    if not isinstance(name, str):
        raise TypeError(f"runtime name must be a str, got {type(name).__name__}")
    packed = _EMPTY_OPTIONS if options is None else to_any_value(options, what="runtime options")

    def apply(draft: SandboxDraft) -> None:
        draft.runtime_name = name
        draft.runtime_options = packed

    return apply


def with_sandbox_spec(spec: Mapping[str, Any], *spec_opts: SpecOpt) -> NewSandboxOpt:
    """Attach an OCI runtime spec (a JSON-like mapping), after applying ``spec_opts`` to a copy."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a mapping, got {type(spec).__name__}")
    edited: dict[str, Any] = copy.deepcopy(dict(spec))
    for opt in spec_opts:
        opt(edited)
    packed = spec_to_any(edited)

    def apply(draft: SandboxDraft) -> None:
        draft.spec = packed

    return apply


def with_sandbox_extension(name: str, value: AnyLike) -> NewSandboxOpt:
    """Attach an extension: a betterproto2 message, a ``(type_url, bytes)`` pair or an AnyValue."""
    checked_extension_key(name, "the sandbox")
    packed = to_any_value(value, what=f"extension {go_quote(name)}")

    def apply(draft: SandboxDraft) -> None:
        draft.extensions[name] = packed

    return apply


def with_sandbox_labels(labels: Mapping[str, str]) -> NewSandboxOpt:
    """Set the sandbox's labels (replacing any set by an earlier option)."""
    checked = checked_labels(labels, "the sandbox")

    def apply(draft: SandboxDraft) -> None:
        draft.labels = dict(checked)

    return apply


def with_sandboxer(name: str) -> NewSandboxOpt:
    """Have sandbox controller ``name`` run the sandbox instead of the Client's default."""
    if not isinstance(name, str) or not name:
        raise ValueError("sandboxer name must be a non-empty string")

    def apply(draft: SandboxDraft) -> None:
        draft.sandboxer = name

    return apply


def checked_labels(labels: Mapping[str, str], owner: str) -> dict[str, str]:
    """A copy of ``labels`` once checked: TypeError unless it maps str to str,
    InvalidArgumentError (naming ``owner``) for a label containerd would refuse."""
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels must be a mapping of str to str, got {type(labels).__name__}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"labels must map str to str, got {type(key).__name__}: {type(value).__name__}"
            )
    problem = labels_problem(labels)
    if problem is not None:
        raise InvalidArgumentError(f"invalid labels on {go_quote(owner)}: {problem}")
    return dict(labels)


def checked_extension_key(key: object, owner: str) -> str:
    """``key`` if it can name an extension; InvalidArgumentError (naming ``owner``) if empty."""
    if not isinstance(key, str):
        raise TypeError(f"extension name must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidArgumentError(f"extension key must not be empty on {go_quote(owner)}")
    return key
