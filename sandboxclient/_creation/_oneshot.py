"""A sandbox whose first command is its own process, and the one-shot run built on it.

``new_sandbox(id, command=(...))`` makes ``command`` the sandbox's own process (its PID 1,
as Modal's ``Sandbox.create(*args)`` and ``ctr run`` do): no waiting process and no exec
into it. Its output goes to the sandbox's log, or with ``stdout=PIPE`` to its handle (see
``_sandbox_io``), its exit to ``wait()``.

``Client.run(*args)`` makes such a sandbox with ``stdout=PIPE`` (and ``stderr=PIPE``, or
what ``stderr=`` says), starts it, reads its output as it comes, waits for its exit and
shuts it down: one call for what is otherwise four (``new_sandbox``, ``start``, ``run`` of
an exec, ``shutdown``) and an exec fewer. stdout and stderr come apart by default, as
``Sandbox.run``'s do; ``stderr=STDOUT`` makes them one stream (each stream in its order, the
two interleaved as the sandbox's writers copy them), ``DEVNULL`` drops stderr. A sandboxer
that does not hand the output over is refused, the sandbox shut down. The client keeps
``max_output`` bytes of each stream, reads the rest and drops it: a flood costs the sandbox
its writes, never the client its memory.

``timeout`` covers the whole run: past it, :class:`~sandboxclient.errors.CommandTimeoutError`
is raised at once, and the sandbox's shutdown goes on as clean-up the Client owns (closing the
Client waits for it), as a timed-out ``Sandbox.run`` leaves its exec's kill and delete.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypedDict

from .._facts._clock import utcnow
from .._facts._network import Bandwidth, EgressPolicy, PortMapping
from .._models import ExitStatus
from .._plumbing._connection import Connection
from .._plumbing._sandbox_io import ERROR_LABEL, OUTPUT_LABEL, drain, plan_output
from .._plumbing._stream_args import PIPE, StreamArg
from .._process_models import CompletedProcess
from .._run import CLEANUP_GRACE, Capture, checked_run_arguments, timeout_error
from .._sandbox import Sandbox
from .._wire._convert import AnyLike
from ..errors import ContainerdError
from ._create import ROLLBACK_TIMEOUT

__all__ = (
    "RUN_TAKES",
    "SandboxOptions",
    "checked_command",
    "run_oneshot",
    "with_command",
)

RUN_TAKES: Final = (
    "the command is its arguments, its stdout is read (stderr= says where its stderr goes)"
)
"""What ``run()`` says when given ``command=`` or ``stdout=``."""
_log = logging.getLogger("sandboxclient")


class SandboxOptions(TypedDict, total=False):
    """The options of ``Client.new_sandbox`` that ``Client.run`` passes on (see there)."""

    runtime: str | None
    runtime_options: AnyLike | None
    image: str | None
    spec: Mapping[str, Any] | None
    labels: Mapping[str, str] | None
    extensions: Mapping[str, AnyLike] | None
    sandboxer: str | None
    cpu: float | None
    memory: int | str | None
    pids: int | None
    host_users: bool | None
    runtime_handler: str | None
    network: str | None
    ports: Sequence[PortMapping] | None
    egress: EgressPolicy | None
    bandwidth: Bandwidth | None
    lifetime: float | None
    idle_timeout: float | None
    disk: int | str | None


def checked_command(command: object) -> tuple[str, ...]:
    """``command`` as a tuple of strings: TypeError for a bare string or non-strings,
    ValueError for an empty one or a NUL byte."""
    if isinstance(command, str | bytes):
        raise TypeError(
            "command must be a sequence of strings, not one string: "
            f"command=({command!r},) or command=shlex.split(...)"
        )
    if not isinstance(command, Sequence):
        raise TypeError(f"command must be a sequence of strings, got {type(command).__name__}")
    checked = tuple(command)
    if not checked:
        raise ValueError("command must name a program: it is empty")
    for index, arg in enumerate(checked):
        if not isinstance(arg, str):
            raise TypeError(f"command[{index}] must be a str, got {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError(f"command[{index}] contains a NUL byte")
    return checked


def with_command(
    spec: Mapping[str, Any] | None, command: Sequence[str] | None
) -> Mapping[str, Any] | None:
    """``spec`` with ``command`` as its ``process.args`` (a new spec of that alone when
    None); ValueError when the spec has args of its own: the command is given once."""
    if command is None:
        return spec
    args = list(checked_command(command))
    if spec is None:
        return {"process": {"args": args}}
    process = spec.get("process")
    if process is not None and not isinstance(process, Mapping):
        raise ValueError("spec's process must be a mapping")
    if process and process.get("args"):
        raise ValueError(
            "command= and spec's process.args both name the sandbox's process: give one"
        )
    return {**spec, "process": {**(process or {}), "args": args}}


class _Progress:
    """How far one run got: its sandbox, whether it started, its exit."""

    def __init__(self) -> None:
        self.sandbox: Sandbox | None = None
        self.started = False
        self.exit: ExitStatus | None = None


NewSandbox = Callable[..., Awaitable[Sandbox]]
"""``Client.new_sandbox``."""


async def run_oneshot(
    new_sandbox: NewSandbox,
    connection: Connection,
    command: Sequence[str],
    sandbox_id: str | None,
    timeout: float | None,
    max_output: int,
    stderr: StreamArg,
    options: SandboxOptions,
) -> CompletedProcess:
    """``Client.run``: see the module's docstring."""
    for own in ("command", "stdout"):
        if own in options:
            raise TypeError(f"run() takes no {own}=: {RUN_TAKES}")
    args = checked_command(command)
    checked_run_arguments(None, timeout, max_output)
    plan_output(PIPE, stderr)  # checked before anything is made
    labels = dict(options.pop("labels", None) or {})
    for label in (OUTPUT_LABEL, ERROR_LABEL):
        if label in labels:
            raise ValueError(f"label {label} is run()'s own")
    sandbox_id = sandbox_id or f"run-{uuid.uuid4().hex[:16]}"
    out, err = Capture(max_output), Capture(max_output)
    progress = _Progress()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            given: dict[str, Any] = {**options, "labels": labels, "stderr": stderr}
            sb = progress.sandbox = await new_sandbox(
                sandbox_id, command=args, stdout=PIPE, **given
            )
            status, started_at = await _run(sb, out, err, progress)
    except BaseException:
        if progress.sandbox is not None:
            sb = progress.sandbox
            work = connection.start_cleanup(_discard(sb), name=f"sandboxclient-run-{sb.id}")
            await asyncio.wait([work], timeout=CLEANUP_GRACE)
        if deadline.expired():
            raise timeout_error(
                args, timeout, progress, out, err, subject="sandbox running {}", ended="shut down"
            ) from None
        raise
    output = ((out.data, out.cut), (err.data, err.cut))
    return CompletedProcess.of(args, status.returncode, output, started_at, status.exited_at)


async def _run(
    sb: Sandbox, out: Capture, err: Capture, progress: _Progress
) -> tuple[ExitStatus, datetime]:
    started_at = utcnow()
    await sb.start()  # it waits for the exit from before the Start on
    progress.started = True

    async def exited() -> ExitStatus:
        progress.exit = await sb.wait_exit()
        return progress.exit

    try:
        async with asyncio.TaskGroup() as group:  # one failing cancels the others
            group.create_task(out.read(sb.stdout))
            group.create_task(err.read(sb.stderr))
            waited = group.create_task(exited())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first error, as the caller knows it
    status = waited.result()
    if status.error is not None:
        raise status.error
    await sb.shutdown()
    return status, started_at


async def _discard(sb: Sandbox) -> None:
    """Shut the sandbox down, which lets go of its output (held till then: a Start under
    way must find the FIFOs as it left them), and read what is left of it to its end, which
    closes it; a failure is logged."""
    try:
        await sb.shutdown(timeout=ROLLBACK_TIMEOUT)
        async with asyncio.timeout(ROLLBACK_TIMEOUT):
            await drain(sb.stdout, sb.stderr)
    except (ContainerdError, TimeoutError) as exc:
        _log.warning("shutting down sandbox %s after run(): %r", sb.id, exc)
