"""What the stand-in says of itself: containerd's Version and Introspection services.

Version answers the version of the containerd release the stand-in answers as, marked as
the stand-in's (:data:`FAKE_VERSION` for the default release), and no revision.
Introspection lists the plugins the stand-in stands for: its gRPC services
(type ``io.containerd.grpc.v1``, under containerd's plugin ids), the task runtime
(``io.containerd.runtime.v2`` ``task``) and each sandboxer it answers to, as a sandbox
controller (``io.containerd.sandbox.controller.v1``) for this host's platform; all loaded,
none with the ``requires`` or ``exports`` the daemon's own plugins have. Plugins filters on
``type`` and ``id`` as containerd does. Server answers a uuid of the stand-in's (a new one
each time it starts: containerd keeps its own in its root), this process's pid and PID
namespace, and no deprecations. PluginInfo answers a plugin as Plugins lists it; extra
information (containerd's runtime plugin describes its runtimes) the stand-in cannot give,
and it refuses the request as containerd refuses it for a plugin that has none.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._golang import go_arch
from .._serve._refusals import not_found
from .._wire._pb import EmptyPb, PlatformPb, introspection_pb, message_type, version_pb
from ._filters import Adaptor, matches, parse_filters
from ._releases import DEFAULT_RELEASE, emulated_release
from ._services import Binder

__all__ = ("FAKE_VERSION", "GRPC_PLUGINS", "IntrospectionService", "VersionService")

FAKE_VERSION = emulated_release(DEFAULT_RELEASE).reported
"""The version the stand-in's Version service answers by default
(``2.3.4+sandboxclient.testing``): the release it answers as, marked as the stand-in's."""

GRPC_PLUGINS = (
    "containers",
    "content",
    "events",
    "images",
    "introspection",
    "leases",
    "namespaces",
    "sandbox-controllers",
    "sandboxes",
    "snapshots",
    "streaming",
    "tasks",
    "transfer",
    "version",
)
"""containerd's plugin ids of the gRPC services the stand-in serves."""

_SANDBOX_CONTROLLER = "io.containerd.sandbox.controller.v1"


class VersionService(version_pb.VersionBase):
    """containerd's Version service: ``reported``, the release the stand-in answers as."""

    def __init__(self, bind: Binder, reported: str = FAKE_VERSION) -> None:
        self._bind = bind
        self._reported = reported

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def version(self, message: EmptyPb) -> version_pb.VersionResponse:
        """Version: the release's version, no revision."""
        return version_pb.VersionResponse(version=self._reported, revision="")


def _host_platform() -> PlatformPb:
    architecture, variant = go_arch()
    return PlatformPb(os="linux", architecture=architecture, variant=variant)


def stand_in_plugins(sandboxers: Iterable[str]) -> list[introspection_pb.Plugin]:
    """The plugins the stand-in lists, in the order it lists them."""
    plugins = [introspection_pb.Plugin(type="io.containerd.grpc.v1", id=i) for i in GRPC_PLUGINS]
    plugins.append(
        introspection_pb.Plugin(
            type="io.containerd.runtime.v2", id="task", platforms=[_host_platform()]
        )
    )
    plugins += [
        introspection_pb.Plugin(type=_SANDBOX_CONTROLLER, id=name, platforms=[_host_platform()])
        for name in sorted(sandboxers)
    ]
    return plugins


def _plugin_adaptor(plugin: introspection_pb.Plugin) -> Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if path and path[0] == "type":
            return plugin.type, bool(plugin.type)
        if path and path[0] == "id":
            return plugin.id, bool(plugin.id)
        return "", False

    return field


class IntrospectionService(introspection_pb.IntrospectionBase):
    """containerd's Introspection service over the stand-in's own plugins."""

    def __init__(self, sandboxers: Iterable[str], bind: Binder) -> None:
        self._plugins = stand_in_plugins(sandboxers)
        self._uuid = str(uuid.uuid4())
        self._bind = bind

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def plugins(
        self, message: introspection_pb.PluginsRequest
    ) -> introspection_pb.PluginsResponse:
        """Plugins: those that pass the filters (``type``, ``id``)."""
        try:
            filters = parse_filters(message.filters)
        except GRPCError as exc:
            text = (exc.message or "").removesuffix(": invalid argument")
            raise GRPCError(Status.INVALID_ARGUMENT, f"invalid argument: {text}") from None
        found = [p for p in self._plugins if matches(filters, _plugin_adaptor(p))]
        return introspection_pb.PluginsResponse(plugins=found)

    async def server(self, message: EmptyPb) -> introspection_pb.ServerResponse:
        """Server: the stand-in's uuid, this process's pid and PID namespace."""
        return introspection_pb.ServerResponse(
            uuid=self._uuid, pid=os.getpid(), pidns=os.stat("/proc/self/ns/pid").st_ino
        )

    async def plugin_info(
        self, message: introspection_pb.PluginInfoRequest
    ) -> introspection_pb.PluginInfoResponse:
        """PluginInfo: the plugin as listed; extra information is not available."""
        options = message.options
        if options is not None and message_type(options.type_url) is None:
            raise GRPCError(
                Status.UNKNOWN,
                "failed to unmarshal plugin info Options: "
                f"type with url {options.type_url}: not found",
            )
        for plugin in self._plugins:
            if (plugin.type, plugin.id) == (message.type, message.id):
                break
        else:
            raise not_found(f"plugin {message.type}.{message.id} not found")
        if options is not None:
            raise GRPCError(
                Status.UNIMPLEMENTED,
                "plugin does not provided extra information: not implemented",
            )
        return introspection_pb.PluginInfoResponse(plugin=plugin)
