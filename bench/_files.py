"""Files in and out of a sandbox: ``files.write`` then ``files.stream`` of N bytes, against
piping the same bytes through ``Task.exec`` by hand (``cat > path`` fed through stdin, then
``cat path`` read from stdout), in one sandbox.

Rounds alternate, each round's first contender rotating; the figure is the median of the
per-round ratios of by-hand time over library time (a throughput ratio: above 1, the library is
faster). The client's peak allocation (tracemalloc) is measured in a round of its own, since
tracing slows allocation.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sandboxclient import PIPE, Client, Sandbox

__all__ = ("FilesResult", "files_figures")

_CHUNK = 1 << 16
_BLOCK = bytes(range(256)) * (_CHUNK // 256)


@dataclass(frozen=True)
class FilesResult:
    """What the files section measured."""

    library_mb_s: float
    by_hand_mb_s: float
    ratio: float
    """The median of the rounds' by-hand-over-library time ratios."""
    peak_bytes: int
    """The client's peak allocation during one library write and stream."""


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for start in range(0, size, _CHUNK):
        yield _BLOCK[: min(_CHUNK, size - start)]


async def _library(sb: Sandbox, path: str, size: int) -> float:
    start = time.perf_counter()
    await sb.files.write(path, _chunks(size))
    got = 0
    async for chunk in sb.files.stream(path):
        got += len(chunk)
    took = time.perf_counter() - start
    assert got == size, (got, size)
    return took


async def _by_hand(sb: Sandbox, path: str, size: int) -> float:
    task = await sb.task()
    start = time.perf_counter()
    async with await task.spawn("sh", "-c", 'cat > "$1"', "sh", path, stdin=PIPE) as writer:
        stdin = writer.stdin
        assert stdin is not None
        async for chunk in _chunks(size):
            stdin.write(chunk)
            await stdin.drain()
        await writer.close_stdin()
        await writer.wait_exit()
    got = 0
    async with await task.spawn("cat", path, stdout=PIPE) as reader:
        stdout = reader.stdout
        assert stdout is not None
        while chunk := await stdout.read(_CHUNK):
            got += len(chunk)
        await reader.wait_exit()
    took = time.perf_counter() - start
    assert got == size, (got, size)
    return took


async def files_figures(
    address: str, namespace: str, sandboxer: str, *, size: int, rounds: int
) -> FilesResult:
    """Measure both ways in one sandbox (its /tmp a tmpfs room for the file)."""
    tmp = {
        "destination": "/tmp",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777", f"size={2 * size // 1024 + 4096}k"],
    }
    path = f"/tmp/bench-files-{uuid.uuid4().hex[:8]}"
    async with (
        Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client,
        client.sandbox(
            f"files-{uuid.uuid4().hex[:8]}", runtime="io.containerd.runc.v2", spec={"mounts": [tmp]}
        ) as sb,
    ):
        try:
            lib_s: list[float] = []
            hand_s: list[float] = []
            ratios: list[float] = []
            for i in range(rounds):
                if i % 2:
                    hand = await _by_hand(sb, path, size)
                    lib = await _library(sb, path, size)
                else:
                    lib = await _library(sb, path, size)
                    hand = await _by_hand(sb, path, size)
                lib_s.append(lib)
                hand_s.append(hand)
                ratios.append(hand / lib)
            tracemalloc.start()
            try:
                await _library(sb, path, size)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        finally:
            await sb.files.remove(path)
    mb = size / 1e6
    return FilesResult(
        library_mb_s=2 * mb / statistics.median(lib_s),
        by_hand_mb_s=2 * mb / statistics.median(hand_s),
        ratio=statistics.median(ratios),
        peak_bytes=peak,
    )
