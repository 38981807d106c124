"""CNI's exec protocol as the sandboxer speaks it, against fake plugins that record what
they were given (no root, no network): the environment, the config on stdin with the
previous result and the runtime config of declared capabilities, the order of ADD and DEL,
and the errors plugins report."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import Bandwidth, PortMapping
from sandboxclient._facts._network import NetworkRequest
from sandboxclient.sandboxer._cni import (
    CniError,
    load_network_list,
    network_add,
    network_check,
    network_del,
    parse_network_list,
)
from sandboxclient.sandboxer._netconf import used_plugins
from sandboxclient.sandboxer._podnet import PodNetworks, default_network_list
from sandboxclient.sandboxer._podstate import PodTable

pytestmark = pytest.mark.anyio

FAKE = """#!/bin/sh
# Records its name, environment and stdin; fails or answers as the files beside it say.
name=$(basename "$0")
input=$(cat)
{{
    printf '{{"plugin": "%s", "command": "%s", ' "$name" "$CNI_COMMAND"
    printf '"id": "%s", ' "$CNI_CONTAINERID"
    printf '"netns": "%s", "ifname": "%s", "path": "%s", ' "$CNI_NETNS" "$CNI_IFNAME" "$CNI_PATH"
    printf '"stdin": %s}}\\n' "$input"
}} >> "{log}"
if [ -f "{dir}/fail-$name-$CNI_COMMAND" ]; then
    cat "{dir}/fail-$name-$CNI_COMMAND"
    exit 1
fi
if [ "$CNI_COMMAND" = ADD ]; then
    cat "{dir}/answer-$name"
fi
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("first", "second"):
        path = bindir / name
        path.write_text(FAKE.format(log=tmp_path / "log", dir=tmp_path))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        answer = {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": f"10.9.0.{len(name)}/24", "gateway": "10.9.0.1", "interface": 0}],
        }
        (tmp_path / f"answer-{name}").write_text(json.dumps(answer))
    return bindir


def calls(plugins: Path) -> list[dict[str, Any]]:
    log = plugins.parent / "log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


NETWORK = {
    "cniVersion": "1.0.0",
    "name": "testnet",
    "plugins": [
        {"type": "first", "bridge": "x"},
        {"type": "second", "capabilities": {"portMappings": True}},
    ],
}
RUNTIME = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}], "x": 1}


async def test_add_runs_the_plugins_in_order_each_given_the_one_befores_result(
    plugins: Path,
) -> None:
    network = parse_network_list(NETWORK, "test")
    result = await network_add(
        network,
        container_id="c1",
        netns="/run/ns",
        ifname="eth0",
        bin_dirs=[str(plugins)],
        runtime_config=RUNTIME,
    )
    assert result.ips == (("10.9.0.6/24", "10.9.0.1"),)  # the last plugin's answer
    assert result.interfaces == ("eth0",)
    first, second = calls(plugins)
    for call in (first, second):
        assert (call["command"], call["id"], call["netns"], call["ifname"], call["path"]) == (
            "ADD",
            "c1",
            "/run/ns",
            "eth0",
            str(plugins),
        )
        assert call["stdin"]["cniVersion"] == "1.0.0"
        assert call["stdin"]["name"] == "testnet"
    assert first["plugin"] == "first"
    assert "prevResult" not in first["stdin"]
    assert "runtimeConfig" not in first["stdin"]  # it declares no capability
    assert second["stdin"]["prevResult"]["ips"][0]["address"] == "10.9.0.5/24"
    # only the capabilities it declares
    assert second["stdin"]["runtimeConfig"] == {"portMappings": RUNTIME["portMappings"]}


async def test_del_runs_in_reverse_with_the_cached_result_and_check_in_order(
    plugins: Path,
) -> None:
    network = parse_network_list(NETWORK, "test")
    cached = {"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.6/24"}]}
    common = {"container_id": "c1", "netns": "/n", "ifname": "eth0", "bin_dirs": [str(plugins)]}
    await network_del(network, previous=cached, **common)  # type: ignore[arg-type]
    await network_check(network, previous=cached, **common)  # type: ignore[arg-type]
    found = [(c["plugin"], c["command"], c["stdin"]["prevResult"]) for c in calls(plugins)]
    assert found == [
        ("second", "DEL", cached),
        ("first", "DEL", cached),
        ("first", "CHECK", cached),
        ("second", "CHECK", cached),
    ]


async def test_a_plugins_error_is_raised_with_its_code_and_del_still_runs_the_rest(
    plugins: Path,
) -> None:
    network = parse_network_list(NETWORK, "test")
    error = {"cniVersion": "1.0.0", "code": 7, "msg": "no luck", "details": "at all"}
    (plugins.parent / "fail-second-ADD").write_text(json.dumps(error))
    (plugins.parent / "fail-second-DEL").write_text(json.dumps(error))
    common = {"container_id": "c1", "netns": "/n", "ifname": "eth0", "bin_dirs": [str(plugins)]}
    with pytest.raises(CniError, match=r"second ADD failed \(code 7\): no luck: at all") as caught:
        await network_add(network, **common)  # type: ignore[arg-type]
    assert caught.value.code == 7
    with pytest.raises(CniError, match="second DEL"):
        await network_del(network, **common)  # type: ignore[arg-type]
    assert [(c["plugin"], c["command"]) for c in calls(plugins)][-2:] == [
        ("second", "DEL"),
        ("first", "DEL"),
    ]


async def test_a_missing_plugin_and_a_non_json_answer_are_cni_errors(plugins: Path) -> None:
    missing = parse_network_list({**NETWORK, "plugins": [{"type": "nope"}]}, "test")
    common = {"container_id": "c", "netns": "/n", "ifname": "eth0", "bin_dirs": [str(plugins)]}
    with pytest.raises(CniError, match=r"nope ADD failed .* plugin not found"):
        await network_add(missing, **common)  # type: ignore[arg-type]
    (plugins.parent / "answer-first").write_text("garbage")
    with pytest.raises(CniError, match="not JSON"):
        await network_add(parse_network_list(NETWORK, "t"), **common)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({**NETWORK, "cniVersion": "0.4.0"}, "cniVersion '0.4.0' is not one"),
        ({**NETWORK, "cniVersion": "1.1.0"}, "cniVersion '1.1.0' is not one"),
        ({**NETWORK, "name": ""}, "name must be"),
        ({**NETWORK, "plugins": []}, "plugins must be a non-empty list"),
        ({**NETWORK, "plugins": [{"type": "../bin/sh"}]}, r"plugins\[0\].type"),
        ([], "must be a JSON object"),
    ],
)
def test_a_network_list_is_checked(document: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_network_list(document, "where")  # type: ignore[arg-type]


def test_a_conflist_file_that_is_not_json_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "x.conflist"
    path.write_text("{")
    with pytest.raises(ValueError, match=f"{os.fspath(path)}: not JSON"):
        load_network_list(str(path))


@pytest.fixture
def table() -> Iterator[PodTable]:
    """A sandboxer's table in memory (its private directory removed after)."""
    made = PodTable(None)
    yield made
    made.let_go()


def test_the_default_network_list_is_written_into_the_state(
    tmp_path: Path, table: PodTable
) -> None:
    networks = PodNetworks(table, bin_dirs=[str(tmp_path / "nothing")])
    written = Path(table.base, "cni", "sandboxclient.conflist")
    assert json.loads(written.read_text()) == default_network_list()
    assert networks.network is not None
    assert [p["type"] for p in networks.network.plugins] == [
        "bridge",
        "portmap",
        "bandwidth",
    ]
    # without the plugins, a bridge is refused naming them; none is fine
    networks.check(NetworkRequest("none"))
    with pytest.raises(GRPCError, match="bridge, portmap, bandwidth, loopback not found") as got:
        networks.check(NetworkRequest("bridge"))
    assert got.value.status is Status.INVALID_ARGUMENT


def test_cni_conf_dir_gives_the_first_conflist_and_its_capabilities(
    tmp_path: Path, plugins: Path, table: PodTable
) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "20-other.conflist").write_text(json.dumps({**NETWORK, "name": "other"}))
    only = {**NETWORK, "plugins": [{"type": "first"}]}
    (conf / "10-mine.conflist").write_text(json.dumps(only))
    (conf / "00-ignored.conf").write_text("{}")
    loopback = plugins / "loopback"
    loopback.symlink_to(plugins / "first")
    networks = PodNetworks(table, conf_dir=str(conf), bin_dirs=[str(plugins)])
    assert networks.network is not None
    assert networks.network.name == "testnet"
    networks.check(NetworkRequest("bridge"))
    # ports need a plugin with the portMappings capability, bandwidth the bandwidth one
    with pytest.raises(GRPCError, match="no plugin with the portMappings capability"):
        networks.check(NetworkRequest("bridge", (PortMapping(80),)))
    with pytest.raises(GRPCError, match="no plugin with the bandwidth capability"):
        networks.check(NetworkRequest("bridge", bandwidth=Bandwidth(1000)))


def test_an_unusable_cni_conf_dir_is_an_error_at_start(tmp_path: Path, table: PodTable) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no \*\.conflist file in it"):
        PodNetworks(table, conf_dir=str(empty))
    (empty / "x.conflist").write_text(json.dumps({**NETWORK, "cniVersion": "0.3.1"}))
    with pytest.raises(ValueError, match=r"cniVersion '0\.3\.1'"):
        PodNetworks(table, conf_dir=str(empty))


def test_the_default_list_runs_only_the_plugins_a_sandbox_uses() -> None:
    full = parse_network_list(default_network_list(), "default")
    kinds = {
        (False, False): ["bridge"],
        (True, False): ["bridge", "portmap"],
        (False, True): ["bridge", "bandwidth"],
        (True, True): ["bridge", "portmap", "bandwidth"],
    }
    for (ports, shaped), expected in kinds.items():
        request = NetworkRequest(
            "bridge",
            (PortMapping(80),) if ports else (),
            None,
            Bandwidth(ingress_rate=8000) if shaped else None,
        )
        used = used_plugins(full, request)
        assert [p["type"] for p in used.plugins] == expected
        assert [p["type"] for p in used.raw["plugins"]] == expected  # what DEL will read
        assert (used.name, used.cni_version) == (full.name, full.cni_version)
