"""``sandboxctl run``'s network options, read into the library's records.

``--network none|bridge``; ``-p/--publish [HOST_IP:][HOST_PORT:]PORT[/tcp|/udp]`` as
Docker reads it (``8080``, ``9000:8080``, ``127.0.0.1::8080`` for a free host port,
``53/udp``); ``--allow CIDR`` and ``--deny CIDR`` (the egress policy, each repeatable);
``--ingress-rate``/``--egress-rate RATE`` in bits per second, with an optional decimal
``k``, ``M`` or ``G`` (``8M`` is 8,000,000). Any of the last four alone means a bridge
network, as it does to ``new_sandbox``. A malformed value is an argparse error naming the
option and the value.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from .._facts._network import Bandwidth, EgressPolicy, PortMapping

__all__ = (
    "NetworkOptions",
    "add_network_options",
    "network_options",
    "parse_publish",
    "parse_rate",
)

_RATE_UNITS = {"": 1, "k": 1_000, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}


def parse_publish(text: str) -> PortMapping:
    """``[HOST_IP:][HOST_PORT:]PORT[/PROTO]`` as a :class:`PortMapping`."""
    spec, _, protocol = text.partition("/")
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not parts[-1]:
        raise argparse.ArgumentTypeError(
            f"--publish {text!r}: expected [HOST_IP:][HOST_PORT:]PORT[/tcp|/udp]"
        )
    host_ip = parts[0] if len(parts) == 3 else "127.0.0.1"
    host_port = parts[-2] if len(parts) >= 2 else ""
    try:
        return PortMapping(
            int(parts[-1]),
            int(host_port) if host_port else None,
            host_ip or "127.0.0.1",
            protocol or "tcp",  # type: ignore[arg-type]  # checked by PortMapping
        )
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--publish {text!r}: {exc}") from None


def parse_rate(text: str) -> int:
    """A rate in bits per second: an integer with an optional ``k``, ``M`` or ``G``."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in ("k", "K", "M", "G") else (text, "")
    try:
        value = int(number) * _RATE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"rate {text!r}: expected bits per second, such as 8000000 or 8M"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"rate {text!r} must be positive")
    return value


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """Add the network options to ``sandboxctl run``'s parser."""
    group = parser.add_argument_group("network (the isolating sandboxer)")
    group.add_argument(
        "--network",
        choices=("none", "bridge"),
        help="none: only lo (the default); bridge: an address on the sandboxer's bridge, "
        "NAT out to what its egress policy allows",
    )
    group.add_argument(
        "-p",
        "--publish",
        dest="ports",
        metavar="[HOST_IP:][HOST_PORT:]PORT[/PROTO]",
        type=parse_publish,
        action="append",
        default=[],
        help="publish the sandbox's PORT on the host (127.0.0.1 and a free port unless "
        "given; repeatable); `sandboxctl status` shows the host port",
    )
    for kind, what in (("allow", "may"), ("deny", "may not")):
        group.add_argument(
            f"--{kind}",
            dest=kind,
            metavar="CIDR",
            action="append",
            default=[],
            help=f"a destination the sandbox {what} connect to (repeatable); private, "
            "link-local and the host's own addresses are denied unless allowed",
        )
    for way, what in (("ingress", "into"), ("egress", "out of")):
        group.add_argument(
            f"--{way}-rate",
            dest=f"{way}_rate",
            metavar="RATE",
            type=parse_rate,
            help=f"limit traffic {what} the sandbox to RATE bits per second (8M = 8 Mbit/s)",
        )


@dataclass(frozen=True)
class NetworkOptions:
    """What ``sandboxctl run`` asks of the sandbox's network (``new_sandbox``'s keywords)."""

    network: str | None = None
    ports: tuple[PortMapping, ...] = ()
    egress: EgressPolicy | None = None
    bandwidth: Bandwidth | None = None

    def keywords(self) -> dict[str, Any]:
        """``new_sandbox``'s keywords for what was given (nothing given: none)."""
        return {
            "network": self.network,
            "ports": list(self.ports) or None,
            "egress": self.egress,
            "bandwidth": self.bandwidth,
        }


def network_options(args: argparse.Namespace) -> NetworkOptions:
    """What the parsed options ask for (ValueError naming an option the library refuses)."""
    egress = bandwidth = None
    if args.allow or args.deny:
        try:
            egress = EgressPolicy(allow=args.allow, deny=args.deny)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--allow/--deny: {exc}") from None
    if args.ingress_rate is not None or args.egress_rate is not None:
        bandwidth = Bandwidth(ingress_rate=args.ingress_rate, egress_rate=args.egress_rate)
    return NetworkOptions(args.network, tuple(args.ports), egress, bandwidth)
