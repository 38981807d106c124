"""The stand-in's own sandboxer keeping ``lifetime=``, as the isolating sandboxer does.

The controller router tells :class:`StandInTimes` of each sandbox's deadline label as
Create and Update bring it (:func:`~sandboxclient.sandboxer._timelimits.time_limits`); one
:class:`~sandboxclient.sandboxer._timelimits.Timer` keeps them all. Past a deadline the
sandbox is ended through the stand-in's own API, as the isolating sandboxer ends one through
containerd's, with a ``Client`` of its own: its process stopped, a Wait (answered with
:data:`~sandboxclient.LIFETIME_EXIT_STATUS` and published as ``/sandboxes/exit``), then
``Sandbox.shutdown()`` (members, the controller's part, the record). ``idle_timeout`` is not
kept here: Status shows no ``idle_timeout``, so the client refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from .._client import Client
from .._lifetime import DEADLINE_LABEL, LIFETIME_EXIT_STATUS, deadline_text
from .._wire._pb import SandboxPb
from ..errors import ContainerdError, NotFoundError
from ..sandboxer._timelimits import Timer, loop_time_of, time_limits

__all__ = ("StandInTimes",)

_STOP_GRACE: Final = 1.0
_log = logging.getLogger("sandboxclient.testing")

Key = tuple[str, str]


class StandInTimes:
    """The deadlines of the stand-in's sandboxes, by (namespace, id); ``address`` gives the
    stand-in's socket, which the ending calls through."""

    def __init__(self, address: Callable[[], str]) -> None:
        self._address = address
        self._deadlines: dict[Key, str] = {}
        self._ended: set[Key] = set()
        self._timer: Timer[Key] = Timer(self._due)
        self._endings: set[asyncio.Task[None]] = set()
        self._clients: dict[str, Client] = {}

    def arm(self, namespace: str, sandbox: SandboxPb | None, sandbox_id: str) -> None:
        """Arm (or re-arm, or disarm) the deadline ``sandbox``'s labels name."""
        key = (namespace, sandbox_id)
        deadline = time_limits(sandbox).deadline
        if deadline is None:
            self._deadlines.pop(key, None)
            self._timer.set(key, None)
            return
        self._deadlines[key] = deadline_text(deadline)
        self._timer.set(key, loop_time_of(deadline, asyncio.get_running_loop()))

    def updated(
        self, namespace: str, sandbox_id: str, sandbox: SandboxPb, fields: list[str]
    ) -> None:
        """An Update of ``sandbox`` was taken: re-arm if it named the deadline label."""
        if not fields or {"labels", f"labels.{DEADLINE_LABEL}"} & set(fields):
            self.arm(namespace, sandbox, sandbox_id)

    def status_info(self, namespace: str, sandbox_id: str) -> dict[str, str]:
        """Status ``info`` entries: the ``deadline`` in force, if any."""
        found = self._deadlines.get((namespace, sandbox_id))
        return {} if found is None else {"deadline": found}

    def exit_status(self, namespace: str, sandbox_id: str, status: int) -> int:
        """The status a Wait answers: :data:`LIFETIME_EXIT_STATUS` for one ended here."""
        return LIFETIME_EXIT_STATUS if (namespace, sandbox_id) in self._ended else status

    def forget(self, namespace: str, sandbox_id: str) -> None:
        """The sandbox was shut down: nothing more to keep."""
        key = (namespace, sandbox_id)
        self._deadlines.pop(key, None)
        self._timer.set(key, None)

    def _due(self, key: Key) -> None:
        task = asyncio.create_task(self._end(key), name=f"sandboxclient.testing.end.{key[1]}")
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _end(self, key: Key) -> None:
        namespace, sandbox_id = key
        client = self._clients.get(namespace)
        if client is None:
            client = self._clients[namespace] = Client(self._address(), namespace=namespace)
        try:
            sandbox = client.sandbox_handle(await client.get_sandbox(sandbox_id))
            status = await sandbox.status()
            if status.ready:  # a sandbox that exited by itself keeps its own status
                self._ended.add(key)
                channel = await sandbox.wait()
                await sandbox.stop(grace=_STOP_GRACE)
                await channel
            await sandbox.shutdown()
        except NotFoundError:
            pass
        except ContainerdError as exc:
            _log.warning("ending sandbox %s/%s at its deadline: %s", namespace, sandbox_id, exc)
        finally:
            self._ended.discard(key)

    async def aclose(self) -> None:
        """Disarm everything, cancel the endings under way, close the clients."""
        self._timer.close()
        for task in list(self._endings):
            task.cancel()
        await asyncio.gather(*self._endings, return_exceptions=True)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()
