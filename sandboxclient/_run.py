"""The short path: exec a command, feed it, collect what it writes, and leave nothing.

``spawn_process`` creates and starts an exec and hands it over; ``run_process`` also feeds
its stdin, reads stdout and stderr to their end (each kept up to ``max_output`` bytes, the
rest read and dropped so the process never blocks on a full pipe), waits for the exit and
deletes it. A timeout or a cancellation kills and deletes the process before the error
propagates, as clean-up that runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from ._common import utcnow
from ._io import PIPE, StreamArg
from ._process import Process
from ._process_models import CompletedProcess
from .errors import DeadlineExceededError

__all__ = ("DEFAULT_MAX_OUTPUT", "run_process", "spawn_process")

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
"""What ``run()`` keeps of each stream by default, in bytes."""

_CHUNK = 1 << 16


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


Cleanup = Callable[[Coroutine[Any, Any, None]], Awaitable[None]]


async def spawn_process(
    exec_: _Exec,
    exec_id: str,
    spec: Mapping[str, Any],
    *,
    streams: tuple[StreamArg, StreamArg, StreamArg],
    terminal: bool,
    timeout: Any,
) -> Process:
    """Exec and start; a failed or cancelled start kills and deletes what was made."""
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
        await process.discard()
        raise
    return process


def _checked_max_output(max_output: int) -> int:
    if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 0:
        raise ValueError(f"max_output must be an int >= 0 (bytes), got {max_output!r}")
    return max_output


async def run_process(
    exec_: _Exec,
    exec_id: str,
    spec: Mapping[str, Any],
    *,
    input: bytes | None,
    timeout: float | None,
    max_output: int,
    cleanup: Cleanup,
) -> CompletedProcess:
    """Run ``spec`` as exec ``exec_id`` to its end (see the module's docstring)."""
    limit = _checked_max_output(max_output)
    if input is not None and not isinstance(input, bytes | bytearray | memoryview):
        raise TypeError(f"input must be bytes, got {type(input).__name__}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    args = tuple(spec.get("args") or ())
    process: Process | None = None
    try:
        async with asyncio.timeout(timeout):
            process = await exec_(
                exec_id,
                spec,
                stdin=PIPE if input is not None else None,
                stdout=PIPE,
                stderr=PIPE,
            )
            # Waiting before the start: an exit cannot come before anyone listens.
            channel = await process.wait()
            try:
                started = utcnow()
                await process.start()
                output = await asyncio.gather(
                    _feed(process, input),
                    _read_capped(process.stdout, limit),
                    _read_capped(process.stderr, limit),
                )
                status = await channel.get()
            finally:
                channel.close()
    except TimeoutError:
        if process is not None:
            await cleanup(process.discard())
        raise DeadlineExceededError(f"{args[:1]!r}... did not finish within {timeout} s") from None
    except BaseException:
        if process is not None:
            await cleanup(process.discard())
        raise
    if status.error is not None:
        await cleanup(process.discard())
        raise status.error
    await cleanup(_delete(process))
    return CompletedProcess.of(
        args, status.returncode, (output[1], output[2]), started, status.exited_at
    )


async def _delete(process: Process) -> None:
    await process.delete()


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


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    if stream is None:
        return b"", False
    chunks: list[bytes] = []
    kept = 0
    cut = False
    while chunk := await stream.read(_CHUNK):
        room = limit - kept
        if room >= len(chunk):
            chunks.append(chunk)
            kept += len(chunk)
        else:
            if room > 0:
                chunks.append(chunk[:room])
                kept = limit
            cut = True
    return b"".join(chunks), cut
