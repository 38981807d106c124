"""HTTP/2 PINGs on a client connection with calls in flight, so a silent peer is noticed.

A call with no deadline (a Wait, say) on a peer that stopped answering (a daemon frozen, a
host gone, a half-open socket) would otherwise wait forever. While at least one call is in
flight and nothing has come from the peer for ``interval`` seconds, the connection sends a
PING; when nothing at all comes back within ``timeout`` seconds, it is closed, and its calls
fail with ``UnavailableError`` (a shared Wait then retries, as after a restart).

containerd's gRPC server (grpc-go, with its default enforcement policy) cuts off a client
that pings more often than every five minutes while the server itself sends nothing: it
counts a strike per early ping, clears them when it sends headers or data, and answers a
third strike with GOAWAY ``too_many_pings``. So after :data:`BURST` pings with no headers
or data from the peer in between, the next waits until :data:`PEER_MIN_INTERVAL` after the
last one. The bound on noticing a silent peer is thus ``interval + timeout`` (20 s by
default) after its last answer, and ``PEER_MIN_INTERVAL + timeout`` on a connection where
only PINGs have been answered for a while (a lone Wait on an idle daemon).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ("BURST", "PEER_MIN_INTERVAL", "Keepalive")

BURST = 2
"""PINGs sent freely after the peer's last headers or data (grpc-go tolerates two strikes)."""

PEER_MIN_INTERVAL = 301.0
"""Seconds between further PINGs: grpc-go's default ``MinTime`` of 5 minutes, and a margin."""


class Keepalive:
    """The PING schedule of one connection (see the module's docstring).

    ``busy()`` says whether a call is in flight, ``ping()`` sends a PING, ``fail(reason)``
    closes the connection. The connection reports what it hears with :meth:`heard` and each
    new call with :meth:`call_started`; :meth:`stop` ends the schedule.
    """

    def __init__(
        self,
        *,
        interval: float,
        timeout: float,
        busy: Callable[[], bool],
        ping: Callable[[], None],
        fail: Callable[[str], None],
    ) -> None:
        self._interval = interval
        self._timeout = timeout
        self._busy = busy
        self._ping = ping
        self._fail = fail
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._quiet_since = time.monotonic()
        self._ping_sent: float | None = None
        self._last_ping = -PEER_MIN_INTERVAL
        self._pings_since_data = 0
        self._stopped = False

    @property
    def pings_sent(self) -> int:
        """PINGs sent since the peer last sent headers or data."""
        return self._pings_since_data

    def heard(self, *, data: bool) -> None:
        """Something came from the peer (``data``: headers or data, not just a PING's ack)."""
        self._quiet_since = time.monotonic()
        # The timer may be set for a PING's timeout, or for the spacing: both are over.
        rearm = self._ping_sent is not None
        self._ping_sent = None
        if data and self._pings_since_data:
            rearm = rearm or self._pings_since_data >= BURST
            self._pings_since_data = 0
        if rearm and self._timer is not None:
            self._timer.cancel()
            self._arm(self._interval)

    def call_started(self) -> None:
        """A call went out: start counting the silence if nothing was."""
        if self._timer is None and not self._stopped:
            self._quiet_since = time.monotonic()
            self._arm(self._interval)

    def stop(self) -> None:
        """End the schedule (the connection is closed)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, delay: float) -> None:
        self._timer = self._loop.call_later(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._stopped:
            return
        now = time.monotonic()
        if self._ping_sent is not None:
            if now - self._ping_sent >= self._timeout:
                self.stop()
                self._fail(f"keepalive: no answer to a PING within {self._timeout:g} s")
                return
            self._arm(self._ping_sent + self._timeout - now)
            return
        if not self._busy():
            return  # idle: the next call starts the schedule again
        due = self._quiet_since + self._interval
        if self._pings_since_data >= BURST:
            due = max(due, self._last_ping + PEER_MIN_INTERVAL)
        if now < due:
            self._arm(due - now)
            return
        self._ping()
        self._ping_sent = self._last_ping = now
        self._pings_since_data += 1
        self._arm(self._timeout)
