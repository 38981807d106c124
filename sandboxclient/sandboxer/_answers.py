"""What every sandbox controller here answers alike, whatever runs its sandboxes.

Both sandboxers read a Create's sandbox and id, merge an Update's fields, name the host's
platform and answer a Wait from an exit (or its absence) the same way, with the same
refusals; this module is that part, so that they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import datetime
from typing import Final

from .._facts._golang import go_arch, go_quote
from .._facts._validation import identifier_problem
from .._serve._fields import SANDBOX_FIELDS, copy_message, required, required_sandbox
from .._serve._refusals import failed_precondition, invalid_argument, not_found, unavailable
from .._wire._pb import PlatformPb, SandboxPb, sandbox_pb
from ._timelimits import time_limits

__all__ = (
    "exit_answer",
    "host_platform",
    "new_sandbox",
    "refuse_change_once_started",
    "update_target",
    "updated_sandbox",
)

# Empty labels are dropped, and named entries the update lacks are removed.
_UPDATABLE: Final = dataclasses.replace(SANDBOX_FIELDS, drop_empty=True)


def new_sandbox(message: sandbox_pb.ControllerCreateRequest) -> tuple[SandboxPb, str]:
    """A Create's sandbox and its id (the request's, else the sandbox's); INVALID_ARGUMENT
    when the sandbox is missing or the id is not one containerd accepts."""
    sandbox = required_sandbox(message.sandbox)
    sandbox_id = message.sandbox_id or sandbox.sandbox_id
    problem = identifier_problem(sandbox_id)
    if problem is not None:
        raise invalid_argument(f"invalid sandbox ID: {problem}")
    time_limits(sandbox)  # refuses labels that name no limit
    return sandbox, sandbox_id


def update_target(message: sandbox_pb.ControllerUpdateRequest) -> tuple[SandboxPb, str]:
    """An Update's sandbox and the id of the one it changes; INVALID_ARGUMENT without one."""
    sandbox = required(message.sandbox, "sandbox")
    return sandbox, message.sandbox_id or sandbox.sandbox_id


def updated_sandbox(
    current: SandboxPb, message: sandbox_pb.ControllerUpdateRequest, sandbox: SandboxPb
) -> SandboxPb:
    """``current`` with the fields an Update names (``labels[.k]``, ``extensions[.k]``,
    ``spec``, ``runtime``; none means all four) taken from ``sandbox``, the Update's."""
    sandbox_id = message.sandbox_id or sandbox.sandbox_id
    if sandbox.runtime is None:  # an unset runtime leaves the one there is
        sandbox = copy_message(sandbox)
        sandbox.runtime = current.runtime
    updated = _UPDATABLE.apply(current, sandbox, message.fields, f"sandbox {go_quote(sandbox_id)}")
    time_limits(updated)  # refuses labels that name no limit
    return updated


def _spec_key(sandbox: SandboxPb) -> tuple[str, bytes]:
    spec = sandbox.spec
    return ("", b"") if spec is None else (spec.type_url, spec.value)


def _runtime_key(sandbox: SandboxPb) -> tuple[str, str, bytes]:
    runtime = sandbox.runtime
    if runtime is None:
        return ("", "", b"")
    options = runtime.options
    return (runtime.name, *(("", b"") if options is None else (options.type_url, options.value)))


def refuse_change_once_started(current: SandboxPb, updated: SandboxPb, sandbox_id: str) -> None:
    """FAILED_PRECONDITION, naming it, when an Update changes the spec or the runtime of a
    sandbox that was started (or is starting): what runs keeps what it was started with,
    so the change would answer OK and never apply. An unset spec and an empty one are the
    same."""
    for field, key in (("spec", _spec_key), ("runtime", _runtime_key)):
        if key(current) != key(updated):
            raise failed_precondition(
                f"cannot update {field} of sandbox {go_quote(sandbox_id)}: it was started, "
                f"and what runs keeps the {field} it was started with"
            )


def host_platform() -> sandbox_pb.ControllerPlatformResponse:
    """This host's platform, named as containerd names it (``linux``/``amd64``...)."""
    arch, variant = go_arch()
    return sandbox_pb.ControllerPlatformResponse(
        platform=PlatformPb(os=sys.platform, architecture=arch, variant=variant)
    )


def exit_answer(
    sandbox_id: str,
    exit_status: int | None,
    exited_at: datetime | None,
    *,
    closed: bool,
) -> sandbox_pb.ControllerWaitResponse:
    """A Wait's answer once the sandbox settled: its exit, or, when none was recorded,
    UNAVAILABLE (the controller closed) or NOT_FOUND (shut down before it exited)."""
    if exit_status is None:
        if closed:
            raise unavailable("the sandbox controller is closed")
        raise not_found(f"sandbox {go_quote(sandbox_id)} was shut down before it exited")
    return sandbox_pb.ControllerWaitResponse(exit_status=exit_status, exited_at=exited_at)
