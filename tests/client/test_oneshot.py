"""A sandbox whose first command is its own process (``new_sandbox(command=...)``) and the
one-shot ``Client.run``: on the stand-in and on the real isolating sandboxer alike."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import (
    DEVNULL,
    PIPE,
    STDOUT,
    Client,
    CommandTimeoutError,
    FailedPreconditionError,
    InvalidArgumentError,
    Sandbox,
)
from sandboxclient._models import ExitStatus
from sandboxclient._plumbing._sandbox_io import (
    ERROR_ATTACHED_LABEL,
    ERROR_LABEL,
    OUTPUT_ATTACHED_LABEL,
    OUTPUT_LABEL,
)
from sandboxclient._run import Capture
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer import ProcessSandboxer
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend
from tests.support.fifos import out_dirs

pytestmark = pytest.mark.anyio


async def test_a_sandboxs_command_is_its_own_process(backend: Backend) -> None:
    async with backend.client() as client:
        sb = await client.new_sandbox("sb-cmd", command=("sh", "-c", "exit 7"))
        try:
            spec = sb.metadata.spec
            assert spec is not None
            assert spec["process"]["args"] == ["sh", "-c", "exit 7"]
            channel = await sb.wait(timeout=30)
            await sb.start()
            status = await channel
            assert status.error is None
            assert status.returncode == 7
        finally:
            await sb.shutdown()


async def test_run_gives_the_output_and_exit_and_leaves_nothing(
    backend: Backend, fifo_home: Path
) -> None:
    script = "echo hi; echo oops >&2; exit 3"
    async with backend.client() as client:
        done = await client.run("sh", "-c", script, timeout=60)
        assert done.args == ("sh", "-c", script)
        assert done.returncode == 3
        # Apart, as Sandbox.run gives them.
        assert (done.stdout, done.stderr) == (b"hi\n", b"oops\n")
        assert not done.stdout_truncated
        assert not done.stderr_truncated
        assert done.started_at is not None
        assert done.exited_at is not None
        # One stream, as asyncio's stderr=STDOUT: each in its order, interleaved as copied.
        merged = await client.run("sh", "-c", script, stderr=STDOUT, timeout=60)
        assert sorted(merged.stdout.splitlines()) == [b"hi", b"oops"]
        assert merged.stderr == b""
        dropped = await client.run("sh", "-c", script, stderr=DEVNULL, timeout=60)
        assert (dropped.stdout, dropped.stderr, dropped.returncode) == (b"hi\n", b"", 3)
        assert await client.list_sandboxes() == []
        # A flood of each stream is read and dropped past max_output: the client keeps
        # what it was asked to of each.
        flood = await client.run(
            "sh",
            "-c",
            "head -c 4000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo end",
            max_output=4096,
            timeout=60,
        )
        assert flood.returncode == 0
        assert flood.stdout == flood.stderr == b"\0" * 4096
        assert flood.stdout_truncated
        assert flood.stderr_truncated
        assert await client.list_sandboxes() == []
    assert out_dirs(fifo_home) == []


async def test_run_times_out_with_the_librarys_error_and_the_client_cleans_up(
    backend: Backend, fifo_home: Path
) -> None:
    async with backend.client() as client:
        with pytest.raises(CommandTimeoutError) as caught:
            await client.run("sh", "-c", "echo started; echo err >&2; exec sleep 60", timeout=3)
        assert caught.value.returncode is None
        assert "did not exit within 3 s" in str(caught.value)
    # Closing the client waited for the shutdown it owned, which let go of the FIFOs.
    assert out_dirs(fifo_home) == []
    async with backend.client() as client:
        assert await client.list_sandboxes() == []


async def test_a_sandboxer_checks_the_output_fifo_it_is_given(
    backend: Backend, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    (tmp_path / "link").symlink_to(fifo)
    cases = [
        ("/etc/hostname", "must name a FIFO"),
        (str(tmp_path / "link"), "must not go through a symbolic link"),
        ("relative/fifo", "normalised absolute path"),
        (str(tmp_path / "gone"), "cannot be used"),
    ]
    async with backend.client() as client:
        for index, (path, words) in enumerate(cases):
            sb = await client.new_sandbox(
                f"sb-bad-out-{index}", command=("true",), labels={OUTPUT_LABEL: path}
            )
            try:
                with pytest.raises(InvalidArgumentError, match=OUTPUT_LABEL) as caught:
                    await sb.start()
                assert words in str(caught.value)
            finally:
                await sb.shutdown()
        assert not (tmp_path / "gone").exists()  # nothing was made in its place
        # stderr's label alike, and only beside stdout's.
        error_cases = [
            ({ERROR_LABEL: str(fifo)}, OUTPUT_LABEL, "needs label"),
            ({OUTPUT_LABEL: str(fifo), ERROR_LABEL: "/etc/hostname"}, ERROR_LABEL, "a FIFO"),
            ({OUTPUT_LABEL: str(fifo), ERROR_LABEL: str(tmp_path / "link")}, ERROR_LABEL, "link"),
        ]
        for index, (labels, named, words) in enumerate(error_cases):
            sb = await client.new_sandbox(f"sb-bad-err-{index}", command=("true",), labels=labels)
            try:
                with pytest.raises(InvalidArgumentError, match=ERROR_LABEL) as caught:
                    await sb.start()
                assert named in str(caught.value)
                assert words in str(caught.value)
            finally:
                await sb.shutdown()


@pytest.mark.parametrize(
    ("command", "error", "words"),
    [
        ("echo hi", TypeError, "not one string"),
        ((), ValueError, "empty"),
        (("echo", 1), TypeError, r"command\[1\]"),
        (("echo", "a\0b"), ValueError, "NUL"),
        (42, TypeError, "sequence of strings"),
    ],
)
async def test_a_bad_command_is_refused_before_any_call(
    fake: FakeContainerd, command: Any, error: type[Exception], words: str
) -> None:
    async with Client(fake.address) as client:
        with pytest.raises(error, match=words):
            await client.new_sandbox("sb", command=command)
        assert fake.call_count("Store/Create") == 0


async def test_the_command_is_given_once(fake: FakeContainerd) -> None:
    async with Client(fake.address) as client:
        spec = {"process": {"args": ["sleep", "1"], "cwd": "/"}}
        with pytest.raises(ValueError, match="give one"):
            await client.new_sandbox("sb", spec=spec, command=("true",))
        with pytest.raises(ValueError, match=OUTPUT_LABEL):
            await client.run("true", labels={OUTPUT_LABEL: "/tmp/x"})
        with pytest.raises(ValueError, match=ERROR_LABEL):
            await client.run("true", labels={ERROR_LABEL: "/tmp/x"})
        with pytest.raises(ValueError, match="stderr"):
            await client.run("true", stderr=None)
        with pytest.raises(TypeError, match="stdout"):
            await client.run("true", stdout=PIPE)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="timeout"):
            await client.run("true", timeout=0)
        with pytest.raises(TypeError, match="command"):
            await client.run(command=("true",))  # type: ignore[call-arg]
        async with client.sandbox("sb-cm", command=("sleep", "30")) as held:
            assert held.metadata.spec == {"process": {"args": ["sleep", "30"]}}
        # The rest of the spec stays: the command is its process.args.
        sb = await client.new_sandbox("sb", spec={"process": {"cwd": "/tmp"}}, command=("pwd",))
        assert sb.metadata.spec == {"process": {"cwd": "/tmp", "args": ["pwd"]}}
        await sb.shutdown()
        assert fake.call_count("Store/Create") == 2  # the two that were asked for


class _Silent(ProcessSandboxer):
    """A sandboxer that runs the command but does not say one stream is the client's."""

    def __init__(self, unsaid: str) -> None:
        super().__init__(refuse_unenforced=False)
        self.unsaid = unsaid

    async def start(
        self, message: sandbox_pb.ControllerStartRequest
    ) -> sandbox_pb.ControllerStartResponse:
        answer = await super().start(message)
        answer.labels.pop(self.unsaid, None)
        return answer


@pytest.mark.parametrize(
    ("unsaid", "named"),
    [(OUTPUT_ATTACHED_LABEL, OUTPUT_LABEL), (ERROR_ATTACHED_LABEL, ERROR_LABEL)],
)
async def test_a_sandboxer_that_does_not_hand_the_output_over_is_refused(
    fifo_home: Path, unsaid: str, named: str
) -> None:
    controller = _Silent(unsaid)  # the caller's: the stand-in does not close it
    try:
        async with FakeContainerd(controller=controller) as fake:
            async with Client(fake.address) as client:
                with pytest.raises(FailedPreconditionError, match="did not give") as caught:
                    await client.run("echo", "hi", timeout=30)
                assert f"label {named})" in str(caught.value)
            # The shutdown, clean-up the Client owns (its close waits for it), closed them.
            assert out_dirs(fifo_home) == []
            async with Client(fake.address) as client:
                assert await client.list_sandboxes() == []
    finally:
        await controller.aclose()


async def test_a_failing_part_of_a_run_cancels_the_others(
    fake: FakeContainerd, fifo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run() reads stdout and stderr and waits for the exit at once: should one of them fail,
    # the others are cancelled at once, not left running beside the run's clean-up.
    cancelled: list[str] = []
    wait_exit = Sandbox.wait_exit

    async def waiting(self: Sandbox, **kwargs: Any) -> ExitStatus:
        try:
            return await wait_exit(self, **kwargs)
        except asyncio.CancelledError:
            cancelled.append(self.id)
            raise

    async def failing(self: Capture, stream: object) -> None:
        raise RuntimeError("the read failed")

    monkeypatch.setattr(Sandbox, "wait_exit", waiting)
    monkeypatch.setattr(Capture, "read", failing)
    async with Client(fake.address) as client:
        with pytest.raises(RuntimeError, match="the read failed"):
            await client.run("sleep", "60", sandbox_id="run-fails")
        assert cancelled == ["run-fails"]
    # The clean-up the run could not finish within its grace, the closed client has.
    async with Client(fake.address) as after:
        assert await after.list_sandboxes() == []
    assert out_dirs(fifo_home) == []
