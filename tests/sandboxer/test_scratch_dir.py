"""Without a state directory the process sandboxer keeps its sandboxes' files in a private
directory of its own: made when a sandbox first starts, removed when it closes, so a
sandboxer (or a stand-in over one) that never starts a sandbox leaves nothing, closed or
not."""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

import pytest

from sandboxclient import Client
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer import ProcessSandboxer
from sandboxclient.sandboxer._sandboxes import SandboxTable
from sandboxclient.testing import FakeContainerd
from tests.sandboxer.test_sandboxer_security import controller_stub, create_request
from tests.support.constants import NS, RUNTIME

pytestmark = pytest.mark.anyio

PREFIX = "sandboxclient-processes-"


@pytest.fixture
def scratch_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where temporary directories go for the test: one of its own, to count them in."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _made(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(f"{PREFIX}*"))


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _mode(path: Path) -> int:
    return path.stat().st_mode


def test_a_table_made_and_dropped_leaves_no_directory(scratch_root: Path) -> None:
    table = SandboxTable(None)
    assert table.state_dir is None
    del table
    gc.collect()
    assert _made(scratch_root) == []


def test_a_sandboxer_never_closed_that_started_nothing_leaves_no_directory(
    scratch_root: Path,
) -> None:
    ProcessSandboxer()
    FakeContainerd()  # its default controller is a process sandboxer
    gc.collect()
    assert _made(scratch_root) == []


async def test_the_directory_comes_with_the_first_start_and_goes_on_close(
    scratch_root: Path, workdir: str
) -> None:
    controller = ProcessSandboxer()
    async with controller_stub(controller, workdir) as stub:
        await stub.create(create_request("s1", {"process": {"args": ["true"]}}))
        assert _made(scratch_root) == [], "a Create writes no file"
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="s1"))
        await stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="s1"))
        directory = controller.sandbox_directory(NS, "s1")
        assert _is_dir(directory)
        assert len(_made(scratch_root)) == 1
        top = Path(directory).parents[2]
        assert top.parent == scratch_root
        assert _mode(top) & 0o077 == 0, "private to its owner"
    assert _made(scratch_root) == []
    assert not _is_dir(controller.sandbox_directory(NS, "s1"))


async def test_a_sandboxer_closed_before_any_start_has_no_directory_to_name(
    scratch_root: Path,
) -> None:
    controller = ProcessSandboxer()
    await controller.aclose()
    with pytest.raises(RuntimeError, match="let go of"):
        controller.sandbox_directory(NS, "s1")
    assert _made(scratch_root) == []


async def test_a_stand_in_used_as_documented_leaves_nothing(
    scratch_root: Path, workdir: str
) -> None:
    async with (
        FakeContainerd(path=os.path.join(workdir, "c.sock")) as fake,
        Client(fake.address, namespace="default") as client,
    ):
        sb = await client.new_sandbox("s1", runtime=RUNTIME)
        await sb.start()
        assert (await sb.run("true")).returncode == 0
        assert len(_made(scratch_root)) == 1
    assert _made(scratch_root) == []
