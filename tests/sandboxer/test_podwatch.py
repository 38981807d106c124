"""When the sandboxer takes a sandbox's default process to be ready for a Stop's SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import pytest

from sandboxclient.sandboxer._podspec import WAIT_FOREVER
from sandboxclient.sandboxer._podwatch import handles_sigterm

pytestmark = pytest.mark.anyio

CATCHER = (
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(3)); "
    "print('set', flush=True); sys.stdin.read()"
)


async def test_a_handler_in_another_program_is_not_the_default_process_trap() -> None:
    # runc's init catches SIGTERM until it execs the sandbox's process: a handler set by
    # anything but the expected program must not count.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CATCHER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"set\n"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await handles_sigterm(proc.pid, WAIT_FOREVER, within=0.3)
        assert loop.time() - started >= 0.3  # it waited the whole bound: not ready
        started = loop.time()
        await handles_sigterm(proc.pid, (sys.executable, "-c", CATCHER), within=5)
        assert loop.time() - started < 1
    finally:
        proc.kill()
        await proc.wait()


async def test_the_default_process_is_ready_once_its_trap_is_set() -> None:
    proc = await asyncio.create_subprocess_exec(*WAIT_FOREVER, start_new_session=True)
    try:
        await handles_sigterm(proc.pid, WAIT_FOREVER, within=10)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 143
    finally:
        with contextlib.suppress(ProcessLookupError):  # the shell's sleep outlives it
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
