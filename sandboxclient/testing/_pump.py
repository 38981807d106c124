"""Copying bytes between two file descriptors on the event loop, with back-pressure.

What the runc shim's copy goroutines do for a task's streams, done the asyncio way: the
source is read (``add_reader``) only while nothing read before is waiting to be written, and
a destination that cannot take more (a full FIFO or pipe) is waited on with ``add_writer``.
A reader that does not read therefore blocks the writer at the far end, and at most one
chunk is held in memory. A destination that never says "try again" (a regular file,
``/dev/null``) is written to at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable

__all__ = ("CHUNK", "Pump", "close_fd")

CHUNK = 1 << 16
"""How much is read from the source at a time."""


def close_fd(fd: int | None) -> None:
    """Close ``fd`` if it is one, ignoring an fd already gone."""
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


class Pump:
    """Copies from ``src`` to ``dst`` (both non-blocking) until the source ends.

    At the end of the source (or a destination that went away), the pump stops, closes the
    descriptors it owns (``src``, ``dst`` unless not ``owns_dst``, and ``also_close``) and
    calls ``on_done``.
    :meth:`close` stops it early the same way. ``done`` is set once it has stopped.
    """

    def __init__(
        self,
        src: int,
        dst: int,
        *,
        owns_dst: bool = True,
        also_close: Iterable[int] = (),
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._src = src
        self._dst = dst
        self._owned = [src, *([dst] if owns_dst else []), *also_close]
        self._on_done = on_done
        self._pending = b""
        self._reading = False
        self._writing = False
        self._stopped = False
        self.done = asyncio.Event()

    def start(self) -> None:
        """Begin copying."""
        if not self._stopped:
            self._read_again()

    def _read_again(self) -> None:
        if not self._reading:
            self._loop.add_reader(self._src, self._readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._src)
            self._reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self._src, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            # A pty master reads EIO once its slave side is closed: the end of the output,
            # as any other failure of the source is.
            data = b""
        if not data:
            self.close()
            return
        self._pending = data
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            try:
                written = os.write(self._dst, self._pending)
            except BlockingIOError:
                break
            except OSError:  # EPIPE and friends: nobody reads any more
                self.close()
                return
            self._pending = self._pending[written:]
        if self._pending:
            self._pause_reading()
            if not self._writing:
                self._loop.add_writer(self._dst, self._writable)
                self._writing = True
            return
        if self._writing:
            self._loop.remove_writer(self._dst)
            self._writing = False
        self._read_again()

    def _writable(self) -> None:
        self._flush()

    def close(self) -> None:
        """Stop copying and close what the pump owns; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._pause_reading()
        if self._writing:
            self._loop.remove_writer(self._dst)
            self._writing = False
        self._pending = b""
        for fd in self._owned:
            close_fd(fd)
        self.done.set()
        if self._on_done is not None:
            self._on_done()
