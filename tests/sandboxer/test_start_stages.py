"""A runc Start's stages as the isolating sandboxer times them (``sandboxer/_stages``), over
the stand-in: the root's detach always, the network's attach only when there is one."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer._stages import STAGES_ENV
from tests.sandboxer.test_sandboxer import create_request
from tests.sandboxer.test_start_close import over_the_stand_in, rooted

pytestmark = pytest.mark.anyio

DETACHED = "root detached from the host's mount table"


def start_stages(path: Path, sandbox_id: str) -> list[str]:
    """The stages, in order, of the timed Start of ``sandbox_id``."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    (got,) = [s for s in lines if s["sandbox"] == sandbox_id and s["call"] == "start"]
    return list(got["stages"])


async def test_a_start_without_a_network_has_no_network_stage(
    workdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STAGES_ENV, str(tmp_path / "stages"))
    async with over_the_stand_in(workdir) as (_, _controller, stub):
        await stub.create(create_request("plain", rooted(workdir)))
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="plain"))
    stages = start_stages(tmp_path / "stages", "plain")
    assert DETACHED in stages
    assert "network attach" not in stages


async def test_a_start_with_a_network_times_its_attach_after_the_detach(
    workdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STAGES_ENV, str(tmp_path / "stages"))
    attached: list[int] = []

    async def attach(pid: int) -> None:
        attached.append(pid)

    async def network_start(*_: Any) -> Callable[[int], Awaitable[None]]:
        return attach  # as the network's own, for a sandbox on the bridge

    async with over_the_stand_in(workdir) as (_, controller, stub):
        monkeypatch.setattr(controller._net, "start", network_start)
        await stub.create(create_request("wired", rooted(workdir)))
        started = await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="wired"))
    assert attached == [started.pid]
    stages = start_stages(tmp_path / "stages", "wired")
    assert stages.index(DETACHED) + 1 == stages.index("network attach")
    assert stages.index("network attach") + 1 == stages.index(
        "containerd: Tasks.Start (runc start)"
    )
