"""Helpers the server-side tests share."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError


def pid_gone(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie nobody has reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for ``pid`` to exit, woken by its pidfd (no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await readable
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def expect_error(call: Any, status: Status, message: str | None = None) -> str:
    """Await ``call``, which must fail with ``status`` (and ``message``, if given)."""
    with pytest.raises(GRPCError) as info:
        await call
    assert info.value.status is status, info.value
    text = info.value.message or ""
    if message is not None:
        assert text == message
    return text
