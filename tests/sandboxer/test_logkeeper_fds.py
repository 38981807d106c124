"""What the sandboxer holds of its sandboxes' output logs, and whom it may signal for them.

The isolating sandboxer runs over the stand-in containerd here (its tasks are host
processes). Defined: a sandbox shut down, or whose Start failed, leaves no copy of its FIFO
with the sandboxer (the count of its descriptors goes back down); the keeper a pid file
names is signalled only if the process that has that pid now is the one written down, even
when the pid is reused between reading the file and pinning the process.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from grpclib.exceptions import GRPCError

from sandboxclient._facts._wirenames import NAMESPACE_HEADER, RUNTIME_SPEC_TYPE_URL
from sandboxclient._serve._server import request_scope
from sandboxclient._wire._pb import AnyPb, SandboxPb, SandboxRuntimePb, sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer, _podlog
from sandboxclient.sandboxer._podlog import KEEPER_FILE, LOG_PIPE
from sandboxclient.sandboxer._supervise import start_ticks
from sandboxclient.testing import FakeContainerd
from tests.support.constants import NS, RUNTIME

pytestmark = pytest.mark.anyio


def fifo_copies() -> list[str]:
    """The FIFOs of output logs this process holds a descriptor of (the sandboxer's copy,
    and the stand-in's shim's while its task runs)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.removesuffix(" (deleted)").endswith(f"/{LOG_PIPE}"):
            found.append(link)
    return found


async def test_shutting_sandboxes_down_lets_go_of_their_fifos(workdir: str) -> None:
    state = os.path.join(workdir, "state")
    spec = {"root": {"path": workdir}, "process": {"args": ["sleep", "600"]}}
    names = [f"fds{n}" for n in range(3)]
    assert fifo_copies() == []
    async with FakeContainerd() as fake:
        with request_scope({NAMESPACE_HEADER: NS}):
            sandboxer = ContainerSandboxer(state, containerd=fake.address, timeout=20)
            try:
                for name in names:
                    await sandboxer.create(sandbox_request(name, spec))
                    await sandboxer.start(sandbox_pb.ControllerStartRequest(sandbox_id=name))
                assert len(set(fifo_copies())) == len(names)  # the stand-in's shim's too
                for name in names:
                    await sandboxer.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id=name))
                assert fifo_copies() == []
            finally:
                await sandboxer.aclose()


def sandbox_request(name: str, spec: dict[str, object]) -> sandbox_pb.ControllerCreateRequest:
    """Controller.Create of sandbox ``name`` under runc's runtime, with ``spec``."""
    return sandbox_pb.ControllerCreateRequest(
        sandbox_id=name,
        sandbox=SandboxPb(
            sandbox_id=name,
            runtime=SandboxRuntimePb(name=RUNTIME),
            spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(spec).encode()),
        ),
    )


async def test_a_failed_start_lets_go_of_its_fifo_at_once(workdir: str) -> None:
    state = os.path.join(workdir, "state")
    spec = {"root": {"path": workdir}, "process": {"args": ["/no/such/program"]}}
    async with FakeContainerd() as fake:
        with request_scope({NAMESPACE_HEADER: NS}):
            sandboxer = ContainerSandboxer(state, containerd=fake.address, timeout=20)
            try:
                await sandboxer.create(sandbox_request("fdfail", spec))
                with pytest.raises(GRPCError, match="no/such/program"):
                    await sandboxer.start(sandbox_pb.ControllerStartRequest(sandbox_id="fdfail"))
                assert fifo_copies() == []
                await sandboxer.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="fdfail"))
            finally:
                await sandboxer.aclose()


async def test_a_reused_pid_is_never_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper written down exits and an unrelated process gets its pid just before the
    sandboxer pins it: the start time, read once the pid is pinned, tells them apart."""
    other = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        ticks = start_ticks(other.pid)
        assert ticks is not None
        path = tmp_path / KEEPER_FILE
        path.write_text(f"{other.pid} {ticks + 1}")  # the keeper that had this pid before
        reused = False
        real_open, real_ticks = os.pidfd_open, start_ticks

        def pidfd_open(pid: int, flags: int = 0) -> int:
            nonlocal reused
            reused = True  # the old keeper is gone, its pid is the unrelated process's
            return real_open(pid, flags)

        def ticks_of(pid: int) -> int | None:
            return ticks + 1 if not reused else real_ticks(pid)

        monkeypatch.setattr(os, "pidfd_open", pidfd_open)
        monkeypatch.setattr(_podlog, "start_ticks", ticks_of)
        await _podlog._end_keeper(str(path))
        assert reused  # the pid was looked at
        assert start_ticks(other.pid) == ticks  # and the unrelated process was let be
    finally:
        other.kill()
        await other.wait()


async def test_the_keeper_written_down_is_ended_through_its_pidfd(tmp_path: Path) -> None:
    """The keeper the file names ends on SIGTERM: the wait on its pidfd returns then, and
    neither the pidfd nor the loop's reader of it is left."""
    keeper = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        ticks = start_ticks(keeper.pid)
        assert ticks is not None
        path = tmp_path / KEEPER_FILE
        path.write_text(f"{keeper.pid} {ticks}")
        before = sorted(os.listdir("/proc/self/fd"))
        async with asyncio.timeout(10):  # SIGTERM ends it at once: no SIGKILL grace
            await _podlog._end_keeper(str(path))
            assert await keeper.wait() == -15
        assert sorted(os.listdir("/proc/self/fd")) == before
    finally:
        if keeper.returncode is None:
            keeper.kill()
            await keeper.wait()
