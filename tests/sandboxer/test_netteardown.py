"""Deferred network teardown (no root, no network): a fake plugin whose DEL blocks on a FIFO
until the test lets it go, so what waits for a pending DEL, and what does not, is seen."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from sandboxclient.sandboxer._netns import is_mounted, make_netns
from sandboxclient.sandboxer._netteardown import Teardowns
from sandboxclient.sandboxer._state import write_json

pytestmark = pytest.mark.anyio

GATE = """#!/bin/sh
cat > /dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID" > "{started}"
read _ < "{gate}"
"""


class Gate:
    """A plugin ``gate`` whose every call says it started, then waits to be let go."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.started, self.gate = root / "started", root / "gate"
        os.mkfifo(self.started)
        os.mkfifo(self.gate)
        plugin = self.bin / "gate"
        plugin.write_text(GATE.format(started=self.started, gate=self.gate))
        plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)

    async def seen(self) -> str:
        """The next call's command and container id, once it runs."""
        return (await asyncio.to_thread(self.started.read_text)).strip()

    async def let_go(self) -> None:
        """Let the running call end."""
        await asyncio.to_thread(self.gate.write_text, "\n")


def state(root: Path, cid: str, port: int) -> tuple[Path, dict[str, object]]:
    netns = root / f"netns-{cid}"
    netns.touch()  # not a mount: DEL runs without a namespace, and the file is removed
    data = {
        "version": 1,
        "container_id": cid,
        "netns": str(netns),
        "ifname": "eth0",
        "network": {"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": "gate"}]},
        "runtime_config": {},
        "ports": [{"container_port": 80, "host_port": port, "host_ip": "127.0.0.1",
                   "protocol": "tcp"}],
        "result": None,
    }  # fmt: skip
    path = root / f"{cid}-network.json"
    write_json(str(path), data)
    return path, data


async def test_a_deferred_del_is_awaited_by_what_needs_it_and_by_settle(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    teardowns = Teardowns(str(tmp_path / "base"), bin_dirs=[str(gate.bin)], timeout=10)
    path, data = state(tmp_path, "c1", 8080)
    teardowns.defer(str(path), data, "ns/sb")
    assert not path.exists()
    pending = tmp_path / "base" / "cni" / "pending"
    assert [p.name for p in pending.iterdir()] == ["c1.json"]
    assert await gate.seen() == "DEL c1"
    same_key = asyncio.ensure_future(teardowns.wait_for("ns/sb", []))
    same_port = asyncio.ensure_future(teardowns.wait_for("", [("127.0.0.1", 8080, "tcp")]))
    await teardowns.wait_for("ns/other", [("127.0.0.1", 8081, "tcp"), ("127.0.0.1", 0, "tcp")])
    await asyncio.sleep(0)  # the two that must wait have run up to their wait
    assert not same_key.done()
    assert not same_port.done()
    assert teardowns.pending == 1
    await gate.let_go()
    await asyncio.gather(same_key, same_port)
    await teardowns.settle()
    assert list(pending.iterdir()) == []
    assert "netns-c1" not in os.listdir(tmp_path)  # its pin went after the DEL


async def test_a_pending_file_left_by_a_killed_sandboxer_is_resumed(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    pending = tmp_path / "base" / "cni" / "pending"
    pending.mkdir(parents=True)
    _, data = state(tmp_path, "c2", 8082)
    write_json(str(pending / "c2.json"), data)
    teardowns = Teardowns(str(tmp_path / "base"), bin_dirs=[str(gate.bin)], timeout=10)
    teardowns.resume()
    teardowns.resume()  # once: the DEL under way is not started twice
    assert await gate.seen() == "DEL c2"
    # Its host port, read from the file, holds back a Start that publishes it.
    same_port = asyncio.ensure_future(teardowns.wait_for("", [("127.0.0.1", 8082, "tcp")]))
    await asyncio.sleep(0)  # it has run up to its wait
    assert not same_port.done()
    await gate.let_go()
    await same_port
    await teardowns.settle()
    assert list(pending.iterdir()) == []


async def test_a_failed_del_keeps_its_file_for_a_later_attempt(tmp_path: Path) -> None:
    teardowns = Teardowns(str(tmp_path / "base"), bin_dirs=[str(tmp_path)], timeout=10)
    path, data = state(tmp_path, "c3", 0)  # its plugin is not in bin_dirs: DEL fails
    teardowns.defer(str(path), data, "ns/sb")
    await teardowns.settle()
    kept = tmp_path / "base" / "cni" / "pending" / "c3.json"
    assert json.loads(kept.read_text())["container_id"] == "c3"
    # The next Start tries again (resume(again=True)); the plugin is there now.
    plugin = tmp_path / "gate"
    plugin.write_text("#!/bin/sh\ncat > /dev/null\n")
    plugin.chmod(0o755)
    teardowns.resume(again=True)
    await teardowns.settle()
    assert not kept.exists()


async def test_a_namespace_that_cannot_be_made_is_an_error_naming_it_with_nothing_pinned(
    tmp_path: Path,
) -> None:
    if shutil.which("nsenter") is None or shutil.which("unshare") is None:
        pytest.skip("needs util-linux's nsenter and unshare")
    pin = tmp_path / "pin"
    with pytest.raises(OSError, match=r"cannot make a network namespace in /nonexistent/userns"):
        await make_netns("/nonexistent/userns", str(pin))
    assert not is_mounted(str(pin))
