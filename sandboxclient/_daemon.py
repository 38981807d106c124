"""The daemon's own methods of :class:`~sandboxclient.Client`: which sandbox controller new
sandboxes get (the Client's ``sandboxer``, else the namespace's default, else ``shim``),
containerd's events, its version, its sandbox controllers and a sandboxer's runtime
handlers."""

from __future__ import annotations

from ._events import DEFAULT_EVENT_BUFFER, EventStream, scoped_filters
from ._plumbing import _server_info
from ._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._plumbing._sandboxer_handlers import RuntimeHandlerInfo, runtime_handlers
from ._plumbing._server_info import SandboxerInfo, ServerVersion

__all__ = ("DaemonMethods",)


class DaemonMethods:
    """The daemon's own methods of :class:`~sandboxclient.Client`, and the sandbox
    controller its new sandboxes get."""

    def __init__(self, connection: Connection, sandboxer: str | None) -> None:
        self._daemon_connection = connection
        self._sandboxer = sandboxer
        self._namespace_sandboxer: str | None = None

    @property
    def sandboxer(self) -> str | None:
        """The sandbox controller this Client was given for new sandboxes; None: the
        namespace's default (see :meth:`default_sandboxer`)."""
        return self._sandboxer

    async def default_sandboxer(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> str:
        """The sandbox controller of new sandboxes: the Client's ``sandboxer``, else the
        namespace's ``containerd.io/defaults/sandboxer`` label, else ``shim`` (as containerd
        2.2's Go client picks it, on every release). The label is read once, then kept."""
        if self._sandboxer is not None:
            return self._sandboxer
        if self._namespace_sandboxer is None:
            found = await _server_info.namespace_default_sandboxer(
                self._daemon_connection, timeout=timeout
            )
            self._namespace_sandboxer = found
        return self._namespace_sandboxer

    def _known_sandboxer(self) -> str:
        """:meth:`default_sandboxer`'s answer as far as it is known without a call: the
        namespace's default once read, else ``shim``."""
        return self._sandboxer or self._namespace_sandboxer or _server_info.DEFAULT_SANDBOXER

    def events(
        self,
        *filters: str,
        all_namespaces: bool = False,
        buffer: int = DEFAULT_EVENT_BUFFER,
    ) -> EventStream:
        """Subscribe to containerd's events: ``async for event in client.events(): ...``.

        ``filters`` use containerd's syntax (``topic=="/tasks/exit"``,
        ``event.container_id==c1``); any may match. Events are those of the Client's
        namespace unless ``all_namespaces``. At most ``buffer`` events wait for a consumer;
        one that falls behind gets an ``EventsLagged`` where events were dropped, and after
        a daemon restart an ``EventsReconnected`` where some may be missing.
        """
        connection = self._daemon_connection
        scope = None if all_namespaces else connection.namespace
        return EventStream(connection, scoped_filters(filters, scope), buffer)

    async def version(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> ServerVersion:
        """The daemon's version and revision."""
        return await _server_info.version(self._daemon_connection, timeout=timeout)

    async def sandboxers(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[SandboxerInfo]:
        """The sandbox controllers the daemon has, and whether each loaded."""
        return await _server_info.sandboxers(self._daemon_connection, timeout=timeout)

    async def runtime_handlers(
        self, sandboxer: str | None = None, *, timeout: float = 10.0
    ) -> list[RuntimeHandlerInfo]:
        """The runtime handlers ``sandboxer`` (by default :meth:`default_sandboxer`)
        offers, asked of the sandboxer itself at the address containerd names for it: this
        project's isolating sandboxer, on this host (``docs/gvisor.md``)."""
        name = sandboxer if sandboxer is not None else await self.default_sandboxer()
        return await runtime_handlers(self._daemon_connection, name, timeout=timeout)
