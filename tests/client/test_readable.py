"""``readable(fd)``: the one wait, through the event loop, for a descriptor to be readable
(the client's FIFOs, the sandboxer's pidfds, the tests' helpers), its reader always removed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from sandboxclient._plumbing._pipes import readable

pytestmark = pytest.mark.anyio


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


async def started(fd: int) -> asyncio.Future[None]:
    """``readable(fd)`` as a task, its reader added."""
    waiting = asyncio.ensure_future(readable(fd))
    await asyncio.sleep(0)  # one turn: it runs up to its wait
    assert not waiting.done()
    return waiting


async def test_it_returns_once_data_comes_and_removes_its_reader(pipe: tuple[int, int]) -> None:
    r, w = pipe
    waiting = await started(r)
    os.write(w, b"x")
    await asyncio.wait_for(waiting, 10)
    assert asyncio.get_running_loop().remove_reader(r) is False  # none left


async def test_it_returns_once_the_writers_have_closed() -> None:
    r, w = os.pipe()
    try:
        waiting = await started(r)
        os.close(w)
        await asyncio.wait_for(waiting, 10)
        assert os.read(r, 1) == b""  # nothing came: the end of the stream
    finally:
        os.close(r)


async def test_cancelled_it_removes_its_reader(pipe: tuple[int, int]) -> None:
    r, w = pipe
    waiting = await started(r)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert asyncio.get_running_loop().remove_reader(r) is False  # none left
    os.write(w, b"x")  # no callback of the cancelled wait runs on it
    await asyncio.wait_for(readable(r), 10)  # and a new wait may watch it
