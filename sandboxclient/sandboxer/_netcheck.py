"""CNI CHECK of a running sandbox's network, and the plugin defects it skips by name.

CHECK runs each plugin of the network list in order with the cached ADD result as
``prevResult`` (CNI 1.0's spec), and stops at the first that fails. Not when the list says
``"disableCheck": true``. Two plugins of Debian 12's containernetworking-plugins 1.1.1 fail
CHECK where nothing is wrong; such a failure, recognised by its message *and* by the
condition that causes it, is reported as ``skipped`` with the reason, not as a failure
(:data:`KNOWN_DEFECTS`). Any other failure, from the same plugins too, stays a failure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .._facts._netcheck import NetworkCheck, PluginCheck
from ._cni import CniError, NetworkList, network_check

__all__ = ("KNOWN_DEFECTS", "KnownDefect", "check_network")


@dataclass(frozen=True, slots=True)
class KnownDefect:
    """A plugin's CHECK failing where nothing is wrong: which plugin, why, and how to tell."""

    plugin: str
    reason: str
    applies: Callable[[CniError, Mapping[str, Any]], bool]
    """Given the failure and the config the plugin was given: whether it is this defect."""


def _no_ipv6(config: Mapping[str, Any]) -> bool:
    ips = (config.get("prevResult") or {}).get("ips") or []
    return not any(
        isinstance(ip, Mapping)
        and isinstance(ip.get("address"), str)
        and ipaddress.ip_interface(ip["address"]).version == 6
        for ip in ips
    )


def _ipv4_mappings(config: Mapping[str, Any]) -> bool:
    mappings = (config.get("runtimeConfig") or {}).get("portMappings") or []
    return all(
        isinstance(m, Mapping)
        and bool(m.get("hostIP"))
        and ipaddress.ip_address(str(m["hostIP"])).version == 4
        for m in mappings
    )


def _no_limits(config: Mapping[str, Any]) -> bool:
    rates = ("ingressRate", "egressRate")
    given = config.get("runtimeConfig", {}).get("bandwidth") or {}
    return not any(config.get(k) or given.get(k) for k in rates)


KNOWN_DEFECTS: Final = (
    KnownDefect(
        "portmap",
        "portmap 1.1.1 checks IPv6 DNAT rules for mappings it forwards only over IPv4: "
        "those of a sandbox without IPv6, and those with an IPv4 host address "
        "(containernetworking/plugins#819)",
        lambda exc, config: (
            "could not check ipv6" in exc.msg and (_no_ipv6(config) or _ipv4_mappings(config))
        ),
    ),
    KnownDefect(
        "bandwidth",
        "bandwidth before 1.9.1 crashes on CHECK when it shapes nothing, as for this "
        "sandbox (containernetworking/plugins#1221)",
        lambda exc, config: "nil pointer dereference" in exc.msg and _no_limits(config),
    ),
)
"""The CHECK failures that are the plugin's, not the network's."""


async def check_network(
    network: NetworkList,
    *,
    container_id: str,
    netns: str,
    ifname: str,
    bin_dirs: Sequence[str],
    previous: Mapping[str, Any],
    runtime_config: Mapping[str, Any],
    timeout: float,
) -> NetworkCheck:
    """CHECK ``network`` as set up for a sandbox (see the module's docstring)."""
    kinds = [str(p["type"]) for p in network.plugins]
    if network.raw.get("disableCheck") is True:
        why = f"network list {network.name!r} sets disableCheck"
        return NetworkCheck(tuple(PluginCheck(k, "skipped", why) for k in kinds))
    outcomes: list[PluginCheck] = []
    for index, plugin in enumerate(network.plugins):
        one = NetworkList(network.name, network.cni_version, (plugin,), network.raw)
        try:
            await network_check(
                one,
                container_id=container_id,
                netns=netns,
                ifname=ifname,
                bin_dirs=bin_dirs,
                previous=previous,
                runtime_config=runtime_config,
                timeout=timeout,
                on_failure=_recognise,
            )
        except CniError as exc:
            outcomes.append(PluginCheck(kinds[index], "failed", str(exc)))
            outcomes += [PluginCheck(k, "not run") for k in kinds[index + 1 :]]
            break
        except _Skipped as skipped:
            outcomes.append(PluginCheck(kinds[index], "skipped", skipped.reason))
        else:
            outcomes.append(PluginCheck(kinds[index], "ok"))
    return NetworkCheck(tuple(outcomes))


class _Skipped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _recognise(exc: CniError, config: Mapping[str, Any]) -> None:
    for defect in KNOWN_DEFECTS:
        try:
            applies = defect.plugin == exc.plugin and defect.applies(exc, config)
        except (ValueError, TypeError, AttributeError):  # a result it cannot read: not it
            applies = False
        if applies:
            raise _Skipped(defect.reason) from exc
