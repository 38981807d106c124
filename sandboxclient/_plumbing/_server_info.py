"""What a daemon says of itself: its version, and the sandbox controllers it has."""

from __future__ import annotations

from dataclasses import dataclass

from .._models import Platform
from .._wire._convert import platform_from_pb
from .._wire._pb import EmptyPb, introspection_pb, namespaces_pb, version_pb
from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._version import ContainerdVersion

__all__ = (
    "DEFAULT_SANDBOXER",
    "DEFAULT_SANDBOXER_LABEL",
    "SANDBOXER_PLUGIN_TYPES",
    "SandboxerInfo",
    "ServerVersion",
    "daemon_version",
    "namespace_default_sandboxer",
    "sandboxers",
    "version",
)

SANDBOXER_PLUGIN_TYPES = (
    "io.containerd.sandbox.controller.v1",
    "io.containerd.podsandbox.controller.v1",
)
"""The plugin types of sandbox controllers: containerd's own and proxies, and CRI's."""

DEFAULT_SANDBOXER_LABEL = "containerd.io/defaults/sandboxer"
"""The namespace label that names the namespace's default sandbox controller."""

DEFAULT_SANDBOXER = "shim"
"""The default sandbox controller of a namespace without that label (containerd's)."""


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """The daemon's version as it reports it (``2.1.9+unknown``, ``v2.3.4``) and revision
    (may be empty); :attr:`parsed` reads the version."""

    version: str
    revision: str

    @property
    def parsed(self) -> ContainerdVersion:
        """The version as a comparable record (``parsed.release >= (2, 2)``).

        Raises:
            ValueError: the daemon's answer is not a version (the message quotes it).
        """
        return ContainerdVersion.parse(self.version)


@dataclass(frozen=True, slots=True)
class SandboxerInfo:
    """A sandbox controller the daemon has: its name, plugin type, and whether it loaded.

    ``ready`` is False when the plugin failed to initialise or was skipped, and ``error``
    then says why. (A ready controller may still be unable to start sandboxes: containerd
    2.1's ``shim`` needs a runtime shim that has a sandbox service, which runc's has not.)
    """

    name: str
    type: str
    ready: bool
    error: str = ""
    platforms: tuple[Platform, ...] = ()


async def version(
    connection: Connection, *, timeout: Timeout = USE_CLIENT_DEFAULT
) -> ServerVersion:
    """containerd's Version service."""
    resp = await connection.call(
        connection.stub(version_pb.VersionStub).version, EmptyPb(), timeout, idempotent=True
    )
    return ServerVersion(resp.version, resp.revision)


async def daemon_version(
    connection: Connection, *, timeout: Timeout = USE_CLIENT_DEFAULT
) -> ContainerdVersion | None:
    """The daemon's release as :class:`ContainerdVersion` reads it, or None when its
    Version answer is no release number (a development build's, say): what differs between
    releases is decided from this."""
    try:
        return ContainerdVersion.parse((await version(connection, timeout=timeout)).version)
    except ValueError:
        return None


async def sandboxers(
    connection: Connection, *, timeout: Timeout = USE_CLIENT_DEFAULT
) -> list[SandboxerInfo]:
    """The sandbox controller plugins, from the Introspection service."""
    resp = await connection.call(
        connection.stub(introspection_pb.IntrospectionStub).plugins,
        introspection_pb.PluginsRequest(filters=[f"type=={t}" for t in SANDBOXER_PLUGIN_TYPES]),
        timeout,
        idempotent=True,
    )
    found = []
    for plugin in resp.plugins:
        error = plugin.init_err.message if plugin.init_err is not None else ""
        found.append(
            SandboxerInfo(
                name=plugin.id,
                type=plugin.type,
                ready=plugin.init_err is None or plugin.init_err.code == 0,
                error=error,
                platforms=tuple(platform_from_pb(p) for p in plugin.platforms),
            )
        )
    return sorted(found, key=lambda s: s.name)


async def namespace_default_sandboxer(
    connection: Connection, *, timeout: Timeout = USE_CLIENT_DEFAULT
) -> str:
    """The connection's namespace's default sandbox controller: its
    :data:`DEFAULT_SANDBOXER_LABEL` label, else :data:`DEFAULT_SANDBOXER`, as containerd
    2.2's Go client picks it (a namespace never written has no labels)."""
    resp = await connection.call(
        connection.stub(namespaces_pb.NamespacesStub).get,
        namespaces_pb.GetNamespaceRequest(name=connection.namespace),
        timeout,
        idempotent=True,
    )
    labels = resp.namespace.labels if resp.namespace is not None else {}
    return labels.get(DEFAULT_SANDBOXER_LABEL) or DEFAULT_SANDBOXER
