"""The runtime handlers a sandboxer offers, asked of the sandboxer itself.

containerd has no call that reaches a sandbox controller for what it offers beyond its
platform. But containerd's Introspection names a proxy sandboxer's socket (the ``address``
export of its plugin), and this project's isolating sandboxer answers
``containerd.services.introspection.v1.Introspection/Plugins`` on that socket with one plugin
per runtime handler (type :data:`RUNTIME_HANDLER_PLUGIN_TYPE`, id the handler's name, exports
``kind``, ``path`` and ``version``). So a client on the sandboxer's host asks containerd
where the sandboxer listens, then asks the sandboxer. A sandboxer that is containerd's own
(no address), unreachable from here, or that does not answer the call is an error that
says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._facts._golang import go_quote
from .._wire._pb import introspection_pb
from ..errors import FailedPreconditionError, NotFoundError, UnavailableError
from ._connection import Connection, Timeout
from ._server_info import SANDBOXER_PLUGIN_TYPES

__all__ = ("RUNTIME_HANDLER_PLUGIN_TYPE", "RuntimeHandlerInfo", "runtime_handlers")

RUNTIME_HANDLER_PLUGIN_TYPE: Final = "io.sandboxclient.runtime-handler.v1"
"""The plugin type under which the isolating sandboxer lists its runtime handlers."""


@dataclass(frozen=True, slots=True)
class RuntimeHandlerInfo:
    """One runtime handler a sandboxer offers (``new_sandbox(runtime_handler=name)``)."""

    name: str
    kind: str
    """``runc`` or ``gvisor``."""
    path: str
    """Its binary; empty for the runc shim's own runc."""
    version: str


async def _address(connection: Connection, sandboxer: str, timeout: Timeout) -> str:
    resp = await connection.call(
        connection.stub(introspection_pb.IntrospectionStub).plugins,
        introspection_pb.PluginsRequest(filters=[f"type=={t}" for t in SANDBOXER_PLUGIN_TYPES]),
        timeout,
        idempotent=True,
    )
    for plugin in resp.plugins:
        if plugin.id == sandboxer:
            address = plugin.exports.get("address", "")
            if not address:
                raise FailedPreconditionError(
                    f"sandboxer {go_quote(sandboxer)} is containerd's own: it names no "
                    "runtime handlers (containerd's runtimes are in its configuration)"
                )
            return address
    raise NotFoundError(f"containerd has no sandboxer {go_quote(sandboxer)}")


async def runtime_handlers(
    connection: Connection, sandboxer: str, *, timeout: float = 10.0
) -> list[RuntimeHandlerInfo]:
    """The runtime handlers sandboxer ``sandboxer`` offers (see the module's docstring)."""
    address = await _address(connection, sandboxer, timeout)
    where = f"sandboxer {go_quote(sandboxer)} at {go_quote(address)}"
    channel = Channel(path=address)
    try:
        stub = introspection_pb.IntrospectionStub(channel)
        request = introspection_pb.PluginsRequest(filters=[f"type=={RUNTIME_HANDLER_PLUGIN_TYPE}"])
        resp = await stub.plugins(request, timeout=timeout)
    except GRPCError as exc:
        if exc.status is Status.UNIMPLEMENTED:
            raise FailedPreconditionError(
                f"{where} does not say which runtime handlers it offers"
            ) from None
        raise UnavailableError(f"{where}: {exc.message}") from exc
    except (OSError, TimeoutError) as exc:
        raise UnavailableError(f"cannot reach {where} from here: {exc}") from None
    finally:
        channel.close()
    return sorted(
        (
            RuntimeHandlerInfo(
                p.id,
                p.exports.get("kind", ""),
                p.exports.get("path", ""),
                p.exports.get("version", ""),
            )
            for p in resp.plugins
            if p.type == RUNTIME_HANDLER_PLUGIN_TYPE
        ),
        key=lambda h: h.name,
    )
