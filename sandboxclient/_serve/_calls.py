"""Which calls a server has received: a test's signal that a call is in flight.

The stand-in and the sandboxer both count the calls that reach them, by gRPC route, as they
arrive: when the server has the call's headers, before the method runs. A test that needs
a call to be in flight (a Wait blocked on a sandbox, say) waits for its arrival instead of
sleeping. With a trace file, each arrival is also appended there as one line, so that
another process can follow along (see ``SandboxerProcess.wait_for_call``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Mapping
from typing import Any

from grpclib.const import Handler
from grpclib.server import Stream

__all__ = ("CallLog", "route_matches")

_log = logging.getLogger("sandboxclient")


def route_matches(route: str, method: str) -> bool:
    """Whether the gRPC ``route`` is what ``method`` names.

    ``method`` is the whole route (``/containerd.services.sandbox.v1.Controller/Wait``), its
    tail from the service name on (``Controller/Wait``), or the method's name alone
    (``Wait``, which names it on every service).
    """
    return route == method or route.endswith(("." + method, "/" + method))


class CallLog:
    """Counts the calls a server receives, by route, as they arrive.

    Pass one to :func:`sandboxclient.sandboxer.serve` (``calls=``); ``trace_path`` names a
    file to which each arrival is appended as a line holding its route.
    """

    def __init__(self, trace_path: str | os.PathLike[str] | None = None) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []
        self._trace: int | None = None
        if trace_path is not None:
            self._trace = os.open(
                trace_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )

    def arrived(self, route: str) -> None:
        """Count a call of ``route`` that has just arrived, and wake who waits for it."""
        self._counts[route] += 1
        if self._trace is not None:
            try:
                os.write(self._trace, route.encode() + b"\n")
            except OSError as exc:  # a full disk must not fail the call
                _log.warning("cannot trace a call of %s: %s", route, exc)
        if self._waiters:
            self._wake()

    def count(self, method: str) -> int:
        """How many calls of ``method`` (see :func:`route_matches`) have arrived so far."""
        return sum(n for route, n in self._counts.items() if route_matches(route, method))

    async def wait_for(self, method: str, count: int = 1) -> None:
        """Return once ``count`` calls of ``method`` have arrived (at once if they have)."""
        if self.count(method) >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (method, count, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _wake(self) -> None:
        for method, count, waiter in list(self._waiters):
            if not waiter.done() and self.count(method) >= count:
                waiter.set_result(None)

    def bind(self, mapping: Mapping[str, Handler]) -> dict[str, Handler]:
        """A service's handlers, each counting its call before it runs."""
        return {route: self._counting(route, handler) for route, handler in mapping.items()}

    def _counting(self, route: str, handler: Handler) -> Handler:
        inner = handler.func

        async def func(stream: Stream[Any, Any]) -> None:
            self.arrived(route)
            await inner(stream)

        return Handler(func, handler.cardinality, handler.request_type, handler.reply_type)

    def close(self) -> None:
        """Close the trace file; calls arriving later are still counted. Idempotent."""
        if self._trace is not None:
            os.close(self._trace)
            self._trace = None
