"""``new_sandbox``'s network arguments: checked on the client, carried in the spec's
annotation, read back by the sandboxer; what a sandboxer answers, read as hostile input;
and the egress policy's rules."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from sandboxclient import Bandwidth, EgressPolicy, InternalError, PortMapping, SandboxNetwork, oci
from sandboxclient._facts._network import (
    NETWORK_ANNOTATION,
    NetworkRequest,
    network_of,
    network_request,
    parse_network_info,
    parse_network_request,
)
from sandboxclient._models import SandboxState, SandboxStatus
from sandboxclient._plumbing._options import sandbox_draft
from sandboxclient.sandboxer._egress import (
    DENIED_BY_DEFAULT,
    DENIED_BY_DEFAULT_V6,
    host_addresses,
    ruleset,
)


def draft_spec(**kwargs: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        runtime=None,
        runtime_options=None,
        spec=None,
        labels=None,
        extensions=None,
        sandboxer=None,
    )
    draft = sandbox_draft("sb", **{**base, **kwargs})  # type: ignore[arg-type]
    assert draft.spec is not None
    spec = json.loads(draft.spec.value)
    assert isinstance(spec, dict)
    return spec


def test_the_request_travels_in_the_spec_annotation_and_reads_back_the_same() -> None:
    ports = [PortMapping(80), PortMapping(53, host_port=5353, protocol="udp")]
    egress = EgressPolicy(allow=["10.1.2.3", "192.168.0.0/16"], deny=["1.2.3.0/24"])
    spec = draft_spec(network="bridge", ports=ports, egress=egress)
    text = spec["annotations"][NETWORK_ANNOTATION]  # type: ignore[index]
    assert parse_network_request(text) == NetworkRequest("bridge", tuple(ports), egress)
    assert egress.allow == ("10.1.2.3/32", "192.168.0.0/16")  # normalised


def test_ports_or_egress_alone_mean_bridge_and_nothing_means_no_annotation() -> None:
    assert network_request(None, [PortMapping(80)], None) == NetworkRequest(
        "bridge", (PortMapping(80),)
    )
    assert network_request(None, None, EgressPolicy()).mode == "bridge"  # type: ignore[union-attr]
    assert network_request(None, None, None) is None
    assert parse_network_request("bridge") == NetworkRequest("bridge")


def wrong(value: object) -> Any:
    """``value``, typed as anything: a wrong type given on purpose."""
    return value


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: network_request("wifi", None, None), ValueError, "network='wifi'"),
        (lambda: network_request(wrong(1), None, None), TypeError, "network= must be a str"),
        (lambda: network_request("none", [PortMapping(80)], None), ValueError, "ports need"),
        (lambda: network_request("none", None, EgressPolicy()), ValueError, "egress needs"),
        (lambda: network_request("bridge", wrong([80]), None), TypeError, r"ports\[0\] must be"),
        (lambda: network_request("bridge", wrong(PortMapping(80)), None), TypeError, "ports= must"),
        (lambda: network_request("bridge", None, wrong(["10.0.0.0/8"])), TypeError, "egress= must"),
        (
            lambda: network_request(
                "bridge", [PortMapping(80, host_port=8080), PortMapping(81, host_port=8080)], None
            ),
            ValueError,
            r"ports\[1\] and ports\[0\] both publish tcp host port 8080",
        ),
        (lambda: PortMapping(0), ValueError, "container_port 0 is out of range"),
        (lambda: PortMapping(80, host_port=70000), ValueError, "host_port 70000"),
        (lambda: PortMapping(True), TypeError, "container_port must be an int"),
        (lambda: PortMapping(80, host_ip="localhost"), ValueError, "not an IP address"),
        (lambda: PortMapping(80, host_ip="::1"), ValueError, "IPv4 only"),
        (lambda: PortMapping(80, protocol="sctp"), ValueError, "not one of tcp, udp"),  # type: ignore[arg-type]
        (lambda: EgressPolicy(allow=["nope"]), ValueError, r"allow\[0\] 'nope' is not a CIDR"),
        (lambda: EgressPolicy(deny="10.0.0.0/8"), TypeError, "must be a list of CIDRs"),
        (lambda: EgressPolicy(deny=["fd00::/8", "fd00::x/8"]), ValueError, r"deny\[1\]"),
        (lambda: Bandwidth(), ValueError, "needs ingress_rate or egress_rate"),
        (lambda: Bandwidth(egress_rate=0), ValueError, "egress_rate 0 is out of range"),
        (lambda: Bandwidth(1, egress_burst=5), ValueError, "egress_burst without egress_rate"),
        (lambda: Bandwidth(wrong(1.5)), TypeError, "ingress_rate must be an int"),
        (lambda: network_request("none", None, None, Bandwidth(1)), ValueError, "bandwidth needs"),
    ],
)
def test_bad_arguments_are_refused_on_the_client_naming_them(
    make: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make()  # type: ignore[operator]


def test_bandwidth_travels_too_and_becomes_cnis_runtime_config() -> None:
    limits = Bandwidth(ingress_rate=10_000_000, egress_rate=1_000, egress_burst=4_000)
    spec = draft_spec(bandwidth=limits)
    request = parse_network_request(spec["annotations"][NETWORK_ANNOTATION])  # type: ignore[index]
    assert (request.mode, request.bandwidth) == ("bridge", limits)
    assert limits.runtime_config() == {
        "ingressRate": 10_000_000,
        "ingressBurst": 1_000_000,  # a tenth of a second's worth
        "egressRate": 1_000,
        "egressBurst": 4_000,
    }
    assert Bandwidth(egress_rate=1_000).runtime_config()["egressBurst"] == 64 * 1024 * 8


def test_a_spec_annotation_that_asks_for_another_network_is_refused() -> None:
    spec = oci.generate_spec()
    spec["annotations"] = {NETWORK_ANNOTATION: "none"}
    with pytest.raises(ValueError, match="give one of them"):
        draft_spec(spec=spec, network="bridge")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not JSON"),
        ("[]", r"network '\[\]' is not one of"),
        ('{"mode": "bridge", "x": 1}', "unknown fields: x"),
        ('{"mode": "bridge", "ports": {}}', "ports must be a list"),
        ('{"mode": "bridge", "ports": [{"container_port": "80"}]}', r"ports\[0\]: "),
        ('{"mode": "bridge", "egress": {"allow": ["x"]}}', r"egress: EgressPolicy.allow\[0\]"),
        ('{"mode": "none", "ports": [{"container_port": 80}]}', "ports need"),
        ("tunnel", "network 'tunnel' is not one of none, bridge"),
    ],
)
def test_the_sandboxer_reads_the_annotation_strictly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_network_request(text)


def status(info: dict[str, str]) -> SandboxStatus:
    return SandboxStatus("sb", SandboxState.READY, 1, None, None, info=info)


def test_what_the_sandboxer_answers_is_read_into_a_record() -> None:
    sent = SandboxNetwork(
        "bridge",
        (ipaddress.ip_interface("10.213.0.7/16"),),
        ipaddress.ip_address("10.213.0.1"),
        (PortMapping(80, 40123),),
        "sandboxclient",
    )
    got = network_of(status({"network": json.dumps(sent.to_json())}))
    assert got == sent
    assert got.ip == ipaddress.ip_address("10.213.0.7")
    assert got.host_port(80) == 40123
    with pytest.raises(KeyError, match="udp port 80 is not published"):
        got.host_port(80, "udp")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"mode": "mesh"}',
        '{"mode": "bridge", "addresses": ["10.0.0.1/99"]}',
        '{"mode": "bridge", "addresses": [7]}',
        '{"mode": "bridge", "ports": [{"container_port": 80}]}',
        '{"mode": "bridge", "ports": [{"container_port": 80, "host_port": 1, "evil": 1}]}',
    ],
)
def test_a_malformed_answer_is_an_internal_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"info|ports"):
        parse_network_info(text)
    with pytest.raises(InternalError, match="sandbox 'sb'"):
        network_of(status({"network": text}))


def test_no_answer_at_all_is_an_internal_error_saying_so() -> None:
    with pytest.raises(InternalError, match="tells nothing of its network"):
        network_of(status({}))


def test_the_egress_rules_allow_first_then_deny_the_defaults_and_the_hosts_own() -> None:
    policy = EgressPolicy(allow=["10.5.0.0/16", "fd00:5::/64"], deny=["8.8.8.0/24", "::/0"])
    v4, v6 = ruleset(policy, ["192.0.2.2", "fd00::2"])
    output = [line for line in v4.splitlines() if line.startswith("-A OUTPUT")]
    assert output[:3] == [
        "-A OUTPUT -o lo -j ACCEPT",
        "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-A OUTPUT -d 10.5.0.0/16 -j ACCEPT",
    ]
    denied = [line.split()[3] for line in output[3:]]
    assert denied == ["8.8.8.0/24", *DENIED_BY_DEFAULT, "192.0.2.2/32"]
    assert all(line.endswith("-j SANDBOX-DENY") for line in output[3:])
    assert "-A SANDBOX-DENY -p tcp -j REJECT --reject-with tcp-reset" in v4.splitlines()
    # IPv6 the same way, each family's CIDRs in its own table; neighbour discovery passes
    output6 = [line for line in v6.splitlines() if line.startswith("-A OUTPUT")]
    assert output6[:2] == output[:2]
    discovery = [line for line in output6 if "ipv6-icmp" in line]
    assert [line.split()[5] for line in discovery] == [
        "router-solicitation",  # never an advertisement: it could make a sandbox a router
        "neighbour-solicitation",
        "neighbour-advertisement",
    ]
    assert all("-m hl --hl-eq 255 -j ACCEPT" in line for line in discovery)
    rest = output6[2 + len(discovery) :]
    assert rest[0] == "-A OUTPUT -d fd00:5::/64 -j ACCEPT"
    denied6 = [line.split()[3] for line in rest[1:]]
    assert denied6 == ["::/0", *DENIED_BY_DEFAULT_V6, "fd00::2/128"]
    assert "-A SANDBOX-DENY -j REJECT --reject-with icmp6-adm-prohibited" in v6.splitlines()
    assert "10.5.0.0/16" not in v6
    assert "fd00" not in v4


def test_the_hosts_own_addresses_are_read_from_the_kernels_routing_trie() -> None:
    found = host_addresses()
    assert "127.0.0.1" in found
    with open("/proc/net/if_inet6") as f:
        has_ipv6 = bool(f.read().strip())
    assert ("::1" in found) == has_ipv6
    assert len(found) == len(set(found))
