"""Named points where a test may stop the sandboxer, to kill it there as a crash would.

A crash between two steps (a sandbox's ending decided and its task killed, but its exit not
yet recorded, say) cannot be hit reliably by timing a kill. With :data:`PAUSE_ENV` set to
``NAME=FIFO`` in the sandboxer's environment, the sandboxer, on first reaching the point
``NAME`` (:func:`pause_point`), takes it out of its environment, writes ``NAME`` and a
newline into the FIFO (waiting for a reader) and stops itself with SIGSTOP: the test reads
the line, then kills it (SIGKILL) and starts another. Unset, a point costs one environment
lookup. The points:

- :data:`ENDING_KILLED`: a sandbox past a time limit has its ending recorded and its task
  was sent SIGKILL; its exit is not yet recorded, nor is it shut down.
- :data:`SHUTDOWN_LISTED`: a Shutdown has read the namespace's container records and the
  sandbox's first process has exited; no member, nor its own task, is deleted yet.
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = ("ENDING_KILLED", "PAUSE_ENV", "SHUTDOWN_LISTED", "pause_point")

PAUSE_ENV: Final = "SANDBOXCLIENT_SANDBOXER_PAUSE"
"""``NAME=FIFO``: stop at the point ``NAME`` once, telling the FIFO (tests only)."""

ENDING_KILLED: Final = "ending-killed"
"""A time limit's ending: recorded, SIGKILL sent, the exit not yet recorded."""

SHUTDOWN_LISTED: Final = "shutdown-listed"
"""A Shutdown: the container records read, the first process exited, nothing deleted yet."""


def pause_point(name: str) -> None:
    """Stop this process here (SIGSTOP) if :data:`PAUSE_ENV` names ``name``, after writing
    ``name`` into the FIFO it names; do nothing otherwise."""
    point, _, fifo = os.environ.get(PAUSE_ENV, "").partition("=")
    if point != name or not fifo:
        return
    del os.environ[PAUSE_ENV]  # once; and not passed on to what the sandboxer starts
    with open(fifo, "w", encoding="ascii") as f:  # waits for the test to read
        f.write(f"{name}\n")
    os.kill(os.getpid(), signal.SIGSTOP)
