"""``sandboxctl cp``: a tree into a sandbox and back out, as ``docker cp`` takes it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from sandboxclient._cli._cp import split_target
from tests.support.cli import Cli

pytestmark = pytest.mark.anyio


def test_an_argument_is_a_sandboxs_when_its_head_has_no_slash() -> None:
    assert split_target("sb1:/tmp/x") == ("sb1", "/tmp/x")
    assert split_target("/local:odd") == (None, "/local:odd")
    assert split_target("./a:b") == (None, "./a:b")
    assert split_target(":x") == (None, ":x")
    assert split_target("plain") == (None, "plain")


async def test_cp_up_and_back_down(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "up" / "proj"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "run.sh").write_text("echo hi\n")
    os.chmod(src / "sub" / "run.sh", 0o755)
    await cli.ok("run", "cp1", "--", "sleep", "600")
    try:
        # The stand-in's processes run on this host: a folder of the test's own there.
        remote = f"/tmp/cp-{uuid.uuid4().hex[:8]}"
        await cli.ok("exec", "cp1", "--", "mkdir", "-p", remote)
        done = await cli.ok("cp", str(src), f"cp1:{remote}")
        assert done.out.strip().endswith(f"cp1:{remote}/proj")
        done = await cli.ok("exec", "cp1", "--", "cat", f"{remote}/proj/sub/run.sh")
        assert done.out == "echo hi\n"
        down = tmp_path / "down"
        down.mkdir()
        done = await cli.ok("cp", "--json", f"cp1:{remote}/proj", str(down))
        assert done.json() == {"id": "cp1", "from": f"{remote}/proj", "to": str(down / "proj")}
        assert (down / "proj" / "sub" / "run.sh").read_text() == "echo hi\n"
        assert os.stat(down / "proj" / "sub" / "run.sh").st_mode & 0o777 == 0o755
        missing = await cli("cp", f"cp1:{remote}/nothing", str(down))
        assert missing.code != 0
        assert "nothing" in missing.err
        assert "does not exist" in missing.err
        both_local = await cli("cp", str(src), str(down))
        assert both_local.code != 0
        assert "exactly one" in both_local.err
        await cli.ok("exec", "cp1", "--", "rm", "-rf", remote)
    finally:
        await cli.ok("rm", "cp1")
