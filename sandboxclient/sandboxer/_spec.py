"""Reading a sandbox's OCI runtime spec, and what the process sandboxer acts on of it.

The spec is an OCI runtime spec carried as JSON (type URL
``types.containerd.io/opencontainers/runtime-spec/1/Spec``). :func:`decode_spec` reads it
for either sandboxer. The process sandboxer (``--isolation none``) acts on
``process.args``, ``process.env`` and ``process.cwd`` only, so :meth:`ProcessSpec.parse`
refuses, naming it, every other field of the runtime spec that asks for something (a root,
mounts, namespaces, a user, capabilities, limits, a seccomp profile...): running the process
anyway would pretend to an isolation it does not have. A field left empty (``null``,
``false``, ``""``, ``[]``, ``{}``) asks for nothing and is accepted; keys the runtime spec
does not define are ignored, as runtimes ignore them. Anything of the wrong shape is refused
with INVALID_ARGUMENT when the sandbox is created or updated, not when it starts.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Final

from .._facts._golang import go_quote
from .._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from .._serve._refusals import invalid_argument
from .._wire._pb import AnyPb

__all__ = (
    "DEFAULT_PATH",
    "SLEEP_FOREVER",
    "UNENFORCED_FIELDS",
    "ProcessSpec",
    "decode_spec",
    "strings",
)

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

UNENFORCED_FIELDS: Final = (
    "root",
    "mounts",
    "hostname",
    "domainname",
    "hooks",
    "linux",
    "solaris",
    "windows",
    "vm",
    "zos",
    "process.terminal",
    "process.consoleSize",
    "process.user",
    "process.capabilities",
    "process.rlimits",
    "process.noNewPrivileges",
    "process.apparmorProfile",
    "process.oomScoreAdj",
    "process.scheduler",
    "process.selinuxLabel",
    "process.ioPriority",
    "process.execCPUAffinity",
    "process.commandLine",
)
"""The runtime spec's fields a process sandbox cannot honour (every ``linux.*`` among them)."""

_NOT_ENFORCED: Final = (
    "is not enforced with --isolation none (its sandboxes are host processes with the "
    "sandboxer's privileges and only process.args, process.env and process.cwd apply): "
    "remove it, or use the isolating sandboxer"
)


def decode_spec(spec: AnyPb | None) -> dict[str, Any] | None:
    """The spec as a JSON object, or None when there is none (unset or empty).

    Raises INVALID_ARGUMENT for another type URL, bad JSON, or a value that is not an object.
    """
    if spec is None or (not spec.type_url and not spec.value):
        return None
    if spec.type_url != RUNTIME_SPEC_TYPE_URL:
        raise invalid_argument(
            f"spec type {go_quote(spec.type_url)} is not supported, only {RUNTIME_SPEC_TYPE_URL}"
        )
    try:
        decoded = json.loads(spec.value)
    except ValueError as exc:
        raise invalid_argument(f"spec is not valid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise invalid_argument("spec must be a JSON object")
    if not isinstance(decoded.get("process") or {}, dict):
        raise invalid_argument("spec process must be an object")
    return decoded


def _is_set(value: object) -> bool:
    """Whether a spec value asks for something (``0`` does: a umask or a uid of 0)."""
    return not (value is None or value is False or value in ("", [], {}))


def _first_unenforced(spec: dict[str, Any]) -> str | None:
    process = spec.get("process") or {}
    for name in UNENFORCED_FIELDS:
        top, _, sub = name.partition(".")
        if sub:
            if _is_set(process.get(sub)):
                return name
            continue
        value = spec.get(top)
        if top == "linux" and isinstance(value, dict):
            for key in sorted(value):
                if _is_set(value[key]):
                    return f"linux.{key}"
            continue
        if _is_set(value):
            return name
    return None


@dataclass(frozen=True)
class ProcessSpec:
    """The part of an OCI runtime spec the process sandboxer acts on."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    output: str = ""
    """The client's FIFO that gets the process's stdout (and stderr unless ``error``); ""
    for the log files."""
    error: str = ""
    """The client's FIFO that gets the process's stderr alone; "" for ``output``'s."""

    @classmethod
    def parse(cls, spec: AnyPb | None, *, refuse_unenforced: bool = True) -> ProcessSpec:
        """Read ``process.args``/``env``/``cwd``; no spec or no args means sleep until stopped.

        Raises INVALID_ARGUMENT when the spec is not a JSON runtime spec of that shape, or
        (unless ``refuse_unenforced`` is false) asks for anything a host process cannot be
        given (see :data:`UNENFORCED_FIELDS`).
        """
        decoded = decode_spec(spec)
        if decoded is None:
            return cls(SLEEP_FOREVER, (DEFAULT_PATH,), "/")
        process = decoded.get("process") or {}
        args = strings(process.get("args"), "process.args")
        env = strings(process.get("env"), "process.env")
        if any("=" not in item for item in env):
            raise invalid_argument("spec process.env entries must be KEY=VALUE")
        cwd = process.get("cwd") or "/"
        if not isinstance(cwd, str):
            raise invalid_argument("spec process.cwd must be a string")
        if "\0" in cwd:
            raise invalid_argument("spec process.cwd must not contain NUL")
        field = _first_unenforced(decoded) if refuse_unenforced else None
        if field is not None:
            raise invalid_argument(f"spec field {field} {_NOT_ENFORCED}")
        if "env" not in process:
            env = (DEFAULT_PATH,)
        return cls(args or SLEEP_FOREVER, env, cwd)

    def request(self) -> bytes:
        """The request that tells a supervisor what to run (see :mod:`._supervise`)."""
        fields = [os.fsencode(self.cwd), str(len(self.args)).encode()]
        fields += [os.fsencode(arg) for arg in self.args]
        fields += [os.fsencode(item) for item in self.env]
        if self.output:
            fields += [b"", os.fsencode(self.output)]
            if self.error:
                fields.append(os.fsencode(self.error))
        payload = b"\0".join(fields)
        return b"%d\n" % len(payload) + payload


def strings(value: object, what: str) -> tuple[str, ...]:
    """A spec's list of strings (``process.args``...); INVALID_ARGUMENT naming ``what``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_argument(f"spec {what} must be a list of strings")
    if any("\0" in item for item in value):
        raise invalid_argument(f"spec {what} must not contain NUL")
    return tuple(value)
