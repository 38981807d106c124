"""A member's image root in a sandbox whose writable layers are bounded: read-only unless
asked for in so many words.

The isolating sandboxer keeps its sandbox's own writable root on a bounded tmpfs (see
``sandboxer/_rootdisk.py``), but it cannot do so for a member: containerd hands a member's
task, and the mounts its snapshotter gives for the member's snapshot, straight to the
sandbox's shim, and the sandboxer sees neither. A member's writable layer would be the
overlay snapshot's upper directory on containerd's disk, bounded by nothing. So where the
sandbox's sandboxer says its layers are bounded (the annotation
:data:`MEMBERS_ROOT_ANNOTATION` on the spec of the sandbox's own container), a member made
with ``image=``:

- with no spec of the caller's, gets a read-only root and a private tmpfs on ``/tmp`` as
  its sandbox has (64 MiB, ``nr_inodes=16384``);
- with a spec whose root is read-only, is made as its spec says;
- with a spec whose root is not read-only (``oci.generate_spec()``'s is not), is refused
  (FailedPreconditionError naming why and the ways out) rather than run on an unbounded
  layer;
- with ``writable_root=True`` (``Sandbox.new_container``) keeps a writable root on
  containerd's disk, as asked.
"""

from __future__ import annotations

from typing import Any, Final

from .._facts._golang import go_quote
from ..errors import FailedPreconditionError

__all__ = ("MEMBERS_ROOT_ANNOTATION", "READONLY", "TMP_MOUNT", "member_root")

MEMBERS_ROOT_ANNOTATION: Final = "io.sandboxclient.members-root"
"""The annotation on a sandbox container's spec saying (:data:`READONLY`) that its members'
image roots are read-only unless asked otherwise; set by this project's isolating
sandboxer, whose own layers are bounded where a member's cannot be."""

READONLY: Final = "readonly"
""":data:`MEMBERS_ROOT_ANNOTATION`'s one value."""

TMP_MOUNT: Final = {
    "destination": "/tmp",
    "type": "tmpfs",
    "source": "tmpfs",
    "options": ["nosuid", "nodev", "mode=1777", "size=64m", "nr_inodes=16384"],
}
"""The private ``/tmp`` a member with a read-only image root gets (its sandbox's size)."""


def member_root(spec: dict[str, Any], member_id: str, *, given: bool, writable: bool) -> None:
    """Make the image root of member ``member_id`` (its full ``spec``, changed in place;
    ``given``: the caller gave it) read-only, with a private ``/tmp``, unless ``writable``
    (see the module's docstring)."""
    if writable:
        return
    root = spec.setdefault("root", {})
    if not isinstance(root, dict):
        raise ValueError("spec root must be an object")
    if root.get("readonly") is not True:
        if given:
            raise FailedPreconditionError(
                f"member {go_quote(member_id)}'s image root would be writable (its spec's "
                "root.readonly is not true), and its sandbox's sandboxer cannot bound a "
                "member's writable layer: it would grow on containerd's disk. Give the spec "
                "root.readonly true (a tmpfs mount for what it writes), or pass "
                "writable_root=True to write on containerd's disk, unbounded"
            )
        root["readonly"] = True
    if given:
        return
    mounts = spec.setdefault("mounts", [])
    if isinstance(mounts, list) and not any(
        isinstance(m, dict) and m.get("destination") == "/tmp" for m in mounts
    ):
        mounts.append({**TMP_MOUNT, "options": list(TMP_MOUNT["options"])})
