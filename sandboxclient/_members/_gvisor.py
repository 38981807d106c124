"""Members of a sandbox whose runtime joins containers by annotation (gVisor's runsc).

A gVisor sandbox is one gVisor kernel; a member (``Sandbox.new_container``) is a runsc
*subcontainer* in it, as a pod's containers are under containerd's CRI with runsc: its spec
carries the annotations by which runsc joins a container to a running sandbox
(:data:`CONTAINER_TYPE_ANNOTATION` ``container`` and :data:`SANDBOX_ID_ANNOTATION`, the id
by which the runtime knows the sandbox's own container) and it runs under its sandbox's own
runtime and runtime options (the sandboxer's runsc wrapper). The isolating sandboxer marks
such a sandbox by the same two annotations on its own container's spec (type ``sandbox``), as
CRI marks a pod's sandbox container; a member copies the sandbox's id from there.

What a member gets, and what is refused by name (FailedPreconditionError) because runsc
would drop it (runsc release 20221219, ``runsc/container/container.go``):

- the sandbox's network, IPC and UTS namespaces: gVisor's kernel has one of each for all
  its containers, so ``join_namespaces=False`` and a spec namespace with a ``path`` are
  refused. Its own pid namespace where its spec asks for one (``oci.generate_spec()`` does),
  as a pod's containers have; without a ``pid`` entry it sees the sandbox's processes;
- its processes run in the sandbox's gVisor kernel, on the host within the sandbox's cgroup
  and limits: runsc gives a subcontainer no host limits of its own (it installs its cgroup
  with empty resources), so a spec's ``linux.resources`` memory, CPU, pids, block I/O,
  huge page, RDMA or unified limits are refused, and no cgroup is named for it;
- its file server (gofer) runs in a user namespace with the sandbox's id mappings (runsc makes
  it, as for the sandbox), its root idmapped as a runc member's is; a spec with a user
  namespace or mappings of its own is used as given;
- the default seccomp profile, enforced by gVisor's kernel for its process; a spec's own
  ``linux.seccomp`` is refused, as for the sandbox (runsc gives none to execs);
- ``runtime``/``runtime_options`` other than the sandbox's are refused: it could not join.
- a bind mount of a host path its file server, in the sandbox's user namespace, could not
  reach (a directory above it that others may not search) is refused by name
  (:mod:`._reach`), where runsc would fail the member's Start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._facts._golang import go_quote
from .._models import RuntimeInfo
from .._wire._convert import AnyLike
from ..errors import FailedPreconditionError
from ._reach import unreachable_bind
from ._userns import IdRange, MemberUsers

__all__ = (
    "CONTAINER_TYPE_ANNOTATION",
    "SANDBOX_ID_ANNOTATION",
    "AnnotatedSandbox",
    "annotated_sandbox",
)

CONTAINER_TYPE_ANNOTATION: Final = "io.kubernetes.cri.container-type"
"""CRI's annotation (read by runsc): ``sandbox`` on a sandbox's own container, ``container``
on a container that joins it."""

SANDBOX_ID_ANNOTATION: Final = "io.kubernetes.cri.sandbox-id"
"""CRI's annotation (read by runsc) naming the sandbox a container joins."""

_LIMITS: Final = ("memory", "cpu", "pids", "blockIO", "hugepageLimits", "rdma", "unified")


def _ranges(value: object) -> tuple[IdRange, ...]:
    if not isinstance(value, list):
        return ()
    ranges = []
    for item in value:
        if not isinstance(item, Mapping):
            return ()
        inside, host, size = (item.get(k) for k in ("containerID", "hostID", "size"))
        if not (isinstance(inside, int) and isinstance(host, int) and isinstance(size, int)):
            return ()
        ranges.append(IdRange(inside, host, size))
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class AnnotatedSandbox:
    """A sandbox whose members join it by annotation (see the module's docstring)."""

    sandbox_id: str
    runtime_id: str
    """The id by which the runtime knows the sandbox (its :data:`SANDBOX_ID_ANNOTATION`)."""
    handler: str
    """The sandbox's runtime handler, named in refusals."""
    runtime: RuntimeInfo
    """The runtime and options of the sandbox's own container, which its members share."""
    users: MemberUsers | None
    """The sandbox's id mappings for a member's file server (no namespace path: runsc makes
    the namespace); None when the sandbox runs with the host's users."""

    def _refuse(self, what: str, why: str) -> FailedPreconditionError:
        return FailedPreconditionError(
            f"{what} is not supported for a member of sandbox {go_quote(self.sandbox_id)} "
            f"(runtime handler {go_quote(self.handler)}, gVisor): {why}"
        )

    def runtime_for(
        self, runtime: str | None, options: AnyLike | None, *, join_namespaces: bool
    ) -> RuntimeInfo:
        """The member's runtime: the sandbox's; refusals for what cannot join."""
        if not join_namespaces:
            raise self._refuse(
                "join_namespaces=False",
                "gVisor's kernel gives all the containers of a sandbox one network, IPC and "
                "UTS namespace",
            )
        if runtime is not None and runtime != self.runtime.name:
            raise self._refuse(f"runtime {go_quote(runtime)}", "it runs under its sandbox's")
        if options is not None:
            raise self._refuse("runtime_options", "it runs with its sandbox's runsc options")
        return self.runtime

    def apply(self, spec: dict[str, Any]) -> None:
        """Check the member's spec (changed in place) and add the joining annotations."""
        linux = spec.get("linux") or {}
        if linux.get("seccomp") is not None:
            raise self._refuse(
                "spec field linux.seccomp",
                "runsc applies it to the member's process but not to its execs; leave it "
                "out for the default profile, enforced by gVisor's kernel",
            )
        resources = linux.get("resources") or {}
        for key in _LIMITS:
            if isinstance(resources, Mapping) and resources.get(key):
                raise self._refuse(
                    f"spec field linux.resources.{key}",
                    "runsc gives a member no limits of its own; its processes run in the "
                    "sandbox's gVisor kernel, within the sandbox's limits",
                )
        for entry in linux.get("namespaces") or []:
            if isinstance(entry, Mapping) and entry.get("path"):
                raise self._refuse(
                    f"spec linux.namespaces {entry.get('type')} path",
                    "the member's namespaces are the sandbox's gVisor kernel's",
                )
        if self.users is not None or any(
            isinstance(e, Mapping) and e.get("type") == "user"
            for e in linux.get("namespaces") or []
        ):
            found = unreachable_bind(spec)
            if found is not None:
                raise self._refuse(
                    f"spec mount at {go_quote(found.destination)} of host path "
                    f"{go_quote(found.source)}",
                    "the member's file server resolves it in the sandbox's user namespace, as "
                    f"an unprivileged id on the host, which may not search "
                    f"{go_quote(found.directory)} (mode {found.mode:04o}); make every "
                    "directory above it searchable by others (o+x), bind it in the "
                    "sandbox's own spec (the sandboxer binds those for it), or make the "
                    "sandbox with host_users=True",
                )
        annotations = spec.get("annotations")
        if not isinstance(annotations, dict):
            annotations = spec["annotations"] = {}
        for key, value in (
            (CONTAINER_TYPE_ANNOTATION, "container"),
            (SANDBOX_ID_ANNOTATION, self.runtime_id),
        ):
            given = annotations.setdefault(key, value)
            if given != value:
                raise self._refuse(
                    f"spec annotations[{go_quote(key)}] {go_quote(str(given))}",
                    f"it joins the sandbox with {go_quote(value)}",
                )


def annotated_sandbox(
    sandbox_id: str, spec: Mapping[str, Any] | None, runtime: RuntimeInfo, handler: str
) -> AnnotatedSandbox | None:
    """The sandbox's way for members to join by annotation, when its own container's
    ``spec`` says so (:data:`CONTAINER_TYPE_ANNOTATION` ``sandbox`` and a
    :data:`SANDBOX_ID_ANNOTATION`), else None."""
    annotations = (spec or {}).get("annotations") or {}
    runtime_id = annotations.get(SANDBOX_ID_ANNOTATION)
    if annotations.get(CONTAINER_TYPE_ANNOTATION) != "sandbox" or not isinstance(runtime_id, str):
        return None
    linux = (spec or {}).get("linux") or {}
    uids, gids = _ranges(linux.get("uidMappings")), _ranges(linux.get("gidMappings"))
    users = MemberUsers("", uids, gids) if uids and gids else None
    return AnnotatedSandbox(sandbox_id, runtime_id, handler, runtime, users)
