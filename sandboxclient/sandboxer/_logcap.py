"""The keeper of one isolated sandbox's output log:
``python -I -S _logcap.py FIFO LOG DROPPED LIMIT``.

The sandbox's task writes its stdout and stderr to FIFO (containerd's ``file://`` log: the
shim copies the task's output there). This process, started by the sandboxer before the
task and detached from it (it is not the sandboxer's child, so it outlives a sandboxer that
is killed, as the shim does), reads FIFO and appends to LOG (mode 0600) until LOG holds
LIMIT bytes; what comes after is read and dropped, and the number of bytes dropped is
written to DROPPED (atomically, at most every :data:`FLUSH_EVERY` seconds while it grows,
and at the end; never when nothing was dropped). Only the standard library is imported.

1. It opens FIFO for reading, and for writing too, so that no gap between the shim's writers
   reads as the end; then writes ``ready`` and a newline to stdout and closes it.
2. When its stdin ends (the sandboxer's word that the task started, or that the start
   failed; or the sandboxer died), it closes its own writer :data:`GRACE` seconds later:
   once every writer is
   closed (the task and whatever inherited its output are gone) it reads the end, writes
   DROPPED and exits.
"""

from __future__ import annotations

import os
import select
import sys
import time

__all__ = ("FLUSH_EVERY", "run")

FLUSH_EVERY = 0.1
GRACE = 0.5
"""Seconds its own writer stays open after the sandboxer's word: the shim opens its
writers asynchronously, and a moment with none would read as the end."""
_CHUNK = 1 << 16


def _write_count(path: str, count: int) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, str(count).encode())
    finally:
        os.close(fd)
    os.rename(temporary, path)


def _copy(fifo: int, keeper: int | None, log: int, dropped_path: str, limit: int) -> None:
    stdin: int | None = 0
    written = os.fstat(log).st_size
    dropped = flushed = 0
    last = time.monotonic()
    let_go: float | None = None
    poller = select.poll()
    poller.register(fifo, select.POLLIN)
    poller.register(0, select.POLLIN)
    try:
        while True:
            timeout = None if dropped == flushed else FLUSH_EVERY * 1000
            if let_go is not None:
                timeout = GRACE * 1000
            for fd, _ in poller.poll(timeout):
                if fd == stdin:  # the sandboxer's word (or its death): let the end come
                    poller.unregister(stdin)
                    stdin = None
                    let_go = time.monotonic() + GRACE
                    continue
                try:
                    data = os.read(fifo, _CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    return
                room = max(0, limit - written)
                if room:
                    kept = data[:room]
                    os.write(log, kept)
                    written += len(kept)
                dropped += len(data) - min(room, len(data))
            now = time.monotonic()
            if let_go is not None and now >= let_go and keeper is not None:
                os.close(keeper)
                keeper, let_go = None, None
            if dropped != flushed and now - last >= FLUSH_EVERY:
                _write_count(dropped_path, dropped)
                flushed, last = dropped, now
    finally:
        if dropped != flushed:  # nothing dropped, nothing written (a failed start leaves none)
            _write_count(dropped_path, dropped)


def run() -> None:
    """Keep the log described by ``sys.argv`` (see the module's docstring)."""
    fifo_path, log_path, dropped_path, limit = sys.argv[1:5]
    fifo = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    # A writer of our own (it cannot block: we read), so the shim's opening and closing
    # the FIFO before it copies is no end.
    keeper = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    if os.fork():  # detach: the sandboxer waits for this parent only
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.write(1, b"ready\n")
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    _copy(fifo, keeper, log, dropped_path, int(limit))


if __name__ == "__main__":
    run()
