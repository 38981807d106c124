"""``sandboxctl serve-fake``: the embedded stand-in containerd, in the foreground."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from ._base import DEFAULT_SANDBOXER, PROG

__all__ = ("serve_fake",)


async def serve_fake(
    socket_path: str | None = None,
    sandboxers: Sequence[str] = (DEFAULT_SANDBOXER,),
    *,
    as_json: bool = False,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve the embedded stand-in until SIGINT or SIGTERM (or ``stop`` is set).

    The socket path goes to stdout first (alone, or as ``{"address": ...}`` with ``as_json``),
    so a script can read it and point ``CONTAINERD_ADDRESS`` at it.
    """
    from ..testing import FakeContainerd

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    async with FakeContainerd(sandboxers=tuple(sandboxers), path=socket_path) as fake:
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            if as_json:
                print(json.dumps({"address": fake.address, "sandboxers": list(sandboxers)}))
            else:
                print(fake.address)
                print(
                    f"{PROG}: serving the stand-in containerd (sandboxers: "
                    f"{', '.join(sandboxers)}); Ctrl-C to stop",
                    file=sys.stderr,
                )
            sys.stdout.flush()
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
    return 0
