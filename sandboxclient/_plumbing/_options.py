"""``Client.new_sandbox``'s keyword arguments, checked into the record it sends.

Go's client takes ``NewSandboxOpts``; here they are keyword-only arguments, as httpx's
options are. What the client refuses before any call is a ValueError or a TypeError.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import oci
from .._facts._clock import utcnow
from .._facts._disk import with_disk
from .._facts._golang import go_quote
from .._facts._lifetime import lifetime_labels
from .._facts._network import (
    NETWORK_ANNOTATION,
    Bandwidth,
    EgressPolicy,
    PortMapping,
    network_request,
)
from .._facts._validation import labels_problem
from .._facts._wirenames import EMPTY_TYPE_URL
from .._models import AnyValue
from .._wire._convert import AnyLike, spec_to_any, to_any_value
from ..oci._handler import checked_handler_name
from ._limits import with_limits

__all__ = ("SandboxDraft", "checked_extension_key", "checked_labels", "sandbox_draft")

_EMPTY_OPTIONS = AnyValue(EMPTY_TYPE_URL, b"")


@dataclass(slots=True)
class SandboxDraft:
    """A sandbox put together from ``new_sandbox``'s arguments, before it is sent."""

    id: str
    runtime_name: str = ""
    runtime_options: AnyValue | None = None
    spec: AnyValue | None = None
    labels: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, AnyValue] = field(default_factory=dict)
    sandboxer: str | None = None
    """None means the Client's default sandboxer."""
    limits: dict[str, str] = field(default_factory=dict)
    """The time-limit labels asked for (also in ``labels``): the sandboxer must enforce them."""


def sandbox_draft(
    sandbox_id: str,
    *,
    runtime: str | None,
    runtime_options: AnyLike | None,
    spec: Mapping[str, Any] | None,
    labels: Mapping[str, str] | None,
    extensions: Mapping[str, AnyLike] | None,
    sandboxer: str | None,
    cpu: float | None = None,
    memory: int | str | None = None,
    pids: int | None = None,
    host_users: bool | None = None,
    runtime_handler: str | None = None,
    network: str | None = None,
    ports: Sequence[PortMapping] | None = None,
    egress: EgressPolicy | None = None,
    bandwidth: Bandwidth | None = None,
    lifetime: float | None = None,
    idle_timeout: float | None = None,
    disk: int | str | None = None,
) -> SandboxDraft:
    """The sandbox ``new_sandbox``'s arguments describe, every argument checked.

    ``runtime_options`` is a betterproto2 message (packed under its full name), a
    ``(type_url, bytes)`` pair or an ``AnyValue``; a runtime named without options gets a
    packed ``google.protobuf.Empty``, as containerd's Go client sends. ``cpu``, ``memory``
    and ``pids`` go into the spec's ``linux.resources`` (see ``_limits``); ``host_users``
    into its annotation ``oci.HOST_USERS_ANNOTATION`` (see :func:`with_host_users`);
    ``runtime_handler`` into ``oci.RUNTIME_HANDLER_ANNOTATION``;
    ``network``, ``ports``, ``egress`` and ``bandwidth`` into the annotation
    ``NETWORK_ANNOTATION``; ``lifetime`` (seconds from now) and ``idle_timeout`` into the
    labels of :mod:`.._facts._lifetime`; ``disk`` into the annotation of :mod:`.._facts._disk`.
    """
    draft = SandboxDraft(sandbox_id)
    if spec is not None and not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a mapping, got {type(spec).__name__}")
    spec = with_limits(spec, cpu=cpu, memory=memory, pids=pids)
    spec = with_host_users(spec, host_users)
    spec = with_handler(spec, runtime_handler)
    spec = with_network(spec, network, ports, egress, bandwidth)
    spec = with_disk(spec, disk)
    if runtime is not None:
        if not isinstance(runtime, str):
            raise TypeError(f"runtime must be a str, got {type(runtime).__name__}")
        draft.runtime_name = runtime
        draft.runtime_options = _EMPTY_OPTIONS
    if runtime_options is not None:
        draft.runtime_options = to_any_value(runtime_options, what="runtime options")
    if spec is not None:
        draft.spec = spec_to_any(copy.deepcopy(dict(spec)))
    if labels is not None:
        draft.labels = checked_labels(labels, sandbox_id)
    draft.limits = lifetime_labels(lifetime, idle_timeout, now=utcnow(), labels=draft.labels)
    draft.labels.update(draft.limits)
    if extensions is not None:
        if not isinstance(extensions, Mapping):
            raise TypeError(f"extensions must be a mapping, got {type(extensions).__name__}")
        for name, value in extensions.items():
            checked_extension_key(name, sandbox_id)
            draft.extensions[name] = to_any_value(value, what=f"extension {go_quote(name)}")
    if sandboxer is not None:
        if not isinstance(sandboxer, str) or not sandboxer:
            raise ValueError("sandboxer must be a non-empty string")
        draft.sandboxer = sandboxer
    return draft


def with_host_users(
    spec: Mapping[str, Any] | None, host_users: bool | None
) -> Mapping[str, Any] | None:
    """``spec`` (a copy, or a new spec) saying ``host_users`` in its annotation; ``spec``
    itself when ``host_users`` is None. TypeError unless a bool; ValueError when the spec's
    annotation says otherwise."""
    if host_users is None:
        return spec
    if not isinstance(host_users, bool):
        raise TypeError(f"host_users= must be a bool, got {type(host_users).__name__}")
    result: dict[str, Any] = copy.deepcopy(dict(spec)) if spec is not None else {}
    value = "true" if host_users else "false"
    given = (result.get("annotations") or {}).get(oci.HOST_USERS_ANNOTATION)
    if given is not None and given != value:
        raise ValueError(
            f"host_users={host_users} but the spec's annotation {oci.HOST_USERS_ANNOTATION} "
            f"is {given!r}: give one of them"
        )
    oci.with_host_users(host_users)(result)
    return result


def with_network(
    spec: Mapping[str, Any] | None,
    network: str | None,
    ports: Sequence[PortMapping] | None,
    egress: EgressPolicy | None,
    bandwidth: Bandwidth | None = None,
) -> Mapping[str, Any] | None:
    """``spec`` (a copy, or a new spec) asking for a network in its annotation; ``spec``
    itself when nothing is asked. TypeError/ValueError naming the argument (see
    ``_network.network_request``), or when the spec's annotation asks for another."""
    request = network_request(network, ports, egress, bandwidth)
    if request is None:
        return spec
    result: dict[str, Any] = copy.deepcopy(dict(spec)) if spec is not None else {}
    annotations = result.setdefault("annotations", {})
    value = request.to_annotation()
    given = annotations.get(NETWORK_ANNOTATION)
    if given is not None and given != value:
        raise ValueError(
            f"network= asks for {value} but the spec's annotation {NETWORK_ANNOTATION} is "
            f"{given!r}: give one of them"
        )
    annotations[NETWORK_ANNOTATION] = value
    return result


def checked_labels(labels: Mapping[str, str], owner: str) -> dict[str, str]:
    """A copy of ``labels`` once checked: TypeError unless it maps str to str, ValueError
    (naming ``owner``) for a label containerd would refuse."""
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels must be a mapping of str to str, got {type(labels).__name__}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"labels must map str to str, got {type(key).__name__}: {type(value).__name__}"
            )
    problem = labels_problem(labels)
    if problem is not None:
        raise ValueError(f"invalid labels on {go_quote(owner)}: {problem}")
    return dict(labels)


def checked_extension_key(key: object, owner: str) -> str:
    """``key`` if it can name an extension; ValueError (naming ``owner``) if empty."""
    if not isinstance(key, str):
        raise TypeError(f"extension name must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError(f"extension key must not be empty on {go_quote(owner)}")
    return key


def with_handler(
    spec: Mapping[str, Any] | None, runtime_handler: str | None
) -> Mapping[str, Any] | None:
    """``spec`` (a copy, or a new spec) naming ``runtime_handler`` in its annotation;
    ``spec`` itself when None. TypeError or ValueError for a bad name, or one the spec's
    annotation contradicts."""
    if runtime_handler is None:
        return spec
    checked_handler_name(runtime_handler, "runtime_handler=")
    result: dict[str, Any] = copy.deepcopy(dict(spec)) if spec is not None else {}
    given = (result.get("annotations") or {}).get(oci.RUNTIME_HANDLER_ANNOTATION)
    if given is not None and given != runtime_handler:
        raise ValueError(
            f"runtime_handler={runtime_handler!r} but the spec's annotation "
            f"{oci.RUNTIME_HANDLER_ANNOTATION} is {given!r}: give one of them"
        )
    oci.with_runtime_handler(runtime_handler)(result)
    return result
