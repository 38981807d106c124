"""``sandboxctl exec``: run a command in a sandbox, its output streamed to this terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator, Sequence

from .._client import Client
from .._plumbing._pipes import read_pipe
from .._plumbing._stream_args import PIPE
from .._process import Process
from .._sandbox import Sandbox
from ._base import Outcome
from ._render import exit_code

__all__ = ("cmd_exec", "stream_exec")


async def cmd_exec(
    client: Client,
    sandbox_id: str,
    command: Sequence[str],
    *,
    interactive: bool = False,
    terminal: bool = False,
) -> Outcome:
    """Exec ``command`` into the sandbox's own task, stream its output, exit with its code."""
    if not command:
        raise ValueError("a command to run is required")
    sb = await client.load_sandbox(sandbox_id)
    code = await stream_exec(sb, command, interactive=interactive, terminal=terminal)
    return Outcome({"id": sandbox_id, "returncode": code}, "", exit_code(code))


async def stream_exec(
    sb: Sandbox, command: Sequence[str], *, interactive: bool, terminal: bool
) -> int:
    """Run ``command`` in ``sb`` with this process's stdio; the process's exit code.

    Leaving early (Ctrl-C, an error) kills and deletes the process.
    """
    process = await sb.spawn(
        *command,
        stdin=PIPE if interactive else None,
        stdout=PIPE,
        stderr=None if terminal else PIPE,
        terminal=terminal,
    )
    async with process, _window_size(process, terminal):
        with _raw_terminal(terminal and interactive):
            pumps = [
                _copy_out(process.stdout, sys.stdout.fileno()),
                _copy_out(process.stderr, sys.stderr.fileno()),
            ]
            feeding = asyncio.ensure_future(_feed_stdin(process)) if interactive else None
            try:
                await asyncio.gather(*pumps)
                status = await process.wait_exit()
            finally:
                if feeding is not None:
                    feeding.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError):
                        await feeding
    if status.error is not None:
        raise status.error
    return status.returncode


async def _copy_out(stream: asyncio.StreamReader | None, fd: int) -> None:
    if stream is None:
        return
    while chunk := await stream.read(1 << 16):
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]


async def _feed_stdin(process: Process) -> None:
    stdin = process.stdin
    assert stdin is not None
    loop = asyncio.get_running_loop()
    transport, reader = await read_pipe(loop, os.dup(0), limit=1 << 16)
    try:
        while chunk := await reader.read(1 << 16):
            stdin.write(chunk)
            await stdin.drain()
        await process.close_stdin()
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def _window_size(process: Process, terminal: bool) -> AsyncIterator[None]:
    """Give the pty this terminal's size, now and whenever it changes, for the body."""
    if not terminal or not os.isatty(sys.stdout.fileno()):
        yield
        return
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    loop.add_signal_handler(signal.SIGWINCH, changed.set)

    async def follow() -> None:
        while True:
            size = os.get_terminal_size(sys.stdout.fileno())
            await process.resize(size.columns, size.lines)
            await changed.wait()
            changed.clear()

    following = asyncio.ensure_future(follow())
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await following


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    """This terminal in raw mode for the body (keys go to the pty as they are)."""
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
