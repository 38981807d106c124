"""The isolating sandboxer's runtime handlers, told on its own socket.

containerd's API has no call that reaches a proxy sandboxer for what it offers, so the
sandboxer answers ``containerd.services.introspection.v1.Introspection/Plugins`` beside its
Controller: one plugin per runtime handler (see ``sandboxclient._plumbing._sandboxer_handlers``, the
client's side). Only the ``type==`` and ``id==`` filters are understood; another is
INVALID_ARGUMENT naming it. No namespace is needed: the handlers are the sandboxer's.
"""

from __future__ import annotations

from .._facts._golang import go_quote
from .._plumbing._sandboxer_handlers import RUNTIME_HANDLER_PLUGIN_TYPE
from .._serve._refusals import invalid_argument
from .._wire._pb import introspection_pb
from ._handlers import Handlers

__all__ = ("HandlersIntrospection",)


class HandlersIntrospection(introspection_pb.IntrospectionBase):
    """Introspection's Plugins call, answered with the sandboxer's runtime handlers."""

    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    async def plugins(
        self, message: introspection_pb.PluginsRequest
    ) -> introspection_pb.PluginsResponse:
        """The handlers as plugins, those any of ``message.filters`` matches (all when
        none is given)."""
        wanted: list[tuple[str, str]] = []
        for text in message.filters:
            key, sep, value = text.partition("==")
            if not sep or key.strip() not in ("type", "id"):
                raise invalid_argument(
                    f"filter {go_quote(text)}: only type==... and id==... are understood"
                )
            wanted.append((key.strip(), value.strip().strip('"')))
        plugins = [
            introspection_pb.Plugin(
                type=RUNTIME_HANDLER_PLUGIN_TYPE,
                id=h.name,
                exports={"kind": h.kind, "path": h.path, "version": h.version},
            )
            for h in self._handlers
        ]
        if wanted:
            plugins = [p for p in plugins if any(getattr(p, key) == value for key, value in wanted)]
        return introspection_pb.PluginsResponse(plugins=plugins)
