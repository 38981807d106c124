"""``sandboxctl run``'s network options: read into the library's records, refused by name
when malformed (argparse's usage error) or refused by the library (one error line). That
they reach a real sandbox is tested in tests/sandboxer/test_network.py."""

from __future__ import annotations

import argparse

import pytest

from sandboxclient import Bandwidth, EgressPolicy, PortMapping
from sandboxclient._cli import build_parser
from sandboxclient._cli._netopts import NetworkOptions, network_options, parse_publish, parse_rate
from tests.support.cli import Cli

pytestmark = pytest.mark.anyio


def test_publish_reads_dockers_forms() -> None:
    assert parse_publish("8080") == PortMapping(8080)
    assert parse_publish("9000:8080") == PortMapping(8080, 9000)
    assert parse_publish("127.0.0.1::8080") == PortMapping(8080, None, "127.0.0.1")
    assert parse_publish("10.0.0.1:9000:53/udp") == PortMapping(53, 9000, "10.0.0.1", "udp")
    refused = {
        "": r"expected \[HOST_IP:\]\[HOST_PORT:\]PORT",
        "1:2:3:4": "expected",
        "9000:": "expected",
        "x": "invalid literal",
        "70000": "container_port",
        "80/sctp": "protocol 'sctp'",
        "::1::80": "expected",
        "nothost:1:80": "not an IP address",
    }
    for text, message in refused.items():
        with pytest.raises(argparse.ArgumentTypeError, match=message) as caught:
            parse_publish(text)
        assert repr(text) in str(caught.value)


def test_rates_are_bits_per_second_with_decimal_units() -> None:
    assert [parse_rate(t) for t in ("1500", "8k", "8M", "2G")] == [
        1500,
        8_000,
        8_000_000,
        2_000_000_000,
    ]
    for text in ("", "M", "8Mb", "-1", "0", "1.5M"):
        with pytest.raises(argparse.ArgumentTypeError, match="rate"):
            parse_rate(text)


def test_the_options_become_new_sandboxs_keywords() -> None:
    args = build_parser().parse_args(
        ["run", "n1", "-p", "8080", "--publish", "127.0.0.1:9000:53/udp", "--allow",
         "10.231.1.2/32", "--deny", "0.0.0.0/0", "--ingress-rate", "16M", "--", "sleep", "1"]
    )  # fmt: skip
    got = network_options(args)
    assert got == NetworkOptions(
        None,
        (PortMapping(8080), PortMapping(53, 9000, "127.0.0.1", "udp")),
        EgressPolicy(allow=["10.231.1.2/32"], deny=["0.0.0.0/0"]),
        Bandwidth(ingress_rate=16_000_000),
    )
    plain = network_options(build_parser().parse_args(["run", "n2", "--", "true"]))
    assert plain.keywords() == {"network": None, "ports": None, "egress": None, "bandwidth": None}
    bridge = build_parser().parse_args(["run", "n3", "--network", "bridge", "--", "true"])
    assert network_options(bridge).keywords()["network"] == "bridge"
    with pytest.raises(ValueError, match=r"--allow/--deny: EgressPolicy.allow\[0\]"):
        network_options(build_parser().parse_args(["run", "n4", "--allow", "x", "--", "true"]))


def test_a_malformed_option_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--network", "wifi"], "argument --network: invalid choice: 'wifi'"),
        (["-p", "x:y"], "argument -p/--publish: --publish 'x:y'"),
        (["--egress-rate", "fast"], "argument --egress-rate: rate 'fast'"),
    ):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["run", "n5", *argv, "--", "true"])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


async def test_what_the_library_refuses_is_one_error_line_and_nothing_made(cli: Cli) -> None:
    done = await cli("run", "n6", "--network", "none", "-p", "80", "--", "sleep", "1")
    assert done.code == 1
    done.assert_one_error_line("ports need network='bridge'")
    assert (await cli.ok("ls", "--json")).json() == []
