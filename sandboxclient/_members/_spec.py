"""What a member container (``Sandbox.new_container``) gets by default, as a pod's
containers get their pod's: the sandbox's sandboxer never sees a member's spec, so the
client gives it the defaults.

- **seccomp**: a member spec with no ``linux.seccomp`` gets the default profile (made for
  the capabilities its spec grants), unless its annotation :data:`oci.SECCOMP_ANNOTATION`
  says :data:`oci.SECCOMP_UNCONFINED` (``oci.with_seccomp_unconfined()``); a spec's own
  profile is used as given. Another value of the annotation, or the annotation with a
  profile, is refused (ValueError naming it), as the isolating sandboxer refuses it.
- **cgroup**: a member spec with no ``linux.cgroupsPath`` goes in a cgroup nested under the
  one its sandbox's sandboxer names for members (the annotation
  :data:`MEMBERS_CGROUP_ANNOTATION` on the spec of the sandbox's own container):
  ``<that path>/<member id>``, so that its processes and its execs count against the
  sandbox's memory, pids and CPU limits. A spec's own ``cgroupsPath`` and limits are used
  as given (its limits then hold in its cgroup, inside the sandbox's). A sandbox whose own
  container does not exist yet (not started) or names no such cgroup leaves the member in
  containerd's default cgroup.
- **rlimits**: where the sandboxer says runc cannot set rlimits in the sandbox's user
  namespace (the annotation :data:`RLIMITS_UNSETTABLE_ANNOTATION` on the sandbox's spec: its
  namespace is owned by its block of host ids and the host's root lacks CAP_SYS_RESOURCE), a
  member joining that namespace leaves out the default ``RLIMIT_NOFILE`` of
  ``oci.generate_spec()``, as the sandbox did (its processes keep the shim's limits); a
  member asking for other rlimits there is refused (FailedPreconditionError naming why).
- **image root**: where the sandboxer bounds its own writable layers but cannot bound a
  member's (the annotation ``_root.MEMBERS_ROOT_ANNOTATION``), a member's image root is
  read-only unless asked for (see ``_members._root``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .. import oci
from .._facts._golang import go_quote
from .._plumbing._connection import Timeout
from .._plumbing._container_store import ContainerStore
from ..errors import FailedPreconditionError, NotFoundError
from ._gvisor import AnnotatedSandbox, annotated_sandbox
from ._root import MEMBERS_ROOT_ANNOTATION, READONLY

__all__ = (
    "MEMBERS_CGROUP_ANNOTATION",
    "RLIMITS_UNSETTABLE_ANNOTATION",
    "MemberDefaults",
    "member_defaults",
    "members_cgroup",
)

MEMBERS_CGROUP_ANNOTATION: Final = "io.sandboxclient.members-cgroup"
"""The annotation on a sandbox container's spec naming the cgroup its members nest under
(cgroupfs form, ``/<namespace>/<sandbox id>``); set by this project's isolating sandboxer."""


RLIMITS_UNSETTABLE_ANNOTATION: Final = "io.sandboxclient.userns-rlimits-unsettable"
"""The annotation (``"true"``) on a sandbox container's spec saying that runc cannot set a
process's rlimits in the sandbox's user namespace; set by this project's isolating
sandboxer."""


def members_cgroup(sandbox_spec: Mapping[str, Any] | None) -> str | None:
    """The cgroup a sandbox's members nest under, from its own container's spec; None when
    the spec names none, or names one that is not an absolute cgroupfs path."""
    annotations = (sandbox_spec or {}).get("annotations")
    path = annotations.get(MEMBERS_CGROUP_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(path, str) or not path.startswith("/") or ":" in path:
        return None
    return path.rstrip("/") or None


def check_seccomp_opt_out(spec: Mapping[str, Any]) -> bool:
    """Whether ``spec`` asks for no seccomp filter in so many words; ValueError when its
    annotation says something else, or says so beside a profile."""
    annotations = spec.get("annotations")
    asked = annotations.get(oci.SECCOMP_ANNOTATION) if isinstance(annotations, dict) else None
    if asked is None:
        return False
    key = f"annotations[{go_quote(oci.SECCOMP_ANNOTATION)}]"
    if asked != oci.SECCOMP_UNCONFINED:
        raise ValueError(
            f"spec {key} must be {go_quote(oci.SECCOMP_UNCONFINED)}, not {go_quote(str(asked))}"
        )
    if ((spec.get("linux") or {}).get("seccomp")) is not None:
        raise ValueError(
            f"spec {key} asks for no seccomp filter but linux.seccomp gives one: give one of them"
        )
    return True


@dataclass(frozen=True, slots=True)
class MemberDefaults:
    """The defaults one sandbox's members get (see the module's docstring)."""

    cgroup_parent: str | None = None
    """The cgroup members nest under; None leaves their cgroup to containerd."""
    rlimits_unsettable: bool = False
    """Whether runc cannot set rlimits in the sandbox's user namespace."""
    annotated: AnnotatedSandbox | None = None
    """How members join a sandbox whose runtime joins them by annotation (gVisor)."""
    readonly_image_root: bool = False
    """Whether a member's image root is read-only unless asked for (``_members._root``)."""

    def apply(self, spec: dict[str, Any], member_id: str, *, joined_users: bool = False) -> None:
        """Give ``spec`` (the member's full spec, changed in place) what it lacks;
        ``joined_users``: it joins the sandbox's user namespace."""
        if self.annotated is not None:
            self.annotated.apply(spec)
        if joined_users and self.rlimits_unsettable:
            _leave_out_rlimits(spec, member_id)
        linux = spec.get("linux")
        if linux is not None and not isinstance(linux, dict):
            raise ValueError("spec linux must be an object")
        own_profile = (linux or {}).get("seccomp") is not None
        if not check_seccomp_opt_out(spec) and not own_profile:
            oci.with_default_seccomp()(spec)
        if self.cgroup_parent is not None and not (spec.get("linux") or {}).get("cgroupsPath"):
            oci.with_cgroup(f"{self.cgroup_parent}/{member_id}")(spec)


def _leave_out_rlimits(spec: dict[str, Any], member_id: str) -> None:
    process = spec.get("process")
    if not isinstance(process, dict) or not process.get("rlimits"):
        return
    if process["rlimits"] != oci.generate_spec()["process"]["rlimits"]:
        raise FailedPreconditionError(
            f"member {go_quote(member_id)} asks for rlimits, which runc cannot set in its "
            "sandbox's user namespace on this host (the namespace is owned by the sandbox's "
            "host ids and the host's root lacks CAP_SYS_RESOURCE): leave process.rlimits "
            "out, pass join_namespaces=False, or make the sandbox with host_users=True"
        )
    del process["rlimits"]


def _handler(spec: Mapping[str, Any] | None) -> object:
    annotations = (spec or {}).get("annotations")
    return (
        annotations.get(oci.RUNTIME_HANDLER_ANNOTATION) if isinstance(annotations, dict) else None
    )


async def member_defaults(
    store: ContainerStore,
    sandbox_id: str,
    *,
    timeout: Timeout,
    sandbox_spec: Mapping[str, Any] | None = None,
) -> MemberDefaults:
    """The defaults for members of ``sandbox_id``, read from its own container's spec.

    Under a runtime handler other than runc, members join the sandbox as its sandboxer
    says (gVisor's: ``_members._gvisor``); where it says nothing, or the sandbox (whose record's
    spec is ``sandbox_spec``) has no container yet (not started), FailedPreconditionError
    says so rather than run one under runc beside the sandbox.
    """
    try:
        found = await store.get(sandbox_id, timeout=timeout)
    except NotFoundError:
        asked = _handler(sandbox_spec)
        if asked not in (None, "runc"):
            raise FailedPreconditionError(
                f"sandbox {go_quote(sandbox_id)} runs under runtime handler "
                f"{go_quote(str(asked))} and is not started: start it before making members, "
                "which join it"
            ) from None
        return MemberDefaults()
    annotations = (found.spec or {}).get("annotations")
    handler = _handler(found.spec)
    if handler not in (None, "runc"):
        annotated = annotated_sandbox(sandbox_id, found.spec, found.runtime, str(handler))
        if annotated is not None:
            return MemberDefaults(annotated=annotated)
        raise FailedPreconditionError(
            f"sandbox {go_quote(sandbox_id)} runs under runtime handler {go_quote(str(handler))}: "
            "it takes no member containers (they would not run under that handler)"
        )
    unsettable = isinstance(annotations, dict) and (
        annotations.get(RLIMITS_UNSETTABLE_ANNOTATION) == "true"
    )
    readonly = (
        isinstance(annotations, dict) and annotations.get(MEMBERS_ROOT_ANNOTATION) == READONLY
    )
    return MemberDefaults(
        members_cgroup(found.spec), rlimits_unsettable=unsettable, readonly_image_root=readonly
    )
