"""A sandbox's network: what the client asks for, and what the sandboxer answers it got.

The client asks through the sandbox's spec, as it asks for ``host_users``: the annotation
:data:`NETWORK_ANNOTATION` holds a JSON document (``{"mode": "bridge", "ports": [...],
"egress": {...}}``), which the isolating sandboxer reads at Create and refuses, naming the
field, when it is malformed or asks for what the sandboxer cannot give. Carried in the spec,
it is kept with the sandbox's record and read again by a sandboxer started over the same
state. What a started sandbox got (its addresses, its published ports with the host ports
chosen) comes back in Status's ``info[`` :data:`NETWORK_INFO_KEY` ``]``, as JSON, read by
:meth:`Sandbox.network`.

Everything here is plain data: no protobuf, no I/O.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from ..errors import InternalError
from ._netcheck import NETWORK_CHECK_KEY, NetworkCheck, parse_check

if TYPE_CHECKING:
    from .._models import SandboxStatus

__all__ = (
    "NETWORK_ANNOTATION",
    "NETWORK_INFO_KEY",
    "NETWORK_MODES",
    "Bandwidth",
    "EgressPolicy",
    "NetworkRequest",
    "PortMapping",
    "SandboxNetwork",
    "network_of",
    "network_request",
    "parse_network_info",
    "parse_network_request",
)

NETWORK_ANNOTATION: Final = "io.sandboxclient.network"
"""The spec annotation that asks the isolating sandboxer for a network (JSON)."""

NETWORK_INFO_KEY: Final = "network"
"""The key of Status ``info`` that holds a started sandbox's network (JSON)."""

NETWORK_MODES: Final = ("none", "bridge")
"""``none``: a network namespace with only ``lo`` (the default). ``bridge``: an address on
the sandboxer's CNI bridge, NAT out through the host."""

_PROTOCOLS: Final = ("tcp", "udp")
_ANY: Final = (ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv6Address("::"))


def _object(data: object, what: str, fields: frozenset[str]) -> Mapping[str, Any]:
    """``data`` as a JSON object holding no field but ``fields`` (ValueError naming ``what``)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be an object")
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"{what} has unknown fields: {', '.join(sorted(unknown))}")
    return data


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range ({low}..{high})")
    return value


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A port of the sandbox published on the host (through CNI's ``portmap``).

    ``host_port`` None picks a free port, told back by :meth:`Sandbox.network`;
    ``host_ip`` is the host address it listens on (loopback unless said otherwise: it must
    be one of the host's own); ``protocol`` is ``"tcp"`` or ``"udp"``.
    """

    container_port: int
    host_port: int | None = None
    host_ip: str = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"

    def __post_init__(self) -> None:
        _int(self.container_port, "PortMapping.container_port", 1, 65535)
        if self.host_port is not None:
            _int(self.host_port, "PortMapping.host_port", 1, 65535)
        if not isinstance(self.host_ip, str):
            raise TypeError(f"PortMapping.host_ip must be a str, got {type(self.host_ip).__name__}")
        try:
            address = ipaddress.ip_address(self.host_ip)
        except ValueError:
            raise ValueError(f"PortMapping.host_ip {self.host_ip!r} is not an IP address") from None
        if address.version != 4:
            raise ValueError(
                f"PortMapping.host_ip {self.host_ip!r}: ports are published on IPv4 only"
            )
        if self.protocol not in _PROTOCOLS:
            raise ValueError(f"PortMapping.protocol {self.protocol!r} is not one of tcp, udp")

    def to_json(self) -> dict[str, Any]:
        """The mapping as the annotation and Status carry it."""
        return {
            "container_port": self.container_port,
            "host_port": self.host_port,
            "host_ip": self.host_ip,
            "protocol": self.protocol,
        }

    @classmethod
    def from_json(cls, data: object, what: str) -> PortMapping:
        """A mapping from its JSON form (ValueError/TypeError naming ``what``)."""
        data = _object(
            data, what, frozenset({"container_port", "host_port", "host_ip", "protocol"})
        )
        try:
            return cls(
                data.get("container_port"),  # type: ignore[arg-type]
                data.get("host_port"),
                data.get("host_ip", "127.0.0.1"),
                data.get("protocol", "tcp"),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: {exc}") from None


def _networks(values: Iterable[object], what: str) -> tuple[str, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a list of CIDRs, got {type(values).__name__}")
    found = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{what}[{index}] must be a str, got {type(value).__name__}")
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{what}[{index}] {value!r} is not a CIDR") from None
        found.append(str(network))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where a ``bridge`` sandbox may open connections to (IPv4 and IPv6 CIDRs).

    A destination in ``allow`` is reachable; else one in ``deny``, or in a range the
    sandboxer denies by default (private, shared and link-local ranges, loopback, multicast,
    and every address of the host itself), is not; anything else is. So the default policy
    (``EgressPolicy()``) reaches the internet and nothing local, an address on the local
    network is allowed by listing it in ``allow``, and an allow-list is
    ``EgressPolicy(allow=[...], deny=["0.0.0.0/0", "::/0"])``. Replies to connections made
    to the sandbox (its published ports) always pass. IPv6 applies on a dual-stack network
    list; the defaults deny the same kinds of ranges there (unique-local, link-local,
    loopback, multicast...), neighbour discovery excepted.
    """

    allow: Sequence[str] = ()
    deny: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", _networks(self.allow, "EgressPolicy.allow"))
        object.__setattr__(self, "deny", _networks(self.deny, "EgressPolicy.deny"))

    def to_json(self) -> dict[str, Any]:
        """The policy as the annotation carries it."""
        return {"allow": list(self.allow), "deny": list(self.deny)}

    @classmethod
    def from_json(cls, data: object, what: str) -> EgressPolicy:
        """A policy from its JSON form (ValueError naming ``what``)."""
        data = _object(data, what, frozenset({"allow", "deny"}))
        try:
            return cls(data.get("allow") or (), data.get("deny") or ())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: {exc}") from None


_MAX_RATE: Final = 2**53


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """Rate limits of a ``bridge`` sandbox's traffic, in bits per second (CNI's
    ``bandwidth`` plugin: a token bucket on its host-side interface). ``ingress_rate`` is
    what reaches the sandbox, ``egress_rate`` what leaves it; None is no limit. A burst is
    the bits that may pass at once above the rate (by default a tenth of a second's worth,
    at least 64 KiB)."""

    ingress_rate: int | None = None
    egress_rate: int | None = None
    ingress_burst: int | None = None
    egress_burst: int | None = None

    def __post_init__(self) -> None:
        for name in ("ingress_rate", "egress_rate", "ingress_burst", "egress_burst"):
            value = getattr(self, name)
            if value is not None:
                _int(value, f"Bandwidth.{name}", 1, _MAX_RATE)
        if self.ingress_rate is None and self.egress_rate is None:
            raise ValueError("Bandwidth needs ingress_rate or egress_rate")
        for side in ("ingress", "egress"):
            if getattr(self, f"{side}_burst") is not None and getattr(self, f"{side}_rate") is None:
                raise ValueError(f"Bandwidth.{side}_burst without {side}_rate")

    def to_json(self) -> dict[str, Any]:
        """The limits as the annotation carries them."""
        return {
            "ingress_rate": self.ingress_rate,
            "egress_rate": self.egress_rate,
            "ingress_burst": self.ingress_burst,
            "egress_burst": self.egress_burst,
        }

    @classmethod
    def from_json(cls, data: object, what: str) -> Bandwidth:
        """Limits from their JSON form (ValueError naming ``what``)."""
        data = _object(
            data, what, frozenset({"ingress_rate", "egress_rate", "ingress_burst", "egress_burst"})
        )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: {exc}") from None

    def runtime_config(self) -> dict[str, int]:
        """CNI's ``bandwidth`` runtime config (rates and bursts in bits)."""
        found: dict[str, int] = {}
        for side in ("ingress", "egress"):
            rate = getattr(self, f"{side}_rate")
            if rate is not None:
                burst = getattr(self, f"{side}_burst") or max(rate // 10, 64 * 1024 * 8)
                found[f"{side}Rate"], found[f"{side}Burst"] = rate, burst
        return found


@dataclass(frozen=True, slots=True)
class NetworkRequest:
    """What a sandbox asks of the sandboxer's network (see :func:`network_request`)."""

    mode: str = "none"
    ports: tuple[PortMapping, ...] = ()
    egress: EgressPolicy | None = None
    bandwidth: Bandwidth | None = None

    def to_annotation(self) -> str:
        """The request as :data:`NETWORK_ANNOTATION`'s value."""
        data: dict[str, Any] = {"mode": self.mode}
        if self.ports:
            data["ports"] = [p.to_json() for p in self.ports]
        if self.egress is not None:
            data["egress"] = self.egress.to_json()
        if self.bandwidth is not None:
            data["bandwidth"] = self.bandwidth.to_json()
        return json.dumps(data, separators=(",", ":"), sort_keys=True)


def network_request(
    network: str | None,
    ports: Sequence[PortMapping] | None,
    egress: EgressPolicy | None,
    bandwidth: Bandwidth | None = None,
) -> NetworkRequest | None:
    """``new_sandbox``'s ``network``, ``ports``, ``egress`` and ``bandwidth`` checked into a
    request, or None when none is given. TypeError/ValueError naming the argument: an
    unknown mode; ports, egress or bandwidth without ``network="bridge"``; two mappings of
    one host port."""
    if network is None and not ports and egress is None and bandwidth is None:
        return None
    mode = "bridge" if network is None else network
    if not isinstance(mode, str):
        raise TypeError(f"network= must be a str, got {type(mode).__name__}")
    if mode not in NETWORK_MODES:
        raise ValueError(f"network={mode!r} is not one of {', '.join(NETWORK_MODES)}")
    found: tuple[PortMapping, ...] = ()
    if ports is not None:
        if isinstance(ports, str | bytes | PortMapping) or not isinstance(ports, Iterable):
            raise TypeError("ports= must be a list of PortMapping")
        found = tuple(ports)
        for index, port in enumerate(found):
            if not isinstance(port, PortMapping):
                raise TypeError(f"ports[{index}] must be a PortMapping, got {type(port).__name__}")
    if egress is not None and not isinstance(egress, EgressPolicy):
        raise TypeError(f"egress= must be an EgressPolicy, got {type(egress).__name__}")
    if bandwidth is not None and not isinstance(bandwidth, Bandwidth):
        raise TypeError(f"bandwidth= must be a Bandwidth, got {type(bandwidth).__name__}")
    request = NetworkRequest(mode, found, egress, bandwidth)
    check_request(request)
    return request


def check_request(request: NetworkRequest) -> None:
    """Refuse (ValueError naming the field) what no sandboxer could give."""
    if request.mode != "bridge" and request.ports:
        raise ValueError(f"ports need network='bridge', not {request.mode!r}")
    if request.mode != "bridge" and request.egress is not None:
        raise ValueError(f"egress needs network='bridge', not {request.mode!r}")
    if request.mode != "bridge" and request.bandwidth is not None:
        raise ValueError(f"bandwidth needs network='bridge', not {request.mode!r}")
    seen: dict[tuple[str, int, str], int] = {}
    for index, port in enumerate(request.ports):
        if port.host_port is None:
            continue
        key = (port.host_ip, port.host_port, port.protocol)
        wildcard = (str(_ANY[0]), port.host_port, port.protocol)
        for other in (key, wildcard):
            if other in seen:
                raise ValueError(
                    f"ports[{index}] and ports[{seen[other]}] both publish "
                    f"{port.protocol} host port {port.host_port}"
                )
        seen[key] = index


def parse_network_request(text: str) -> NetworkRequest:
    """Read :data:`NETWORK_ANNOTATION`'s value: a mode's name, or the JSON document.
    ValueError naming the field when malformed."""
    what = f"annotation {NETWORK_ANNOTATION}"
    if not text.lstrip().startswith("{"):
        data: Any = {"mode": text}
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} is not JSON: {exc}") from None
    data = _object(data, what, frozenset({"mode", "ports", "egress", "bandwidth"}))
    mode = data.get("mode", "none")
    if mode not in NETWORK_MODES:
        raise ValueError(f"network {mode!r} is not one of {', '.join(NETWORK_MODES)}")
    raw_ports = data.get("ports")
    raw_ports = [] if raw_ports is None else raw_ports
    if not isinstance(raw_ports, list):
        raise ValueError("ports must be a list")
    ports = tuple(PortMapping.from_json(p, f"ports[{i}]") for i, p in enumerate(raw_ports))
    raw_egress = data.get("egress")
    egress = None if raw_egress is None else EgressPolicy.from_json(raw_egress, "egress")
    raw_bandwidth = data.get("bandwidth")
    bandwidth = None if raw_bandwidth is None else Bandwidth.from_json(raw_bandwidth, "bandwidth")
    request = NetworkRequest(str(mode), ports, egress, bandwidth)
    check_request(request)
    return request


@dataclass(frozen=True, slots=True)
class SandboxNetwork:
    """What a started sandbox got of its network (:meth:`Sandbox.network`)."""

    mode: str
    """``none`` or ``bridge``."""
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    """Its addresses with their prefix (``10.213.0.5/24``)."""
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    """Its default gateway, the host's address on the bridge."""
    ports: tuple[PortMapping, ...] = field(default=())
    """Its published ports, each with the host port it got."""
    name: str = ""
    """The CNI network it is on."""
    check: NetworkCheck | None = None
    """What CNI's CHECK found, when asked for (``network(check=True)``) and given."""

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """Its first address, or None (``none``)."""
        return self.addresses[0].ip if self.addresses else None

    def host_port(self, container_port: int, protocol: str = "tcp") -> int:
        """The host port ``container_port`` is published on (KeyError if it is not)."""
        for port in self.ports:
            if port.container_port == container_port and port.protocol == protocol:
                assert port.host_port is not None
                return port.host_port
        raise KeyError(f"{protocol} port {container_port} is not published")

    def to_json(self) -> dict[str, Any]:
        """The network as Status ``info[NETWORK_INFO_KEY]`` carries it."""
        return {
            "mode": self.mode,
            "name": self.name,
            "addresses": [str(a) for a in self.addresses],
            "gateway": None if self.gateway is None else str(self.gateway),
            "ports": [p.to_json() for p in self.ports],
        }


def parse_network_info(text: str) -> SandboxNetwork:
    """Read what a sandboxer answered in Status ``info``: hostile input, checked whole
    (ValueError naming what is wrong)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"info[{NETWORK_INFO_KEY!r}] is not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"info[{NETWORK_INFO_KEY!r}] must be a JSON object")
    mode, name = data.get("mode"), data.get("name", "")
    if mode not in NETWORK_MODES or not isinstance(name, str):
        raise ValueError(f"info[{NETWORK_INFO_KEY!r}] has no valid mode or name")
    addresses = data.get("addresses") or []
    ports = data.get("ports") or []
    if not isinstance(addresses, list) or not isinstance(ports, list):
        raise ValueError(f"info[{NETWORK_INFO_KEY!r}]: addresses and ports must be lists")
    try:
        found = tuple(ipaddress.ip_interface(a) for a in addresses if isinstance(a, str))
        gateway = data.get("gateway")
        gw = None if gateway is None else ipaddress.ip_address(str(gateway))
    except ValueError as exc:
        raise ValueError(f"info[{NETWORK_INFO_KEY!r}]: {exc}") from None
    if len(found) != len(addresses):
        raise ValueError(f"info[{NETWORK_INFO_KEY!r}]: addresses must be strings")
    published = tuple(PortMapping.from_json(p, f"ports[{i}]") for i, p in enumerate(ports))
    if any(p.host_port is None for p in published):
        raise ValueError(f"info[{NETWORK_INFO_KEY!r}]: a published port has no host port")
    return SandboxNetwork(mode, found, gw, published, name)


def network_of(status: SandboxStatus, *, check: bool = False) -> SandboxNetwork:
    """The network a Status answer tells of (with ``check``, and the CHECK it tells of);
    InternalError (naming the sandbox) when it tells none or what it tells does not parse."""
    text = status.info.get(NETWORK_INFO_KEY)
    if text is None:
        raise InternalError(
            f"sandbox {status.id!r}: its controller's Status tells nothing of its network "
            f"(no info[{NETWORK_INFO_KEY!r}]; is it started, and by the isolating sandboxer?)"
        )
    checked = status.info.get(NETWORK_CHECK_KEY) if check else None
    try:
        found = parse_network_info(text)
        return found if checked is None else replace(found, check=parse_check(checked))
    except (TypeError, ValueError) as exc:
        raise InternalError(f"sandbox {status.id!r}: {exc}") from exc
