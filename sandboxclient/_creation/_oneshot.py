"""A sandbox whose first command is its own process, and the one-shot run built on it.

``new_sandbox(id, command=(...))`` makes ``command`` the sandbox's own process (its PID 1,
as Modal's ``Sandbox.create(*args)`` and ``ctr run`` do): no waiting process and no exec
into it. Its output goes to the sandbox's log, its exit to ``wait()``.

``Client.run(*args)`` makes such a sandbox, starts it, reads its output as it comes, waits
for its exit and shuts it down: one call for what is otherwise four (``new_sandbox``,
``start``, ``run`` of an exec, ``shutdown``) and an exec fewer. The output reaches the client
through a FIFO of its own, in a private folder (mode 0700), whose path travels as the
sandbox's label :data:`OUTPUT_LABEL`: the sandboxer gives it to the sandbox's process as its
stdout and stderr (one stream, as its log would hold them: each stream in its order, the two
interleaved as containerd's shim copies them) in place of
the log, and says so in Start's answer (:data:`OUTPUT_ATTACHED_LABEL`); a sandboxer that does
not is refused, the sandbox shut down. The client keeps ``max_output`` bytes of it, reads
the rest and drops it: a flood costs the sandbox its writes, never the client its memory.

``timeout`` covers the whole run: past it, :class:`~sandboxclient.errors.CommandTimeoutError`
is raised at once, and the sandbox's shutdown goes on as clean-up the Client owns (closing the
Client waits for it), as a timed-out ``Sandbox.run`` leaves its exec's kill and delete.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypedDict

from .._clock import utcnow
from .._connection import Connection
from .._io import read_pipe
from .._models import ExitStatus
from .._network import Bandwidth, EgressPolicy, PortMapping
from .._process_models import CompletedProcess
from .._run import CLEANUP_GRACE, Capture, checked_run_arguments, shown_command
from .._sandbox import Sandbox
from .._wire._convert import AnyLike
from ..errors import CommandTimeoutError, ContainerdError, FailedPreconditionError
from ._create import ROLLBACK_TIMEOUT

__all__ = (
    "OUTPUT_ATTACHED_LABEL",
    "OUTPUT_LABEL",
    "SandboxOptions",
    "checked_command",
    "run_oneshot",
    "with_command",
)

OUTPUT_LABEL: Final = "io.sandboxclient.output"
"""A sandbox label: the absolute path of a FIFO the sandboxer gives the sandbox's own process
as its stdout and stderr, in place of its log (``Client.run`` sets it)."""
OUTPUT_ATTACHED_LABEL: Final = "io.sandboxclient.output-attached"
"""Set to ``"true"`` among the labels of Start's answer by a sandboxer that did so."""

_READ_LIMIT: Final = 2**16
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


class _Output:
    """The FIFO the sandbox's output comes through, made in a private folder before the
    sandbox exists: its read end, and a write end of our own.

    Ours keeps the FIFO from ending before the sandbox's writers hold it: containerd's shim
    opens and closes it once at Tasks.Create, then opens its writer asynchronously. It is let
    go of once the sandbox's exit is known (:meth:`release`); the output ends when the
    sandbox's last writer closes, once all it wrote is read.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="sandboxclient-out-")  # mode 0700
        self.path = os.path.join(self._dir, "output")
        self.reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._writer = -1

    async def open(self) -> None:
        """Make the FIFO and open both ends."""
        os.mkfifo(self.path, 0o600)
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            os.close(fd)
            raise
        loop = asyncio.get_running_loop()
        self._transport, self.reader = await read_pipe(loop, fd, limit=_READ_LIMIT)

    def release(self) -> None:
        """Let go of our write end: the output ends with the sandbox's. Idempotent."""
        if self._writer >= 0:
            os.close(self._writer)
            self._writer = -1

    def close(self) -> None:
        """Close both ends and remove the folder; idempotent."""
        self.release()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        shutil.rmtree(self._dir, ignore_errors=True)


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
    *,
    sandbox_id: str | None,
    timeout: float | None,
    max_output: int,
    options: SandboxOptions,
) -> CompletedProcess:
    """``Client.run``: see the module's docstring."""
    if "command" in options:
        raise TypeError("run() takes the command as its arguments, not as command=")
    args = checked_command(command)
    checked_run_arguments(None, timeout, max_output)
    labels = dict(options.pop("labels", None) or {})
    if OUTPUT_LABEL in labels:
        raise ValueError(f"label {OUTPUT_LABEL} is run()'s own")
    sandbox_id = sandbox_id or f"run-{uuid.uuid4().hex[:16]}"
    out = Capture(max_output)
    progress = _Progress()
    output = _Output()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await output.open()
            labels[OUTPUT_LABEL] = output.path
            status, started_at = await _run(
                new_sandbox, sandbox_id, args, labels, options, output, out, progress
            )
    except BaseException:
        if progress.sandbox is None:
            output.close()
        else:
            sb = progress.sandbox
            work = connection.start_cleanup(_discard(sb, output), name=f"sandboxclient-run-{sb.id}")
            await asyncio.wait([work], timeout=CLEANUP_GRACE)
        if deadline.expired():
            raise _timed_out(args, timeout, progress, out) from None
        raise
    output.close()
    return CompletedProcess.of(
        args, status.returncode, ((out.data, out.cut), (b"", False)), started_at, status.exited_at
    )


async def _run(
    new_sandbox: NewSandbox,
    sandbox_id: str,
    args: tuple[str, ...],
    labels: dict[str, str],
    options: SandboxOptions,
    output: _Output,
    out: Capture,
    progress: _Progress,
) -> tuple[ExitStatus, datetime]:
    given: dict[str, Any] = {**options, "labels": labels}
    sb = progress.sandbox = await new_sandbox(sandbox_id, command=args, **given)
    # Waiting before the start: the Wait call is in the sandboxer when the exit comes.
    channel = await sb.wait()
    try:
        started_at = utcnow()
        started = await sb.start()
        progress.started = True
        if started.labels.get(OUTPUT_ATTACHED_LABEL) != "true":
            raise FailedPreconditionError(
                f"sandboxer {sb.sandboxer!r} did not give the sandbox's output to the client "
                f"(it does not read label {OUTPUT_LABEL}): run() needs this project's sandboxers"
            )

        async def exited() -> ExitStatus:
            progress.exit = await channel.get()
            output.release()  # the shim's writer is open by now: the output ends with it
            return progress.exit

        _, status = await asyncio.gather(out.read(output.reader), exited())
    finally:
        channel.close()
    if status.error is not None:
        raise status.error
    await sb.shutdown()
    return status, started_at


async def _discard(sb: Sandbox, output: _Output) -> None:
    """Shut the sandbox down, then let go of its output (held till then: a Start under way
    must find the FIFO as it left it); a failure is logged."""
    try:
        await sb.shutdown(timeout=ROLLBACK_TIMEOUT)
    except ContainerdError as exc:
        _log.warning("shutting down sandbox %s after run(): %s", sb.id, exc)
    finally:
        output.close()


def _timed_out(
    args: tuple[str, ...], timeout: float | None, progress: _Progress, out: Capture
) -> CommandTimeoutError:
    shown = shown_command(args)
    returncode = None
    if not progress.started:
        message = f"sandbox running {shown} could not be started within {timeout} s (its timeout)"
    elif progress.exit is None:
        message = (
            f"sandbox running {shown} did not exit within {timeout} s (its timeout): shut down"
        )
    else:
        returncode = progress.exit.returncode
        message = (
            f"sandbox running {shown} exited with {returncode}, but its output did not end "
            f"within {timeout} s (its timeout): a process it left in the background holds "
            "its stdout or stderr open"
        )
    return CommandTimeoutError(
        message, command=args, timeout=timeout, returncode=returncode, stdout=out.data, stderr=b""
    )
