"""What ``Sandbox.new_container`` asks for: a member's request, its sandbox's facts resolved.

The member's defaults come from its sandbox's record (``_members._spec``): under gVisor, the
sandbox's kernel and runtime (nothing on the host to join); otherwise, with
``join_namespaces``, the namespaces of the sandbox's process, named by its pid and start time
(``_members._joined``) and, where it has one, its user namespace (``_members._userns``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._facts._golang import go_quote
from .._members._joined import JoinedProcess, sandbox_process
from .._members._spec import member_defaults
from .._members._userns import MemberUsers, sandbox_users
from .._models import SandboxInfo, SandboxStatus
from .._plumbing._connection import Timeout
from .._plumbing._container_store import ContainerStore
from ..errors import FailedPreconditionError
from ._container_create import DEFAULT_RUNTIME, ContainerOptions, ContainerRequest

__all__ = ("member_request",)


async def member_request(
    container_id: str,
    sandbox: SandboxInfo,
    *,
    store: ContainerStore,
    known_pid: int | None,
    known_started: int | None,
    status: Callable[[], Awaitable[SandboxStatus]],
    runtime: str | None,
    join_namespaces: bool,
    writable_root: bool,
    options: ContainerOptions,
    timeout: Timeout,
) -> ContainerRequest:
    """The request for member ``container_id`` of ``sandbox``, whose process's pid is
    ``known_pid`` if its handle started it (the process's start time then: ``known_started``,
    if it was read), else read from ``status``."""
    join_pid: int | None = None
    process: JoinedProcess | None = None
    users: MemberUsers | None = None
    member = await member_defaults(store, sandbox.id, timeout=timeout, sandbox_spec=sandbox.spec)
    if member.annotated is not None:  # one gVisor kernel: nothing on the host to join
        joined = member.annotated.runtime_for(
            runtime, options.get("runtime_options"), join_namespaces=join_namespaces
        )
        runtime, options["runtime_options"] = joined.name, joined.options
        join_namespaces, users = False, member.annotated.users
    if join_namespaces:
        join_pid = known_pid or (await status()).pid or None
        if join_pid is None:
            raise FailedPreconditionError(
                f"sandbox {go_quote(sandbox.id)} has no running process whose namespaces a "
                "container could join: start it first, or pass join_namespaces=False"
            )
        noted = known_started if join_pid == known_pid else None
        process = sandbox_process(join_pid, sandbox.id, noted)  # before the maps read, and after
        users = sandbox_users(join_pid, sandbox.id)
    return ContainerRequest(
        container_id,
        sandbox_id=sandbox.id,
        runtime=runtime or sandbox.runtime.name or DEFAULT_RUNTIME,
        join_pid=join_pid,
        joined=process,
        users=users,
        member=member,
        writable_root=writable_root,
        **options,
    )
