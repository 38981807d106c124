"""A sandbox's runtime handler: which of its sandboxer's configured runtimes runs it.

The name follows Kubernetes: a RuntimeClass's ``handler``, which the kubelet sends to the
CRI as ``runtime_handler``, names a runtime the node's operator configured (``runc``,
``gvisor``, ``kata``...), not a level of isolation, and the node refuses one it does not
have. This project's isolating sandboxer is configured the same way
(``--runtime-handler gvisor=/usr/bin/runsc``).
"""

from __future__ import annotations

import re
from typing import Any, Final

from ._check import SpecOpt, section

__all__ = ("RUNTIME_HANDLER_ANNOTATION", "checked_handler_name", "with_runtime_handler")

RUNTIME_HANDLER_ANNOTATION: Final = "io.sandboxclient.runtime-handler"
"""The spec annotation naming the runtime handler a sandbox asks its sandboxer for; none
means the sandboxer's default (runc)."""

# A DNS label, as Kubernetes requires of a RuntimeClass handler.
_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def checked_handler_name(name: object, what: str = "runtime_handler") -> str:
    """``name`` if it is a valid handler name (a DNS label: lower-case letters, digits
    and ``-``, at most 63); TypeError or ValueError naming ``what`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r} is not a handler name: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return name


def with_runtime_handler(name: str) -> SpecOpt:
    """Ask the sandboxer to run the sandbox under its runtime handler ``name`` (one it was
    started with, ``--runtime-handler NAME=PATH``, or ``runc``): sets
    :data:`RUNTIME_HANDLER_ANNOTATION`. A sandboxer without that handler refuses the
    sandbox, naming it. (Go's containerd has no such option: this is Kubernetes'
    RuntimeClass handler, which its CRI maps to a runtime and its options.)

    Raises:
        TypeError, ValueError: ``name`` is not a handler name (a DNS label).
    """
    opt = "with_runtime_handler"
    checked_handler_name(name, f"{opt}: name")

    def apply(spec: dict[str, Any]) -> None:
        section(opt, spec, "annotations")[RUNTIME_HANDLER_ANNOTATION] = name

    return apply
