"""``python -m sandboxclient.sandboxer --socket PATH [--state-dir DIR] [--trace-calls FILE]``.

Serves a :class:`~sandboxclient.sandboxer.ProcessSandboxer`. Prints one line saying where it
listens once the socket accepts calls, and on SIGTERM or SIGINT stops serving, kills its
sandboxes and exits with status 0. With ``--state-dir`` the sandboxes outlive a sandboxer
that is killed (SIGKILL, a crash): started again over the same directory, it takes them
back. With ``--trace-calls`` it appends a line to FILE for every call as it arrives, before
handling it: the call's gRPC route (``/containerd.services.sandbox.v1.Controller/Wait``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from .._calls import CallLog
from ._base import serve
from ._process import ProcessSandboxer


async def run(path: str, state_dir: str | None = None, trace_calls: str | None = None) -> int:
    """Serve a :class:`ProcessSandboxer` on ``path`` until SIGTERM or SIGINT."""
    calls = CallLog(trace_calls) if trace_calls else None
    try:
        return await _serve(path, state_dir, calls)
    finally:
        if calls is not None:
            calls.close()


async def _serve(path: str, state_dir: str | None, calls: CallLog | None) -> int:
    controller = ProcessSandboxer(state_dir)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    serving = False
    try:
        async with serve(controller, path, calls=calls):
            serving = True
            print(f"sandboxer listening on unix://{path}", flush=True)
            await stop.wait()
    finally:
        try:
            if serving or state_dir is None:
                await controller.aclose()
            else:  # could not serve: leave the sandboxes it took back to the next attempt
                controller.detach()
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
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the sandboxes' records here and take them back after a restart "
        "(default: in memory only; the sandboxes end with the sandboxer)",
    )
    parser.add_argument(
        "--trace-calls",
        metavar="FILE",
        help="append each call's gRPC route to FILE as it arrives, before it is handled "
        "(for tests that must know a call is in flight)",
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.socket, args.state_dir, args.trace_calls))
    except OSError as exc:
        print(f"sandboxer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
