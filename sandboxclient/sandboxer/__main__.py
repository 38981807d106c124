"""``python -m sandboxclient.sandboxer --socket PATH``: serve a ProcessSandboxer.

Prints one line saying where it listens once the socket accepts calls, and on SIGTERM or
SIGINT stops serving, kills its sandboxes and exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from ._base import serve
from ._process import ProcessSandboxer


async def run(path: str) -> int:
    """Serve a :class:`ProcessSandboxer` on ``path`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    controller = ProcessSandboxer()
    try:
        async with serve(controller, path):
            print(f"sandboxer listening on unix://{path}", flush=True)
            await stop.wait()
    finally:
        try:
            await controller.aclose()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve until told to stop; the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sandboxclient.sandboxer",
        description="Serve containerd's sandbox Controller API, running sandboxes as processes.",
    )
    parser.add_argument("--socket", required=True, metavar="PATH", help="unix socket to listen on")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.socket))
    except OSError as exc:
        print(f"sandboxer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
