"""The stand-in's own sandboxer keeping ``lifetime=`` and ``idle_timeout=``, as the
isolating sandboxer does.

The controller router tells :class:`StandInTimes` of each sandbox's time-limit labels as
Create and Update bring them; :class:`~sandboxclient.sandboxer._clocks.SandboxClocks` keeps
them as for the isolating sandboxer (one timer; idle clocks fed by the stand-in's own exec
events, through a ``Client`` of the stand-in). Past a limit the sandbox is ended through the
stand-in's own API, as the isolating sandboxer ends one through containerd's: its process
stopped, a Wait (answered with :data:`~sandboxclient.LIFETIME_EXIT_STATUS` or
:data:`~sandboxclient.IDLE_EXIT_STATUS`, and published as ``/sandboxes/exit``), then
``Sandbox.shutdown()`` (members, the controller's part, the record). Nothing is kept across
a restart: the stand-in keeps nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

from .._client import Client
from .._facts._lifetime import DEADLINE_LABEL, IDLE_TIMEOUT_LABEL
from .._wire._pb import SandboxPb
from ..errors import NotFoundError
from ..sandboxer._clocks import Key, SandboxClocks
from ..sandboxer._timelimits import time_limits

__all__ = ("StandInTimes",)

_STOP_GRACE: Final = 1.0
_LABELS: Final = (DEADLINE_LABEL, IDLE_TIMEOUT_LABEL)


class StandInTimes:
    """The time limits of the stand-in's sandboxes, by (namespace, id); ``address`` gives
    the stand-in's socket, which the ending and the exec events go through."""

    def __init__(self, address: Callable[[], str]) -> None:
        self._address = address
        self._labels: dict[Key, dict[str, str]] = {}
        self._ended: dict[Key, int] = {}
        self._clients: dict[str, Client] = {}
        self._clocks = SandboxClocks(self._client, self._end)

    def _client(self, namespace: str) -> Client:
        client = self._clients.get(namespace)
        if client is None:
            client = self._clients[namespace] = Client(self._address(), namespace=namespace)
        return client

    def created(self, namespace: str, sandbox_id: str, sandbox: SandboxPb | None) -> None:
        """A Create was taken: keep what its labels ask."""
        labels = {} if sandbox is None else sandbox.labels
        self._arm((namespace, sandbox_id), {k: labels[k] for k in _LABELS if k in labels})

    def updated(
        self, namespace: str, sandbox_id: str, sandbox: SandboxPb, fields: list[str]
    ) -> None:
        """An Update was taken: the labels it names (all of them without fields) change."""
        key = (namespace, sandbox_id)
        labels = dict(self._labels.get(key, {}))
        for name in _LABELS:
            if not fields or {"labels", f"labels.{name}"} & set(fields):
                if name in sandbox.labels:
                    labels[name] = sandbox.labels[name]
                else:
                    labels.pop(name, None)
        self._arm(key, labels)

    def _arm(self, key: Key, labels: dict[str, str]) -> None:
        self._labels[key] = labels
        self._clocks.arm(key, time_limits(SandboxPb(labels=labels)))

    def status_info(self, namespace: str, sandbox_id: str) -> dict[str, str]:
        """Status ``info`` entries of its limits (see ``SandboxClocks.status_info``)."""
        return self._clocks.status_info((namespace, sandbox_id))

    def exit_status(self, namespace: str, sandbox_id: str, status: int) -> int:
        """The status a Wait answers: the limit's, for a sandbox being ended here."""
        return self._ended.get((namespace, sandbox_id), status)

    def forget(self, namespace: str, sandbox_id: str) -> None:
        """The sandbox was shut down: nothing more to keep."""
        self._labels.pop((namespace, sandbox_id), None)
        self._clocks.forget((namespace, sandbox_id))

    async def _end(self, key: Key, code: int, reason: str) -> None:
        namespace, sandbox_id = key
        client = self._client(namespace)
        try:
            sandbox = client.sandbox_handle(await client.get_sandbox(sandbox_id))
        except NotFoundError:
            self.forget(namespace, sandbox_id)
            return
        try:
            if (await sandbox.status()).ready:  # one that exited by itself keeps its status
                self._ended[key] = code
                channel = await sandbox.wait()
                await sandbox.stop(grace=_STOP_GRACE)
                await channel
            await sandbox.shutdown()
        finally:
            self._ended.pop(key, None)

    async def aclose(self) -> None:
        """Disarm everything, cancel the endings under way, close the clients."""
        await self._clocks.aclose()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()
