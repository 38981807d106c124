"""The short path: exec a command, feed it, collect what it writes, and leave nothing.

``spawn_process`` creates and starts an exec and hands it over; ``run_process`` also feeds
its stdin, reads stdout and stderr to their end (each kept up to ``max_output`` bytes, the
rest read and dropped so the process never blocks on a full pipe), waits for the exit and
deletes it.

A deadline holds whatever the command does. ``timeout`` covers the whole run, from finding
the task to the delete; when it passes, ``run_process`` raises :class:`CommandTimeoutError`
at once, naming the cause: the command did not exit, or it exited and a process it left in
the background held its output open. A cancellation is raised at once too. Either way the
kill and the delete, which must still talk to containerd (and which containerd's shim may
hold for seconds while such a child keeps the output open), run on as clean-up the Client
owns (``Process.discard(timeout=...)``), past a short grace never on the caller's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from ._facts._clock import utcnow
from ._models import ExitStatus
from ._plumbing._stream_args import PIPE, StreamArg
from ._process import Process
from ._process_models import CompletedProcess
from .errors import CommandTimeoutError

__all__ = (
    "CLEANUP_GRACE",
    "DEFAULT_MAX_OUTPUT",
    "Capture",
    "checked_run_arguments",
    "run_process",
    "shown_command",
    "spawn_process",
    "timeout_error",
)

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
"""What ``run()`` keeps of each stream by default, in bytes."""

CLEANUP_GRACE = 0.05
"""How long a timed-out or cancelled ``run()`` waits for the kill and delete of its process
before it raises, in seconds: the margin past its ``timeout``."""

_CHUNK = 1 << 16
_SHOWN = 80  # of a command line, in an error message


class _Exec(Protocol):
    def __call__(
        self,
        exec_id: str,
        process: Mapping[str, Any],
        *,
        stdin: StreamArg = ...,
        stdout: StreamArg = ...,
        stderr: StreamArg = ...,
        terminal: bool = ...,
        timeout: Any = ...,
    ) -> Awaitable[Process]: ...


Prepare = Callable[[], Awaitable[tuple[_Exec, Mapping[str, Any]]]]
"""Find where to exec and the process spec: the first step of a run, under its deadline."""


async def spawn_process(
    exec_: _Exec,
    exec_id: str,
    spec: Mapping[str, Any],
    *,
    streams: tuple[StreamArg, StreamArg, StreamArg],
    terminal: bool,
    timeout: Any,
) -> Process:
    """Exec and start; a failed or cancelled start has what was made killed and deleted."""
    stdin, stdout, stderr = streams
    process = await exec_(
        exec_id,
        spec,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        terminal=terminal,
        timeout=timeout,
    )
    try:
        await process.start(timeout=timeout)
    except BaseException:
        await process.discard(timeout=0)
        raise
    return process


def _checked_max_output(max_output: int) -> int:
    if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 0:
        raise ValueError(f"max_output must be an int >= 0 (bytes), got {max_output!r}")
    return max_output


def checked_run_arguments(input: object, timeout: object, max_output: object) -> None:
    """Refuse bad ``run()`` arguments before anything is sent: TypeError or ValueError."""
    _checked_max_output(max_output)  # type: ignore[arg-type]
    if input is not None and not isinstance(input, bytes | bytearray | memoryview):
        raise TypeError(f"input must be bytes, got {type(input).__name__}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


class Capture:
    """One stream read to its end, kept up to a limit; what was read survives a cancel."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._kept = 0
        self.cut = False

    @property
    def data(self) -> bytes:
        """What was kept."""
        return b"".join(self._chunks)

    async def read(self, stream: asyncio.StreamReader | None) -> None:
        """Read ``stream`` to its end, keeping up to the limit (None: nothing to read)."""
        if stream is None:
            return
        while chunk := await stream.read(_CHUNK):
            room = self._limit - self._kept
            if room >= len(chunk):
                self._chunks.append(chunk)
                self._kept += len(chunk)
            else:
                if room > 0:
                    self._chunks.append(chunk[:room])
                    self._kept = self._limit
                self.cut = True


class _Run:
    """What one run has got to: the process, whether it started, its exit."""

    def __init__(self) -> None:
        self.process: Process | None = None
        self.started_at: datetime | None = None
        self.started = False
        self.exit: ExitStatus | None = None


async def run_process(
    prepare: Prepare,
    exec_id: str,
    command: tuple[str, ...],
    *,
    input: bytes | None,
    timeout: float | None,
    max_output: int,
) -> CompletedProcess:
    """Run ``command`` as exec ``exec_id`` to its end (see the module's docstring)."""
    checked_run_arguments(input, timeout, max_output)
    out, err = Capture(max_output), Capture(max_output)
    run = _Run()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            status = await _run(prepare, exec_id, run, input, out, err)
    except BaseException:
        if run.process is not None:
            # The Client owns the kill and delete; they usually end within the grace, so
            # that nothing is left when this returns, else they go on in the background.
            await run.process.discard(timeout=CLEANUP_GRACE)
        if deadline.expired():
            raise timeout_error(
                command, timeout, run, out, err, subject="command {}", ended="killed"
            ) from None
        raise
    output = ((out.data, out.cut), (err.data, err.cut))
    return CompletedProcess.of(command, status.returncode, output, run.started_at, status.exited_at)


async def _run(
    prepare: Prepare,
    exec_id: str,
    run: _Run,
    input: bytes | None,
    out: Capture,
    err: Capture,
) -> ExitStatus:
    exec_, spec = await prepare()
    process = run.process = await exec_(
        exec_id, spec, stdin=PIPE if input is not None else None, stdout=PIPE, stderr=PIPE
    )
    # Waiting before the start: an exit cannot come before anyone listens.
    channel = await process.wait()
    try:
        run.started_at = utcnow()
        await process.start()
        run.started = True

        async def exited() -> ExitStatus:
            run.exit = await channel.get()
            return run.exit

        *_, status = await asyncio.gather(
            _feed(process, input), out.read(process.stdout), err.read(process.stderr), exited()
        )
    finally:
        channel.close()
    if status.error is not None:
        raise status.error
    await process.delete()
    return status


def shown_command(args: Sequence[str]) -> str:
    """A command line as an error message shows it: shell-quoted, cut at 80 characters."""
    shown = shlex.join(args)
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."


class Progress(Protocol):
    """How far a run got, as :func:`timeout_error` reads it."""

    @property
    def started(self) -> bool:
        """Whether the command was started."""

    @property
    def exit(self) -> ExitStatus | None:
        """Its exit, once heard."""


def timeout_error(
    command: tuple[str, ...],
    timeout: float | None,
    progress: Progress,
    out: Capture,
    err: Capture,
    *,
    subject: str,
    ended: str,
) -> CommandTimeoutError:
    """The error of a run past its ``timeout``, saying how far ``progress`` got:
    ``subject`` names what ran (``{}`` for the command line), ``ended`` what was done to
    it."""
    what = subject.format(shown_command(command))
    returncode, exit = None, progress.exit
    if not progress.started:
        message = f"{what} could not be started within {timeout} s (its timeout)"
    elif exit is None:
        message = f"{what} did not exit within {timeout} s (its timeout): {ended}"
    else:
        returncode = exit.returncode
        message = (
            f"{what} exited with {returncode}, but its output did not end within "
            f"{timeout} s (its timeout): a process it left in the background holds its stdout "
            "or stderr open (detach such a child: setsid, and send its output elsewhere)"
        )
    return CommandTimeoutError(
        message,
        command=command,
        timeout=timeout,
        returncode=returncode,
        stdout=out.data,
        stderr=err.data,
    )


async def _feed(process: Process, data: bytes | None) -> None:
    stdin = process.stdin
    if stdin is None:
        return
    if data:
        stdin.write(data)
        # A process that does not read its input is no reason to fail its run.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.drain()
    await process.close_stdin()
