"""FIFOs: the client's IO folders a test checks are gone, and a line a process writes into
one, waited for on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ("fifo_dirs", "out_dirs", "read_fifo_line")


def fifo_dirs() -> set[str]:
    """The client's FIFO folders in the temporary directory."""
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("sandboxclient-io-")}


def out_dirs(home: Path) -> list[str]:
    """The folders of a sandbox's output FIFOs (``stdout=PIPE``, ``run()``) in ``home``, a
    test's own temporary directory (the ``fifo_home`` fixture)."""
    return sorted(p.name for p in home.iterdir() if p.name.startswith("sandboxclient-out-"))


async def read_fifo_line(path: str) -> bytes:
    """Wait (on the event loop, no polling) for a line written into FIFO ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(fd, 100)
            if data and not got.done():
                got.set_result(data)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(20):
            return await got
    finally:
        loop.remove_reader(fd)
        os.close(fd)
