"""What a :class:`~sandboxclient.sandboxer.ProcessSandboxer` reads from a sandbox's spec.

The spec is an OCI runtime spec carried as JSON (type URL
``types.containerd.io/opencontainers/runtime-spec/1/Spec``); only ``process.args``,
``process.env`` and ``process.cwd`` are acted on, and anything of another shape is refused
with INVALID_ARGUMENT when the sandbox is created or updated, not when it starts.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Final

from .._common import RUNTIME_SPEC_TYPE_URL
from .._errdefs import go_quote, invalid_argument
from .._pb import AnyPb

__all__ = ("DEFAULT_PATH", "SLEEP_FOREVER", "ProcessSpec")

DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The environment of a process whose spec gives none, as runc's default."""

SLEEP_FOREVER: Final = (
    sys.executable,
    "-I",
    "-S",
    "-c",
    "import signal\nwhile True:\n    signal.pause()",
)
"""What runs when the spec names no program: a process that waits to be stopped."""


@dataclass(frozen=True)
class ProcessSpec:
    """The part of an OCI runtime spec this controller acts on."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str

    @classmethod
    def parse(cls, spec: AnyPb | None) -> ProcessSpec:
        """Read ``process.args``/``env``/``cwd``; no spec or no args means sleep until stopped.

        Raises INVALID_ARGUMENT when the spec is not a JSON runtime spec of that shape.
        """
        if spec is None or (not spec.type_url and not spec.value):
            return cls(SLEEP_FOREVER, (DEFAULT_PATH,), "/")
        if spec.type_url != RUNTIME_SPEC_TYPE_URL:
            raise invalid_argument(
                f"spec type {go_quote(spec.type_url)} is not supported, "
                f"only {RUNTIME_SPEC_TYPE_URL}"
            )
        try:
            decoded = json.loads(spec.value)
        except ValueError as exc:
            raise invalid_argument(f"spec is not valid JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise invalid_argument("spec must be a JSON object")
        process = decoded.get("process") or {}
        if not isinstance(process, dict):
            raise invalid_argument("spec process must be an object")
        args = _strings(process.get("args"), "process.args")
        env = _strings(process.get("env"), "process.env")
        if any("=" not in item for item in env):
            raise invalid_argument("spec process.env entries must be KEY=VALUE")
        cwd = process.get("cwd") or "/"
        if not isinstance(cwd, str):
            raise invalid_argument("spec process.cwd must be a string")
        if "\0" in cwd:
            raise invalid_argument("spec process.cwd must not contain NUL")
        if "env" not in process:
            env = (DEFAULT_PATH,)
        return cls(args or SLEEP_FOREVER, env, cwd)

    def request(self) -> bytes:
        """The request that tells a supervisor what to run (see :mod:`._supervise`)."""
        fields = [os.fsencode(self.cwd), str(len(self.args)).encode()]
        fields += [os.fsencode(arg) for arg in self.args]
        fields += [os.fsencode(item) for item in self.env]
        payload = b"\0".join(fields)
        return b"%d\n" % len(payload) + payload


def _strings(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_argument(f"spec {what} must be a list of strings")
    if any("\0" in item for item in value):
        raise invalid_argument(f"spec {what} must not contain NUL")
    return tuple(value)
