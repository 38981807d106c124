"""Runtime handlers: the OCI runtimes the isolating sandboxer runs sandboxes under, by name.

The sandboxer is started with ``--runtime-handler NAME=PATH`` (repeatable) beside its own
``runc`` (containerd's runc shim's default binary). A sandbox names the handler it wants in
its spec's annotation :data:`oci.RUNTIME_HANDLER_ANNOTATION` (the client's
``new_sandbox(runtime_handler=...)``), as a Kubernetes RuntimeClass names its handler; one
the sandboxer was not given is refused, naming it. Each handler is run through containerd's
runc shim with its runc option ``BinaryName``, as Docker runs ``--runtime=runsc``, so the
sandbox's execs run under it too (the shim runs them with the same binary).

A handler's binary is asked its version when the sandboxer starts: it must be runc or
gVisor's runsc, since what a sandbox is promised depends on which. For gVisor the
sandboxer writes a small wrapper (in its private state) that adds the flags it relies on:

- ``--network=none``: gVisor's own network stack with a loopback interface only, which is
  what a runc sandbox gets in its own network namespace (runsc cannot make that namespace
  itself). A Create ``netns_path`` or a spec network namespace with a path would be
  dropped, so both are refused, naming the field. A sandbox with a bridge network gets the
  handler's second wrapper, which runs runsc on the namespace the sandboxer set up, as the
  root of the sandbox's user namespace (a wrapper per block of ids) unless it runs with the
  host's users (:mod:`._gvisor_net`);
- ``--oci-seccomp``: the spec's seccomp profile (the sandboxer's default one included)
  is enforced by gVisor's kernel for the sandbox's process. runsc's ``exec`` loads none, so
  a spec's own ``linux.seccomp``, which its author may expect on execs, is refused; execs
  are held by gVisor's kernel and its own filter on the host.

A gVisor sandbox's bind mounts of host paths are bound, for its Start, where its file
server can reach them in the sandbox's user namespace (:mod:`._gvisor_binds`), as runc opens
them as the host's root.

What else a gVisor sandbox gets (seen with runsc 0.0~20221219, platform ptrace, on cgroup v1;
the limits on v2 too): the spec's user namespace holds gVisor's file server (its host uid is
the block's first id), and gVisor's kernel runs as the host's ``nobody`` in a user namespace of
its own; the memory, pids and CPU limits hold on the cgroup of the whole sandbox (gVisor's own
threads count against its pids limit, and a process over the memory limit ends the whole
sandbox, gVisor's kernel being what the host kills); the read-only root, capabilities, user and
``noNewPrivileges`` are enforced by gVisor's kernel.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .. import oci
from .._facts._golang import go_quote
from .._members._gvisor import CONTAINER_TYPE_ANNOTATION, SANDBOX_ID_ANNOTATION
from .._models import AnyValue
from .._serve._refusals import invalid_argument
from .._wire._pb import SandboxPb, runc_options_pb
from ..oci._handler import checked_handler_name
from ._gvisor_binds import BindStaging
from ._gvisor_net import (
    GVISOR_NETWORK_MODE,
    block_uid,
    check_network,
    joins_network,
    network_before_create,
)
from ._runsc_wrapper import runsc_id, write_wrapper
from ._spec import decode_spec

__all__ = (
    "DEFAULT_HANDLER",
    "GVISOR",
    "RUNC_KIND",
    "SHIM_GROUP_ANNOTATIONS",
    "Handlers",
    "RuntimeHandler",
    "parse_handler",
)

DEFAULT_HANDLER: Final = "runc"
"""The handler a sandbox that names none runs under: containerd's runc shim's own runc."""

RUNC_KIND: Final = "runc"
GVISOR: Final = "gvisor"
_RUNC_OPTIONS_TYPE_URL: Final = "containerd.runc.v1.Options"
# containerd's runc shim names its socket (in /run/containerd/s) by the first of its group
# annotations a spec has, this one, then CRI's sandbox id; at its exit it removes only the
# socket named by its own id (the container's), whatever named it.
_RUNC_GROUP_ANNOTATION: Final = "io.containerd.runc.v2.group"
SHIM_GROUP_ANNOTATIONS: Final = (_RUNC_GROUP_ANNOTATION, SANDBOX_ID_ANNOTATION)
"""The annotations by which containerd's runc shim runs tasks in one shim, the sandboxer's
alone to set: a sandbox's spec naming another's id would run it in that one's shim."""
_GVISOR_FLAGS: Final = ("--network=none", "--oci-seccomp")
NETWORKED_SUFFIX: Final = ".bridge"
"""A gVisor handler's wrapper for sandboxes with a network is its name with this suffix."""
_GVISOR_NETWORKED_FLAGS: Final = (f"--network={GVISOR_NETWORK_MODE}", "--oci-seccomp")


@dataclass(frozen=True)
class RuntimeHandler:
    """One handler: its name, its binary, which runtime that is, and what it says it is."""

    name: str
    path: str
    """The binary; empty for the runc shim's default runc."""
    kind: str
    """``runc`` or ``gvisor``."""
    version: str
    """The first line of ``PATH --version``."""


def parse_handler(text: str) -> tuple[str, str]:
    """``NAME=PATH`` as (name, absolute path); ValueError saying what is wrong."""
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise ValueError(f"runtime handler {text!r} must be NAME=PATH")
    checked_handler_name(name, "runtime handler name")
    if not os.path.isabs(path):
        raise ValueError(f"runtime handler {name}: {path!r} is not an absolute path")
    return name, path


def _probe(name: str, path: str) -> RuntimeHandler:
    try:
        done = subprocess.run(
            [path or "runc", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        raise ValueError(f"runtime handler {name}: cannot run {path or 'runc'}: {exc}") from None
    first = (done.stdout or done.stderr).strip().splitlines()[:1]
    line = first[0] if first else ""
    if line.startswith("runsc version"):
        kind = GVISOR
    elif line.startswith("runc version"):
        kind = RUNC_KIND
    else:
        raise ValueError(
            f"runtime handler {name}: {path or 'runc'} --version says {line!r}; only runc "
            "and gVisor's runsc are supported (what a sandbox is promised depends on which)"
        )
    return RuntimeHandler(name, path, kind, line)


class Handlers:
    """The sandboxer's handlers by name, and what each makes of a sandbox."""

    def __init__(self, given: Mapping[str, str], wrapper_dir: str) -> None:
        """``given`` maps names to binaries (``runc`` may be given another one); the
        gVisor wrappers go in ``wrapper_dir``, which must be the sandboxer's own.
        ValueError names a handler that cannot be used."""
        # The shim's own runc is taken on trust, as without handlers: nothing to ask.
        self._handlers = {DEFAULT_HANDLER: RuntimeHandler(DEFAULT_HANDLER, "", RUNC_KIND, "")}
        self._handlers.update((name, _probe(name, path)) for name, path in given.items())
        if self._handlers[DEFAULT_HANDLER].kind != RUNC_KIND:
            raise ValueError(f"runtime handler {DEFAULT_HANDLER} must be a runc")
        self._binaries: dict[str, str] = {}
        self._networked: dict[str, str] = {}
        self._folder = Path(wrapper_dir, "runtime-handlers")
        self._as_block: dict[tuple[str, int], str] = {}
        self._staging = BindStaging(wrapper_dir)
        if any(h.kind == GVISOR for h in self._handlers.values()):
            self._staging.sweep()
        for handler in self._handlers.values():
            if handler.kind == GVISOR:
                folder = Path(wrapper_dir, "runtime-handlers")
                folder.mkdir(mode=0o700, exist_ok=True)
                self._binaries[handler.name] = write_wrapper(
                    folder, handler.name, handler.path, _GVISOR_FLAGS
                )
                self._networked[handler.name] = write_wrapper(
                    folder, handler.name + NETWORKED_SUFFIX, handler.path, _GVISOR_NETWORKED_FLAGS
                )
            elif handler.path:
                self._binaries[handler.name] = handler.path

    def __iter__(self) -> Iterator[RuntimeHandler]:
        return iter([self._handlers[name] for name in self.names])

    @property
    def names(self) -> list[str]:
        """The handlers' names, sorted."""
        return sorted(self._handlers)

    @staticmethod
    def asked(spec: Mapping[str, Any] | None, annotations: Mapping[str, str]) -> str:
        """The handler's name a sandbox asks for (Create annotations over the spec's), or
        the default's, whether or not this sandboxer has it."""
        given = (spec or {}).get("annotations") or {}
        asked = {**given, **annotations}.get(oci.RUNTIME_HANDLER_ANNOTATION)
        return asked if isinstance(asked, str) else DEFAULT_HANDLER

    def chosen(
        self, spec: Mapping[str, Any] | None, annotations: Mapping[str, str]
    ) -> RuntimeHandler:
        """The handler a sandbox names (its Create annotations over its spec's), or the
        default; INVALID_ARGUMENT naming the annotation when the sandboxer has no such one."""
        given = (spec or {}).get("annotations") or {}
        asked = {**given, **annotations}.get(oci.RUNTIME_HANDLER_ANNOTATION, DEFAULT_HANDLER)
        found = self._handlers.get(asked) if isinstance(asked, str) else None
        if found is None:
            offered = ", ".join(go_quote(n) for n in self.names)
            raise invalid_argument(
                f"spec annotations[{go_quote(oci.RUNTIME_HANDLER_ANNOTATION)}] "
                f"{go_quote(str(asked))}: this sandboxer has no such runtime handler "
                f"(it offers {offered})"
            )
        return found

    def check(
        self,
        handler: RuntimeHandler,
        spec: Mapping[str, Any] | None,
        *,
        netns_path: str,
        asks_runtime_options: bool,
    ) -> None:
        """Refuse, naming the field, what ``handler`` would drop (see the module's
        docstring)."""
        if asks_runtime_options and handler.name in self._binaries:
            raise invalid_argument(
                f"runtime.options cannot be given with runtime handler {go_quote(handler.name)}: "
                "the handler sets the runtime's options"
            )
        if handler.kind != GVISOR:
            return
        why = (
            f"runtime handler {go_quote(handler.name)} (gVisor) runs the sandbox on gVisor's "
            "own network stack, loopback only"
        )
        if netns_path:
            raise invalid_argument(f"netns_path is not supported with {why}")
        linux = (spec or {}).get("linux") or {}
        for entry in linux.get("namespaces") or []:
            if isinstance(entry, dict) and entry.get("type") == "network" and entry.get("path"):
                raise invalid_argument(
                    f"spec linux.namespaces network path is not supported with {why}"
                )
        if linux.get("seccomp"):
            raise invalid_argument(
                f"spec field linux.seccomp is not supported with runtime handler "
                f"{go_quote(handler.name)} (gVisor): runsc applies it to the sandbox's "
                "process but not to execs; leave it out for the default profile, enforced "
                "by gVisor's kernel"
            )

    def check_sandbox(
        self, sandbox: SandboxPb, *, netns_path: str, annotations: Mapping[str, str]
    ) -> None:
        """Refuse a sandbox (as created or updated) whose handler is unknown, or would
        drop what it asks for."""
        given = decode_spec(sandbox.spec)
        options = sandbox.runtime.options if sandbox.runtime is not None else None
        handler = self.chosen(given, annotations)
        self.check(
            handler,
            given,
            netns_path=netns_path,
            asks_runtime_options=options is not None and bool(options.value),
        )
        if handler.kind == GVISOR:
            check_network(handler.name, given, annotations)

    @staticmethod
    def mark(spec: dict[str, Any], handler: RuntimeHandler, sandbox_id: str) -> None:
        """Mark a gVisor sandbox's spec (changed in place) as a sandbox its members join by
        CRI's annotations, as runsc reads them (``sandboxclient._members._gvisor``); whatever
        the spec said of them, so that no sandbox joins another one.

        Its shim's group is named by the sandbox's id too: the shim would otherwise name its
        socket by the runsc id of CRI's annotation, and leave it behind when it exits."""
        if handler.kind != GVISOR:
            return
        annotations = spec.setdefault("annotations", {})
        annotations[CONTAINER_TYPE_ANNOTATION] = "sandbox"
        annotations[SANDBOX_ID_ANNOTATION] = runsc_id(sandbox_id)
        annotations[_RUNC_GROUP_ANNOTATION] = sandbox_id

    async def before_create(
        self,
        handler: RuntimeHandler,
        spec: dict[str, Any],
        attach: Callable[[int], Awaitable[None]] | None,
        directory: str,
    ) -> Callable[[int], Awaitable[None]] | None:
        """What sets up a sandbox's network once its task is created (``attach``), or
        None when a gVisor sandbox's is set up now, before runsc creates it, in a namespace
        its spec (changed in place) then joins by path (:mod:`._gvisor_net`). A gVisor
        sandbox's bind sources are bound where its file server reaches them
        (:mod:`._gvisor_binds`; undone by :meth:`after_create`)."""
        if handler.kind == GVISOR:
            self._staging.stage(spec)
        return await network_before_create(handler.kind == GVISOR, spec, attach, directory)

    def after_create(self, spec: Mapping[str, Any]) -> None:
        """Once the sandbox's task is created (or failed to be): undo what
        :meth:`before_create` bound for it."""
        self._staging.release(spec)

    def _write_as(self, handler: RuntimeHandler, uid: int) -> str:
        name = f"{handler.name}{NETWORKED_SUFFIX}-{uid}"
        path = write_wrapper(self._folder, name, handler.path, _GVISOR_NETWORKED_FLAGS, run_as=uid)
        self._as_block[(handler.name, uid)] = path
        return path

    def runtime_options(
        self, handler: RuntimeHandler, spec: Mapping[str, Any] | None = None
    ) -> AnyValue | None:
        """The runc options that run a sandbox of ``spec`` under ``handler`` (None: the
        shim's defaults). A gVisor sandbox whose spec joins a network namespace by path (its
        bridge network, :mod:`._gvisor_net`) gets the wrapper that runs runsc on it."""
        binary = self._binaries.get(handler.name)
        if handler.kind == GVISOR and joins_network(spec):
            binary = self._networked[handler.name]
            uid = block_uid(spec)
            if uid is not None:  # in the sandbox's user namespace: runsc as its root
                binary = self._as_block.get((handler.name, uid)) or self._write_as(handler, uid)
        if binary is None:
            return None
        options = runc_options_pb.Options(binary_name=binary)
        return AnyValue(_RUNC_OPTIONS_TYPE_URL, bytes(options))
