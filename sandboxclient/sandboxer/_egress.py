"""A ``bridge`` sandbox's egress policy, as iptables rules inside its own network namespace.

The rules live in the sandbox's namespace, not the host's: they go with it (nothing to leak,
nothing to clean), and no other sandbox's or the host's rules are touched. The sandbox
cannot change them: containerd's default capabilities have no ``CAP_NET_ADMIN``, a spec
that grants it is refused with a bridge network (:func:`check_capabilities`), and the
default seccomp profile keeps it from making a user namespace of its own to get one.

``OUTPUT``, in order, for IPv4 and IPv6 alike: ``lo`` and replies to connections made to
the sandbox (conntrack ESTABLISHED, RELATED) pass; for IPv6, neighbour discovery and
router solicitations too (ICMPv6 133, 135 and 136 with a hop limit of 255: they cannot
leave the link, and without them no IPv6 packet reaches the gateway), never a router
advertisement; a destination in ``allow`` passes; one in
``deny`` or in :data:`DENIED_BY_DEFAULT` (:data:`DENIED_BY_DEFAULT_V6`) or among the host's
own addresses is rejected (a TCP reset, an ICMP error for the rest, so that a connect
fails at once); the rest passes. On a network list without IPv6 a sandbox still has a
link-local IPv6 address, and the same rules keep it from the host's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._facts._network import EgressPolicy
from .._serve._refusals import invalid_argument

_DENY: Final = "SANDBOX-DENY"

__all__ = (
    "DENIED_BY_DEFAULT",
    "DENIED_BY_DEFAULT_V6",
    "apply_egress",
    "check_capabilities",
    "host_addresses",
    "ruleset",
)

DENIED_BY_DEFAULT: Final = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
"""What a bridge sandbox cannot reach unless its policy allows it: "this" network, the
private, shared (CGNAT), loopback, link-local, IETF, benchmarking, multicast and reserved
ranges (RFC 6890); the host's own addresses are added when the sandbox starts."""

DENIED_BY_DEFAULT_V6: Final = (
    "::/127",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)
"""The same for IPv6: unspecified and loopback, IPv4-mapped, local-use NAT64, discard-only,
IETF protocol assignments, documentation, unique-local, link-local, site-local and
multicast (RFC 6890, RFC 8215)."""


def ruleset(policy: EgressPolicy | None, own: Sequence[str]) -> tuple[str, str]:
    """The ``iptables-restore`` and ``ip6tables-restore`` inputs of ``policy`` (None is the
    default policy), ``own`` being the host's addresses (either family)."""
    policy = policy if policy is not None else EgressPolicy()
    v4, v6 = (_table(policy, own, version) for version in (4, 6))
    return v4, v6


def _table(policy: EgressPolicy, own: Sequence[str], version: int) -> str:
    def mine(cidrs: Sequence[str]) -> list[str]:
        return [c for c in cidrs if ipaddress.ip_network(c, strict=False).version == version]

    icmp = "icmp-admin-prohibited" if version == 4 else "icmp6-adm-prohibited"
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        f":{_DENY} - [0:0]",
        f"-A {_DENY} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A {_DENY} -j REJECT --reject-with {icmp}",
        "-A OUTPUT -o lo -j ACCEPT",
        "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    ]
    if version == 6:
        lines += [
            f"-A OUTPUT -p ipv6-icmp --icmpv6-type {kind} -m hl --hl-eq 255 -j ACCEPT"
            for kind in _DISCOVERY
        ]
    defaults = DENIED_BY_DEFAULT if version == 4 else DENIED_BY_DEFAULT_V6
    host = [f"{a}/{32 if version == 4 else 128}" for a in mine(own)]
    lines += [f"-A OUTPUT -d {cidr} -j ACCEPT" for cidr in mine(policy.allow)]
    denied = [*mine(policy.deny), *defaults, *host]
    lines += [f"-A OUTPUT -d {cidr} -j {_DENY}" for cidr in denied]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


_DISCOVERY: Final = ("router-solicitation", "neighbour-solicitation", "neighbour-advertisement")
# Not router advertisements: a sandbox (CAP_NET_RAW is a default capability) could send
# them to its neighbours on the bridge and become their router.


async def _output(*args: str, stdin: bytes | None = None, timeout: float) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(stdin)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        raise
    if process.returncode != 0:
        why = err.decode(errors="replace").strip()[:300]
        raise OSError(f"{' '.join(args[:3])} failed: {why}")
    return out


def host_addresses() -> list[str]:
    """The host's own addresses (those of the sandboxer's network namespace, every
    interface): IPv4's are the ``/32 host LOCAL`` entries of the kernel's routing trie,
    IPv6's the lines of ``/proc/net/if_inet6`` (none when IPv6 is off)."""
    found: list[str] = []
    previous = ""
    with open("/proc/net/fib_trie", encoding="ascii") as f:
        for line in f:
            text = line.strip()
            if text == "/32 host LOCAL" and previous.startswith("|-- "):
                address = previous[4:]
                if address not in found:
                    found.append(address)
            previous = text
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                raw = line.split()[0]
                address = str(ipaddress.IPv6Address(int(raw, 16)))
                if address not in found:
                    found.append(address)
    except FileNotFoundError:
        pass
    return found


async def apply_egress(netns: str, policy: EgressPolicy | None, *, timeout: float) -> None:
    """Load the policy into the namespace at ``netns`` (OSError if iptables fails)."""
    v4, v6 = ruleset(policy, host_addresses())
    enter = ("nsenter", f"--net={netns}")
    done = await asyncio.gather(  # both run to their end (each bounded), then any failure
        _output(*enter, "iptables-restore", stdin=v4.encode(), timeout=timeout),
        _output(*enter, "ip6tables-restore", stdin=v6.encode(), timeout=timeout),
        return_exceptions=True,
    )
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome


_NET_ADMIN: Final = "CAP_NET_ADMIN"


def check_capabilities(spec: Mapping[str, Any] | None) -> None:
    """Refuse a bridge sandbox whose root could rewrite its egress rules and addresses:
    ``CAP_NET_ADMIN`` in any capability set (its network namespace is its user
    namespace's, or the host's with the host's users)."""
    capabilities = ((spec or {}).get("process") or {}).get("capabilities") or {}
    if not isinstance(capabilities, Mapping):
        return
    if any(_NET_ADMIN in (v or []) for v in capabilities.values() if isinstance(v, list)):
        raise invalid_argument(
            "network 'bridge' with CAP_NET_ADMIN: the sandbox could rewrite its own egress "
            "rules and addresses; drop CAP_NET_ADMIN"
        )
