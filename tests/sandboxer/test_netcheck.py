"""CNI CHECK of a sandbox's network, plugin by plugin, against fake plugins named as the
real ones (no root, no network): what passes, what fails and stops the rest, and the known
defects of Debian's plugins skipped by reason only when both their message and their cause
are there. And the client's reading of the outcome, as hostile input."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import NetworkCheck, PluginCheck
from sandboxclient._facts._netcheck import parse_check
from sandboxclient.sandboxer._cni import NetworkList, parse_network_list
from sandboxclient.sandboxer._netcheck import check_network

pytestmark = pytest.mark.anyio

FAKE = """#!/bin/sh
cat > /dev/null
name=$(basename "$0")
echo "$name $CNI_COMMAND" >> "{log}"
if [ -f "{dir}/fail-$name" ]; then
    cat "{dir}/fail-$name"
    exit 1
fi
"""
V4: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "ips": [{"address": "10.213.0.5/16", "gateway": "10.213.0.1"}],
}
V6: dict[str, Any] = {"cniVersion": "1.0.0", "ips": [*V4["ips"], {"address": "fd00:213::5/64"}]}
PORTMAP_819 = {"code": 999, "msg": "could not check ipv6 dnat: chain CNI-DN-x not found"}
PANIC = "panic: runtime error: invalid memory address or nil pointer dereference\n"


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("bridge", "portmap", "bandwidth"):
        path = bindir / name
        path.write_text(FAKE.format(log=tmp_path / "log", dir=tmp_path))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bindir


def network(**extra: object) -> NetworkList:
    plugins = [
        {"type": "bridge"},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ]
    return parse_network_list(
        {"cniVersion": "1.0.0", "name": "n", "plugins": plugins, **extra}, "t"
    )


async def check(
    plugins: Path,
    previous: dict[str, object],
    runtime: dict[str, object] | None = None,
    **extra: object,
) -> NetworkCheck:
    return await check_network(
        network(**extra),
        container_id="c",
        netns="/n",
        ifname="eth0",
        bin_dirs=[str(plugins)],
        previous=previous,
        runtime_config=runtime or {},
        timeout=10,
    )  # fmt: skip


def outcomes(found: NetworkCheck) -> list[tuple[str, str]]:
    return [(p.plugin, p.outcome) for p in found.plugins]


async def test_every_plugin_passing_is_ok(plugins: Path) -> None:
    found = await check(plugins, V4)
    assert outcomes(found) == [("bridge", "ok"), ("portmap", "ok"), ("bandwidth", "ok")]
    assert found.ok
    log = (plugins.parent / "log").read_text().split("\n")
    assert log[:3] == ["bridge CHECK", "portmap CHECK", "bandwidth CHECK"]


async def test_debians_known_check_defects_are_skipped_by_reason_only_where_they_apply(
    plugins: Path,
) -> None:
    (plugins.parent / "fail-portmap").write_text(json.dumps(PORTMAP_819))
    (plugins.parent / "fail-bandwidth").write_text(PANIC)  # on stdout: not a JSON answer
    found = await check(plugins, V4)
    assert outcomes(found) == [("bridge", "ok"), ("portmap", "skipped"), ("bandwidth", "skipped")]
    assert found.ok
    assert "containernetworking/plugins#819" in found.plugins[1].detail
    assert "containernetworking/plugins#1221" in found.plugins[2].detail
    # with IPv6 and mappings on IPv4 host addresses only, still the same defect
    v4_only: dict[str, object] = {
        "portMappings": [{"hostPort": 1, "containerPort": 2, "hostIP": "127.0.0.1"}]
    }
    found = await check(plugins, V6, v4_only)
    assert outcomes(found)[1] == ("portmap", "skipped")
    # the same messages where their cause is absent are failures: a mapping on every
    # host address (both families) of a sandbox with IPv6...
    found = await check(plugins, V6, {"portMappings": [{"hostPort": 1, "containerPort": 2}]})
    assert outcomes(found) == [("bridge", "ok"), ("portmap", "failed"), ("bandwidth", "not run")]
    assert not found.ok
    assert "could not check ipv6 dnat" in found.plugins[1].detail
    # ...or limits that bandwidth does shape
    (plugins.parent / "fail-portmap").unlink()
    found = await check(plugins, V4, {"bandwidth": {"ingressRate": 8000, "ingressBurst": 800}})
    assert outcomes(found) == [("bridge", "ok"), ("portmap", "ok"), ("bandwidth", "failed")]


async def test_a_failure_stops_the_check_and_names_the_plugin(plugins: Path) -> None:
    (plugins.parent / "fail-bridge").write_text(json.dumps({"code": 7, "msg": "no eth0"}))
    found = await check(plugins, V4)
    assert outcomes(found) == [
        ("bridge", "failed"),
        ("portmap", "not run"),
        ("bandwidth", "not run"),
    ]
    assert found.plugins[0].detail == "CNI plugin bridge CHECK failed (code 7): no eth0"
    assert (plugins.parent / "log").read_text() == "bridge CHECK\n"


async def test_a_network_list_that_disables_check_is_not_checked(plugins: Path) -> None:
    found = await check(plugins, V4, disableCheck=True)
    assert {p.outcome for p in found.plugins} == {"skipped"}
    assert "disableCheck" in found.plugins[0].detail
    assert not (plugins.parent / "log").exists()


def test_the_client_reads_the_outcome_strictly() -> None:
    given = NetworkCheck((PluginCheck("bridge", "ok"), PluginCheck("portmap", "skipped", "why")))
    assert parse_check(json.dumps(given.to_json())) == given
    bad = {
        "not JSON": "{",
        "plugins list": json.dumps({"plugins": "x"}),
        r"plugins\[0\] must be": json.dumps({"plugins": [["bridge", "fine", ""]]}),
        r"plugins\[1\] must be": json.dumps({"plugins": [["a", "ok", ""], ["b", "ok"]]}),
    }
    for message, text in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_check(text)
