"""A sandbox's network, as configured: the default network list, what a sandbox asks for,
the CNI container id and namespace pin of each Start, and the state teardown reads.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .._facts._network import (
    NETWORK_ANNOTATION,
    NetworkRequest,
    PortMapping,
    parse_network_request,
)
from .._serve._refusals import invalid_argument
from ._cni import NetworkList

__all__ = (
    "DEFAULT_NETWORK_NAME",
    "DUAL_STACK_SUBNET6",
    "IFNAME",
    "LOOPBACK",
    "NETWORK_STATE_FILE",
    "STATE_VERSION",
    "container_id",
    "default_network_list",
    "join_network",
    "netns_path",
    "network_request_of",
    "network_state",
    "used_plugins",
    "user_namespace_path",
)

DEFAULT_NETWORK_NAME: Final = "sandboxclient"
"""The default network list's name (host-local keeps its leases in
``/var/lib/cni/networks/<name>``)."""
DEFAULT_BRIDGE: Final = "sbxclient0"
DEFAULT_SUBNET: Final = "10.213.0.0/16"
DUAL_STACK_SUBNET6: Final = "fd5b:c1e0:213::/64"
"""A unique-local IPv6 range for a dual-stack bridge (``default_network_list(subnet6=)``)."""
NETWORK_STATE_FILE: Final = "network.json"
NETNS_FILE: Final = "netns"
IFNAME: Final = "eth0"
LOOPBACK: Final = {"cniVersion": "1.0.0", "name": "loopback", "plugins": [{"type": "loopback"}]}
STATE_VERSION: Final = 1


def default_network_list(
    name: str = DEFAULT_NETWORK_NAME,
    bridge: str = DEFAULT_BRIDGE,
    subnet: str = DEFAULT_SUBNET,
    subnet6: str | None = None,
) -> dict[str, Any]:
    """The bridge network the sandboxer uses unless given a conflist: a Linux bridge with
    the gateway address, IP masquerade out, host-local addresses, and ``portmap``. With
    ``subnet6`` (a unique-local range such as :data:`DUAL_STACK_SUBNET6`) it is dual-stack:
    IPv6 addresses from it too, and an IPv6 default route (the bridge plugin then turns on
    the host's IPv6 forwarding, as it does IPv4's)."""
    listed = default_network_list(name, bridge, subnet) if subnet6 is not None else None
    if listed is not None:
        ipam = listed["plugins"][0]["ipam"]
        ipam["ranges"].append([{"subnet": subnet6}])
        ipam["routes"].append({"dst": "::/0"})
        return listed
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def network_request_of(
    spec: Mapping[str, Any] | None, annotations: Mapping[str, str]
) -> NetworkRequest:
    """The network a sandbox asks for (its spec's annotation, or the Create request's);
    INVALID_ARGUMENT naming the field when malformed."""
    given = ((spec or {}).get("annotations") or {}).get(NETWORK_ANNOTATION)
    if given is None:
        given = annotations.get(NETWORK_ANNOTATION)
    if given is None:
        return NetworkRequest()
    if not isinstance(given, str):
        raise invalid_argument(f"annotations[{NETWORK_ANNOTATION}] must be a string")
    try:
        return parse_network_request(given)
    except ValueError as exc:
        raise invalid_argument(f"network: {exc}") from None


def user_namespace_path(spec: Mapping[str, Any] | None) -> str | None:
    """The path of the user namespace ``spec`` joins, if it joins one by path."""
    for entry in ((spec or {}).get("linux") or {}).get("namespaces") or []:
        if isinstance(entry, Mapping) and entry.get("type") == "user":
            return str(entry["path"]) if entry.get("path") else None
    return None


def container_id(key: str) -> str:
    """A new CNI container id for sandbox ``key``: one per Start, so that a DEL still under
    way for an earlier life never finds the new life's chains (portmap and bridge name
    them after it)."""
    return f"sbx-{hashlib.sha256(key.encode()).hexdigest()[:24]}-{secrets.token_hex(4)}"


def netns_path(base: str, cid: str) -> str:
    """Where the namespace of CNI container ``cid`` is pinned: ``<base>/cni/netns/<cid>``,
    outside the sandbox's directory, which Shutdown removes before its DEL is done."""
    pins = os.path.join(base, "cni", NETNS_FILE)
    os.makedirs(pins, mode=0o700, exist_ok=True)
    return os.path.join(pins, cid)


def join_network(spec: dict[str, Any], path: str) -> None:
    """Have ``spec``'s task join the network namespace at ``path``, not make its own."""
    namespaces = spec["linux"]["namespaces"]
    spec["linux"]["namespaces"] = [
        *(n for n in namespaces if n.get("type") != "network"),
        {"type": "network", "path": path},
    ]


def network_state(
    network: NetworkList,
    cid: str,
    netns: str,
    ports: Iterable[PortMapping],
    request: NetworkRequest,
) -> dict[str, Any]:
    """What teardown needs (``network.json``): the list, ids, the runtime config with the
    ports as held; the ADD's result is filled in once known."""
    ports = list(ports)
    runtime_config: dict[str, Any] = {
        "portMappings": [
            {
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol,
                "hostIP": p.host_ip,
            }
            for p in ports
        ]
    }
    if request.bandwidth is not None:
        runtime_config["bandwidth"] = request.bandwidth.runtime_config()
    return {
        "version": STATE_VERSION,
        "container_id": cid,
        "netns": netns,
        "ifname": IFNAME,
        "network": dict(network.raw),
        "runtime_config": runtime_config,
        "ports": [p.to_json() for p in ports],
        "result": None,
    }


def used_plugins(network: NetworkList, request: NetworkRequest) -> NetworkList:
    """The default list without the plugins ``request`` does not use: portmap without
    ports, bandwidth without limits (each would run for nothing, at ADD, CHECK and DEL)."""
    unused = {"portmap"} if not request.ports else set()
    if request.bandwidth is None:
        unused.add("bandwidth")
    plugins = tuple(p for p in network.plugins if p.get("type") not in unused)
    raw = {**network.raw, "plugins": [dict(p) for p in plugins]}
    return NetworkList(network.name, network.cni_version, plugins, raw)
