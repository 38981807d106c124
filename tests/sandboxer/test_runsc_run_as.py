"""The gVisor wrapper that runs runsc as a block's first id (a networked sandbox in its user
namespace): the command it prefixes, and the newuidmap/newgidmap stand-ins through which
runsc, not run by the host's root, writes the namespace's maps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandboxclient.sandboxer._runsc_wrapper import run_as_command, write_wrapper
from tests.support.host import needs_root


def test_the_wrapper_runs_each_runsc_call_as_the_block(tmp_path: Path) -> None:
    path = Path(write_wrapper(tmp_path, "g.bridge-7", "/usr/bin/runsc", ("--x",), run_as=7))
    text = path.read_text()
    assert f"runas={run_as_command(7)!r}" in text.replace('"', "'")
    assert "--reuid=7 --regid=7 --clear-groups" in run_as_command(7)
    assert "+chown" in run_as_command(7)  # the host root's capabilities, ambient
    assert (tmp_path / "idmap" / "newuidmap").is_file()
    calls = [line for line in text.splitlines() if '"$runsc"' in line]
    assert calls
    for line in calls:  # every call, but the one made only without a block
        assert '$runas "$runsc"' in line or line.strip().startswith('[ -n "$runas" ] ||'), line
    # without a block: no prefix
    plain = Path(write_wrapper(tmp_path, "g", "/usr/bin/runsc", ("--x",))).read_text()
    assert "runas=''" in plain


@needs_root
@pytest.mark.parametrize("tool", ["newuidmap", "newgidmap"])
def test_the_idmap_stand_ins_write_a_namespaces_map_at_once(tmp_path: Path, tool: str) -> None:
    write_wrapper(tmp_path, "g", "/usr/bin/runsc", (), run_as=7)
    with subprocess.Popen(
        ["unshare", "--user", "sh", "-c", "echo in; exec sleep 30"], stdout=subprocess.PIPE
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"in\n"  # its namespace is made
            stand_in = str(tmp_path / "idmap" / tool)
            subprocess.run(
                [stand_in, str(child.pid), "0", "300000", "10", "10", "400000", "5"], check=True
            )
            kind = "gid_map" if tool == "newgidmap" else "uid_map"
            lines = [
                line.split() for line in Path(f"/proc/{child.pid}/{kind}").read_text().splitlines()
            ]
        finally:  # a failed assert must not wait out the sleep
            child.kill()
        assert lines == [["0", "300000", "10"], ["10", "400000", "5"]]
