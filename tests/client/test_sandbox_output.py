"""A sandbox's own process's output read from its handle (``new_sandbox(command=...,
stdout=PIPE, stderr=PIPE)``), as asyncio's ``create_subprocess_exec`` gives a process's: on
the stand-in and on the real isolating sandboxer alike."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from sandboxclient import (
    DEVNULL,
    PIPE,
    STDOUT,
    AlreadyExistsError,
    Client,
    ContainerdError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
    oci,
)
from sandboxclient._plumbing import _sandbox_io
from sandboxclient._plumbing._sandbox_io import _READ_LIMIT, ERROR_LABEL, OUTPUT_LABEL
from sandboxclient._serve._refusals import unavailable
from sandboxclient.sandboxer import ProcessSandboxer, _process, _supervise, messages
from sandboxclient.sandboxer._output import ClientStreams, client_output, task_streams
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend
from tests.support.fifos import out_dirs

pytestmark = pytest.mark.anyio

# Writes a line to each stream, then waits for the test's word: SIGTERM (Stop), which its
# trap answers with a last line and exit code 5. A shell waiting on `wait` runs the trap at
# once; the sleep it waits on dies with the sandbox.
_TALKER = "trap 'echo second; exit 5' TERM; echo first; echo warn >&2; sleep 60 & wait"


async def test_a_handle_streams_its_processs_output_as_it_comes(
    backend: Backend, fifo_home: Path
) -> None:
    async with backend.client() as client:
        sb = await client.new_sandbox(
            "sb-stream", command=("sh", "-c", _TALKER), stdout=PIPE, stderr=PIPE
        )
        try:
            assert sb.stdout is not None
            assert sb.stderr is not None
            assert sb.metadata.labels[OUTPUT_LABEL].startswith(str(fifo_home))
            await sb.start()
            assert out_dirs(fifo_home) == []  # the sandboxer has them open: the folder goes
            # The first lines come while the process still runs: it waits for the Stop.
            async with asyncio.timeout(30):
                assert await sb.stdout.readline() == b"first\n"
                assert await sb.stderr.readline() == b"warn\n"
            assert sb.returncode is None
            await sb.stop(grace=30)
            async with asyncio.timeout(30):
                assert await sb.stdout.read() == b"second\n"  # then the end of it
                assert await sb.stderr.read() == b""
            status = await sb.wait_exit(timeout=30)
            assert status.error is None
            assert status.returncode == 5
            assert sb.returncode == 5
        finally:
            await sb.shutdown()
        # One stream with stderr=STDOUT, through the context manager.
        script = "echo one; echo two >&2; exit 2"
        async with client.sandbox(
            "sb-merged", command=("sh", "-c", script), stdout=PIPE, stderr=STDOUT
        ) as merged:
            assert merged.stderr is None
            assert merged.stdout is not None
            async with asyncio.timeout(30):
                assert sorted((await merged.stdout.read()).splitlines()) == [b"one", b"two"]
            assert (await merged.wait_exit(timeout=30)).returncode == 2
        # stderr alone, stdout dropped.
        async with client.sandbox(
            "sb-err", command=("sh", "-c", script), stdout=DEVNULL, stderr=PIPE
        ) as only:
            assert only.stdout is None
            assert only.stderr is not None
            async with asyncio.timeout(30):
                assert await only.stderr.read() == b"two\n"
        assert await client.list_sandboxes() == []
    assert out_dirs(fifo_home) == []


def fifo_fds(folder: str) -> list[str]:
    """This process's descriptors open on a file of ``folder`` (removed or not)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed by now
            if os.readlink(f"/proc/self/fd/{fd}").startswith(folder + "/"):
                found.append(fd)
    return found


async def test_what_the_fifo_still_holds_at_shutdown_is_kept_but_not_its_descriptors(
    backend: Backend, fifo_home: Path
) -> None:
    # The reader pauses once it holds over twice its limit, having taken at most a pipe's
    # 64 KiB more: one byte past that, the sandbox can still write all of it (the FIFO holds
    # the rest) and exit, yet some of it is in the FIFO, not the reader, at the shutdown.
    # The shutdown moves that into the reader and closes the FIFOs at once: output nobody
    # reads holds no descriptor; read after, it is all there. A real shim holds one more
    # pipe's worth (its own pipe from the process, its copy's buffer), still to be written
    # to the full FIFO when the shutdown answers: that too is all there.
    size = 2 * _READ_LIMIT + 2**16 + (2**16 if backend.kind == "real" else 1)
    async with backend.client() as client:
        owned = len(client._connection._owned)
        sb = await client.new_sandbox(
            "sb-late", command=("head", "-c", str(size), "/dev/zero"), stdout=PIPE, stderr=PIPE
        )
        assert sb.stdout is not None
        fd = os.open(sb.metadata.labels[OUTPUT_LABEL], os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) == 2**16
        finally:
            os.close(fd)
        folder = os.path.dirname(sb.metadata.labels[OUTPUT_LABEL])
        try:
            await sb.start()
            assert (await sb.wait_exit(timeout=30)).returncode == 0
            assert fifo_fds(folder) != []  # the stdout reader's at least: it is not read
        finally:
            await sb.shutdown()
        assert fifo_fds(folder) == []
        assert len(client._connection._owned) == owned  # nothing left for the Client to close
        assert out_dirs(fifo_home) == []
        async with asyncio.timeout(30):  # as asyncio's after wait(): nothing is cut
            got = await sb.stdout.read()
            assert len(got) == size
            assert got == bytes(size)
            assert sb.stderr is not None
            assert await sb.stderr.read() == b""


async def test_a_handles_fifos_go_on_every_failure(backend: Backend, fifo_home: Path) -> None:
    async with backend.client() as client:
        # A Start that fails (no such program): the handle keeps them until its shutdown.
        sb = await client.new_sandbox(
            "sb-nothing", command=("/no/such/program",), stdout=PIPE, stderr=DEVNULL
        )
        assert sb.metadata.labels[ERROR_LABEL] == "/dev/null"
        with pytest.raises(ContainerdError, match="no/such/program"):
            await sb.start()
        assert len(out_dirs(fifo_home)) == 1
        await sb.shutdown()
        assert out_dirs(fifo_home) == []
        # A create that fails: nothing is left.
        sb = await client.new_sandbox(
            "sb-twice", command=("sh", "-c", _TALKER), stdout=PIPE, stderr=PIPE
        )
        with pytest.raises(AlreadyExistsError, match="sb-twice"):
            await client.new_sandbox("sb-twice", command=("true",), stdout=PIPE, stderr=PIPE)
        assert len(out_dirs(fifo_home)) == 1
        await sb.start()
        assert sb.stdout is not None
        async with asyncio.timeout(30):
            assert await sb.stdout.readline() == b"first\n"
    # Closing the client without a shutdown: its watch is cancelled and the FIFOs go with it.
    assert out_dirs(fifo_home) == []
    assert sb.stdout.at_eof() or await sb.stdout.read() == b""
    async with backend.client() as client:
        await client.delete_sandbox("sb-twice")
        with pytest.raises(NotFoundError):
            await client.get_sandbox("sb-twice")


async def test_a_clients_fifo_gone_by_the_tasks_creation_fails_it_and_is_not_made_again(
    client: Client, root: Path, tmp_path: Path
) -> None:
    # The isolating sandboxer hands the client's FIFOs to the shim by their plain paths, the
    # same one twice when the streams share it: should the client's folder be gone by then,
    # the task fails, rather than the shim making the folder and a file of output (as root,
    # without bound) that no one reads, as it does for a file:// stream.
    folder = tmp_path / "gone"
    made = await client.new_container(
        "c-gone", rootfs=root, spec=oci.generate_spec(oci.with_process_args("true"))
    )
    try:
        for streams in (
            ClientStreams(str(folder / "out")),
            ClientStreams(str(folder / "out"), str(folder / "err")),
        ):
            with pytest.raises(ContainerdError):
                await made.new_task(**task_streams(streams))
            assert not folder.exists()
    finally:
        await made.delete(force=True)  # should a task have been made after all


def _watches(sandbox_id: str) -> list[asyncio.Task[object]]:
    """The watches ``start()`` began for the sandbox's exit that still run."""
    name = f"sandboxclient-output-{sandbox_id}"
    return [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]


async def test_a_second_start_is_the_controllers_to_refuse_and_begins_no_watch(
    backend: Backend, fifo_home: Path
) -> None:
    async with backend.client() as client:
        command = ("sleep", "60")
        async with client.sandbox("sb-again", command=command, stdout=PIPE, stderr=PIPE) as sb:
            assert len(_watches("sb-again")) == 1
            with pytest.raises(AlreadyExistsError, match="sb-again"):
                await sb.start()
            assert len(_watches("sb-again")) == 1
        assert _watches("sb-again") == []
    assert out_dirs(fifo_home) == []


class _AnswersTwice(ProcessSandboxer):
    """A controller that answers a second Start of a sandbox as it answered the first."""

    def __init__(self) -> None:
        super().__init__(refuse_unenforced=False)
        self.answers: dict[str, messages.ControllerStartResponse] = {}

    async def start(
        self, message: messages.ControllerStartRequest
    ) -> messages.ControllerStartResponse:
        if message.sandbox_id not in self.answers:
            self.answers[message.sandbox_id] = await super().start(message)
        return self.answers[message.sandbox_id]


async def test_a_second_start_answered_begins_no_second_watch(fifo_home: Path) -> None:
    controller = _AnswersTwice()
    try:
        async with (
            FakeContainerd(controller=controller, sandboxers=("twice",)) as fake,
            Client(fake.address, namespace="twice", sandboxer="twice", timeout=20) as client,
        ):
            command = ("sleep", "60")
            async with client.sandbox("sb-2", command=command, stdout=PIPE, stderr=PIPE) as sb:
                assert (await sb.start()).pid == sb.pid
                assert len(_watches("sb-2")) == 1
    finally:
        await controller.aclose()
    assert out_dirs(fifo_home) == []


async def test_a_shutdown_after_a_cancelled_start_leaves_nothing(
    backend: Backend, fifo_home: Path
) -> None:
    async with backend.client() as client:
        await client.list_sandboxes()  # the connection is made
        before = sorted(os.listdir("/proc/self/fd"))
        sb = await client.new_sandbox("sb-cut", command=("sleep", "60"), stdout=PIPE, stderr=PIPE)
        starts = backend.calls("Controller/Start")
        starting = asyncio.create_task(sb.start())
        await backend.wait_for_call("Controller/Start", starts + 1)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        await sb.shutdown()
        assert out_dirs(fifo_home) == []
        assert sb.stdout is not None
        assert sb.stderr is not None
        # Their end, once read, is the sign that the loop has closed the pipes.
        assert await sb.stdout.read() == b""
        assert await sb.stderr.read() == b""
        assert sorted(os.listdir("/proc/self/fd")) == before
        assert await client.list_sandboxes() == []


@pytest.mark.parametrize("label", [OUTPUT_LABEL, ERROR_LABEL])
async def test_a_fifo_replaced_after_starts_check_is_refused_once_opened(
    fake: FakeContainerd, fifo_home: Path, monkeypatch: pytest.MonkeyPatch, label: str
) -> None:
    # The none sandboxer (the stand-in's) checks the labels at Start, then its supervisor
    # opens them: what it opened must still be a FIFO (or /dev/null), else the start fails
    # naming the label, and nothing is written to what took the FIFO's place.
    def replaced(labels: Mapping[str, str]) -> ClientStreams | None:
        given = client_output(labels)
        path = Path(labels[label])
        path.unlink()
        path.write_bytes(b"")
        return given

    monkeypatch.setattr(_process, "client_output", replaced)
    async with Client(fake.address) as client:
        sb = await client.new_sandbox(
            "sb-swap", command=("sh", "-c", "echo out; echo err >&2"), stdout=PIPE, stderr=PIPE
        )
        path = Path(sb.metadata.labels[label])
        try:
            with pytest.raises(FailedPreconditionError, match=f"label {label} .*must name a FIFO"):
                await sb.start()
            assert os.stat(path).st_size == 0  # nothing written to it
        finally:
            await sb.shutdown()
    assert out_dirs(fifo_home) == []


def test_the_supervisor_takes_only_a_fifo_or_dev_null(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    keep = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        for name in (str(tmp_path / "fifo"), os.devnull, "/dev/zero"):
            fd = os.open(name, os.O_WRONLY | os.O_NONBLOCK)
            try:
                if name == "/dev/zero":
                    with pytest.raises(OSError, match="neither a FIFO nor /dev/null") as caught:
                        _supervise._check_stream(fd, name.encode())
                    assert caught.value.errno == _supervise.NOT_A_STREAM
                    assert caught.value.filename == name
                else:
                    _supervise._check_stream(fd, name.encode())
            finally:
                os.close(fd)
    finally:
        os.close(keep)


@pytest.mark.parametrize(
    ("stdout", "stderr", "words"),
    [
        (PIPE, None, "stderr= is None"),
        (None, PIPE, "stdout= is None"),
        (STDOUT, PIPE, "only for stderr"),
        ("/tmp/out.log", PIPE, "PIPE, DEVNULL"),
        (PIPE, "/tmp/err.log", "PIPE, DEVNULL or STDOUT"),
        (True, PIPE, "PIPE, DEVNULL"),
    ],
)
async def test_bad_streams_are_refused_before_anything_is_made(
    fake: FakeContainerd, fifo_home: Path, stdout: object, stderr: object, words: str
) -> None:
    async with Client(fake.address) as client:
        with pytest.raises(ValueError, match=words):
            await client.new_sandbox("sb", command=("true",), stdout=stdout, stderr=stderr)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=OUTPUT_LABEL):
            await client.new_sandbox(
                "sb", command=("true",), stdout=PIPE, stderr=PIPE, labels={OUTPUT_LABEL: "/x"}
            )
    assert fake.call_count("Store/Create") == 0
    assert out_dirs(fifo_home) == []


async def test_a_flood_fills_the_reader_to_its_bound_and_waits(
    fake: FakeContainerd, fifo_home: Path
) -> None:
    # The test is the sandbox's hostile writer: it floods the stdout FIFO the handle reads
    # until its writes would block, yielding to the loop between them. What the handle
    # took is bounded by its reader (twice its 64 KiB limit and one read), not by the flood.
    async with Client(fake.address) as client:
        sb = await client.new_sandbox("sb-flood", command=("true",), stdout=PIPE, stderr=PIPE)
        fd = os.open(sb.metadata.labels[OUTPUT_LABEL], os.O_WRONLY | os.O_NONBLOCK)
        try:
            written, stuck, chunk = 0, 0, b"x" * 65536
            while stuck < 50 and written < 64 * 2**20:
                try:
                    written += os.write(fd, chunk)
                    stuck = 0
                except BlockingIOError:
                    stuck += 1
                await asyncio.sleep(0)  # a turn of the loop: the reader reads if it will
            assert written < 2**20
            assert sb.stdout is not None
            # Nothing was lost: all of it is there to read, and the writes go on.
            assert await sb.stdout.readexactly(written) == b"x" * written
            assert os.write(fd, b"more") == 4
        finally:
            os.close(fd)
            await sb.shutdown()
    assert out_dirs(fifo_home) == []


class _FailsShutdownOnce(ProcessSandboxer):
    """A controller whose first Shutdown fails (as one timing out or unreachable would),
    leaving the sandbox running."""

    def __init__(self) -> None:
        super().__init__(refuse_unenforced=False)
        self.failed = False

    async def shutdown(
        self, message: messages.ControllerShutdownRequest
    ) -> messages.ControllerShutdownResponse:
        if not self.failed:
            self.failed = True
            raise unavailable("the controller is away")
        return await super().shutdown(message)


async def test_a_failed_shutdown_leaves_the_output_to_the_sandbox_still_running(
    fifo_home: Path,
) -> None:
    controller = _FailsShutdownOnce()
    try:
        async with (
            FakeContainerd(controller=controller, sandboxers=("fails",)) as fake,
            Client(fake.address, namespace="fails", sandboxer="fails", timeout=20) as client,
        ):
            sb = await client.new_sandbox(
                "sb-stays", command=("sh", "-c", _TALKER), stdout=PIPE, stderr=PIPE
            )
            folder = os.path.dirname(sb.metadata.labels[OUTPUT_LABEL])
            await sb.start()
            assert sb.stdout is not None
            async with asyncio.timeout(30):
                assert await sb.stdout.readline() == b"first\n"
            held = fifo_fds(folder)
            assert held != []
            with pytest.raises(UnavailableError, match="away"):
                await sb.shutdown()
            assert fifo_fds(folder) == held  # the ends are as they were
            # It still runs and writes: what it writes after is read, and it exits as asked,
            # not killed by a write to a closed FIFO.
            await sb.stop(grace=30)
            async with asyncio.timeout(30):
                assert await sb.stdout.read() == b"second\n"
            assert (await sb.wait_exit(timeout=30)).returncode == 5
            await sb.shutdown()
            assert fifo_fds(folder) == []
    finally:
        await controller.aclose()
    assert out_dirs(fifo_home) == []


@pytest.mark.parametrize("bound", [None, 2**16])
async def test_what_a_writer_still_gives_past_a_pipe_after_the_shutdown_is_not_cut(
    fake: FakeContainerd, fifo_home: Path, monkeypatch: pytest.MonkeyPatch, bound: int | None
) -> None:
    # The test plays a shim whose copy is still blocked on the full FIFO when the sandbox is
    # shut down: it writes more than the reader's bound and a pipe's, the reader not read,
    # and closes only once all is written. The shutdown reads it all, to the writer's close;
    # past the bound of that move (made smaller here), the rest is cut.
    if bound is not None:
        monkeypatch.setattr(_sandbox_io, "REST_BOUND", bound)
    size = 2 * _READ_LIMIT + 2**16 + 2**18
    async with Client(fake.address) as client:
        sb = await client.new_sandbox("sb-shim", command=("true",), stdout=PIPE, stderr=PIPE)
        fd = os.open(sb.metadata.labels[OUTPUT_LABEL], os.O_WRONLY | os.O_CLOEXEC)

        def write_all() -> None:
            try:
                with memoryview(bytes(size)) as data:
                    done = 0
                    while done < size:
                        done += os.write(fd, data[done:])
            finally:
                os.close(fd)

        writing = asyncio.create_task(asyncio.to_thread(write_all))
        try:
            await sb.start()
            assert (await sb.wait_exit(timeout=30)).returncode == 0
            assert not writing.done()  # the reader is full: the writer waits on it
        finally:
            await sb.shutdown()
        async with asyncio.timeout(30):
            if bound is None:
                await writing  # no EPIPE: it was read to the end
            else:
                with pytest.raises(BrokenPipeError):
                    await writing
            assert sb.stdout is not None
            got = await sb.stdout.read()
        assert len(got) == size if bound is None else len(got) < size
    assert out_dirs(fifo_home) == []


async def test_a_writer_that_outlives_the_sandbox_is_cut_at_the_deadline(
    fake: FakeContainerd, fifo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer that neither writes nor closes (a process outliving the sandbox) holds the
    # shutdown no longer than the deadline: the reader ends with what came before it.
    monkeypatch.setattr(_sandbox_io, "REST_DEADLINE", 0.2)
    async with Client(fake.address) as client:
        sb = await client.new_sandbox("sb-stray", command=("true",), stdout=PIPE, stderr=PIPE)
        fd = os.open(sb.metadata.labels[OUTPUT_LABEL], os.O_WRONLY | os.O_NONBLOCK)
        try:
            assert os.write(fd, b"before") == 6
            await sb.start()
            assert (await sb.wait_exit(timeout=30)).returncode == 0
            async with asyncio.timeout(10):
                await sb.shutdown()
            assert sb.stdout is not None
            assert await sb.stdout.read() == b"before"
            with pytest.raises(BrokenPipeError):
                os.write(fd, b"after")
        finally:
            os.close(fd)
    assert out_dirs(fifo_home) == []
