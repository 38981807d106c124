"""The sandboxer's own signal to a sandbox's first process, and the timing of its calls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from sandboxclient.sandboxer._podsignal import first_process, signal_first
from sandboxclient.sandboxer._stages import STAGES_ENV, mark, timing
from tests.support.helpers import pid_gone, wait_pid_gone

pytestmark = pytest.mark.anyio

OWN_PID_NS = {"linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}}


# A process that is pid 1 of a pid namespace of its own, as a sandbox's first process is; its
# parent prints its pid and exits as it does (128 + the signal that ended it).
_FIRST = """
import ctypes, os, sys, time
if ctypes.CDLL(None, use_errno=True).unshare(0x20000000) != 0:  # CLONE_NEWPID
    sys.exit(3)
pid = os.fork()
if pid == 0:
    time.sleep(600)
    os._exit(0)
print(pid, flush=True)
_, status = os.waitpid(pid, 0)
sys.exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


@dataclasses.dataclass
class Sleeper:
    parent: asyncio.subprocess.Process
    pid: int

    async def wait(self) -> int:
        return await self.parent.wait()

    @property
    def returncode(self) -> int | None:
        return self.parent.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)


async def sleeper() -> Sleeper:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FIRST, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 30)
    assert line, f"cannot make a pid namespace here (exit {await parent.wait()})"
    return Sleeper(parent, int(line))


async def test_the_first_process_is_noted_only_when_it_ends_the_sandbox() -> None:
    proc = await sleeper()
    try:
        noted = first_process(proc.pid, OWN_PID_NS, gvisor=False)
        assert noted is not None
        assert noted.pid == proc.pid
        assert noted.started > 0
        joined = {"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}}
        assert first_process(proc.pid, joined, gvisor=False) is None  # shares a pid namespace
        assert first_process(proc.pid, {"linux": {"namespaces": []}}, gvisor=False) is None
        assert first_process(proc.pid, {}, gvisor=False) is None
        assert first_process(proc.pid, OWN_PID_NS, gvisor=True) is None  # its pid is gVisor's
        # Not pid 1 of a namespace: the first process exited and its pid went to another.
        assert first_process(proc.parent.pid, OWN_PID_NS, gvisor=False) is None
        assert first_process(os.getpid(), OWN_PID_NS, gvisor=False) is None
    finally:
        proc.kill()
        await proc.wait()
    assert first_process(proc.pid, OWN_PID_NS, gvisor=False) is None  # gone


async def test_the_signal_goes_only_to_the_process_noted() -> None:
    proc = await sleeper()
    try:
        noted = first_process(proc.pid, OWN_PID_NS, gvisor=False)
        assert noted is not None
        assert not signal_first(None, 9)
        # Another process under the same pid (a start time that differs) is left alone.
        assert not signal_first(dataclasses.replace(noted, started=noted.started + 1), 9)
        assert not pid_gone(proc.pid)
        assert signal_first(noted, 9)
        assert await asyncio.wait_for(proc.wait(), 10) == 128 + 9
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await wait_pid_gone(proc.pid)
    assert not signal_first(noted, 9)  # gone: the caller falls back to containerd


def test_a_timed_call_writes_its_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stages"
    mark("outside a timed call: nothing")
    with timing("sb1", "start"):
        mark("one")
    monkeypatch.setenv(STAGES_ENV, str(path))
    with timing("sb1", "shutdown"):
        mark("kill")
        mark("delete")
    with timing("sb2"):
        mark("one")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(got["sandbox"], got["call"]) for got in lines] == [
        ("sb1", "shutdown"),
        ("sb2", "start"),
    ]
    assert list(lines[0]["stages"]) == ["kill", "delete", "rest (records)"]
    assert list(lines[1]["stages"]) == ["one", "rest (records, watch)"]
    assert lines[0]["total"] >= sum(lines[0]["stages"].values()) * 0.999


async def test_a_frozen_sandbox_is_left_to_containerd(tmp_path: Path) -> None:
    # cgroup v1's freezer holds even SIGKILL until it thaws: such a sandbox is not signalled.
    state = tmp_path / "freezer.state"
    proc = await sleeper()
    try:
        noted = first_process(proc.pid, OWN_PID_NS, gvisor=False)
        assert noted is not None
        frozen = dataclasses.replace(noted, freezer_state=str(state))
        state.write_text("FROZEN\n")
        assert not signal_first(frozen, 9)
        state.write_text("FREEZING\n")
        assert not signal_first(frozen, 9)
        assert not pid_gone(proc.pid)
        state.write_text("THAWED\n")
        assert signal_first(frozen, 9)
        assert await asyncio.wait_for(proc.wait(), 10) == 128 + 9
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
