"""Process IO: the stream arguments, and FIFOs opened the way containerd's shim opens them."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from sandboxclient._io import ProcessIO
from sandboxclient._plumbing._stream_args import DEVNULL, PIPE, STDOUT, NamedFifo, plan_io
from tests.support.helpers import wait_readable

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"stdin": STDOUT}, ValueError, "only for stderr"),
        ({"stdout": STDOUT}, ValueError, "only for stderr"),
        ({"stdin": "/etc/hosts"}, ValueError, "stdin from a file"),
        ({"stdout": 7}, ValueError, "integer 7"),
        ({"stderr": True}, ValueError, "integer True"),
        ({"stdout": b"/x"}, TypeError, "bytes"),
        ({"stdout": ""}, ValueError, "non-empty path"),
        ({"stdout": "/tmp/a\0b"}, ValueError, "NUL"),
        ({"stdout": PIPE, "stderr": PIPE, "terminal": True}, ValueError, "pty carries stderr"),
        ({"stdout": "/tmp/x.log", "stderr": PIPE}, ValueError, "same file"),
        ({"stdout": "/tmp/x.log"}, ValueError, "same file"),
        ({"stdout": PIPE, "stderr": "/tmp/x.log"}, ValueError, "stdout to the same file"),
        ({"terminal": 1}, TypeError, "terminal must be a bool"),
        (
            {"stdout": NamedFifo("out"), "stderr": NamedFifo("/f/err")},
            ValueError,
            r"stdout=NamedFifo\(path='out'\): a NamedFifo's path must be absolute",
        ),
        (
            {"stdout": NamedFifo("/f/out"), "stderr": NamedFifo("/f/../err")},
            ValueError,
            "stderr=.*must be absolute and normalised",
        ),
        ({"stdout": NamedFifo("/f//out"), "stderr": STDOUT}, ValueError, "stdout=.*normalised"),
        ({"stdout": NamedFifo("/f/o\0"), "stderr": STDOUT}, ValueError, "stdout=.*normalised"),
        ({"stdin": NamedFifo("/f/in")}, ValueError, "for stdout and stderr together"),
    ],
)
def test_conflicting_or_bad_stream_arguments_are_refused(
    kwargs: dict[str, object], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        plan_io(**kwargs)  # type: ignore[arg-type]


def test_stream_plans() -> None:
    assert plan_io().pipes is False
    plan = plan_io(stdin=DEVNULL, stdout=PIPE, stderr=STDOUT)
    assert (plan.stdin, plan.stdout, plan.stderr) == ("null", "pipe", "stdout")
    assert plan_io(stdout=DEVNULL, stderr=STDOUT).stderr == "null"
    logged = plan_io(stdout="rel.log", stderr=STDOUT)
    assert logged.log_path == os.path.abspath("rel.log")
    assert logged.stderr == "file"
    assert plan_io(stdout="/tmp/x.log", stderr="/tmp/x.log").stderr == "file"
    assert plan_io(stdout=PIPE, stderr=STDOUT, terminal=True).terminal
    shared = plan_io(stdout=NamedFifo("/f/out"), stderr=NamedFifo("/f/out"))
    assert shared.fifos == ("/f/out", "/f/out")


async def test_a_file_log_is_a_file_uri_for_both_streams(tmp_path: Path) -> None:
    io = await ProcessIO.open(plan_io(stdout=tmp_path / "a b.log", stderr=STDOUT), "p1")
    assert io.stdout_path == io.stderr_path == (tmp_path / "a b.log").as_uri()
    assert "%20" in io.stdout_path
    assert io.stdin_path == ""
    io.close()


async def _loop_turns(count: int) -> None:
    """Let the event loop run ``count`` iterations, each polling its file descriptors."""
    for _ in range(count):
        await asyncio.sleep(0)


class _Shim:
    """Opens the other ends as containerd's runc shim does (stdout: O_WRONLY plus an
    O_RDONLY of its own; stdin: O_RDONLY|O_NONBLOCK)."""

    def __init__(self, io: ProcessIO) -> None:
        self.out = os.open(io.stdout_path, os.O_WRONLY) if io.stdout_path else -1
        self.out_hold = (
            os.open(io.stdout_path, os.O_RDONLY | os.O_NONBLOCK) if io.stdout_path else -1
        )
        same = io.stderr_path == io.stdout_path
        self.err = os.open(io.stderr_path, os.O_WRONLY) if io.stderr_path and not same else -1
        self.inp = os.open(io.stdin_path, os.O_RDONLY | os.O_NONBLOCK) if io.stdin_path else -1

    def close(self) -> None:
        for fd in (self.out, self.out_hold, self.err, self.inp):
            if fd >= 0:
                os.close(fd)


async def test_fifos_are_private_and_gone_once_the_shim_holds_them() -> None:
    io = await ProcessIO.open(plan_io(stdin=PIPE, stdout=PIPE, stderr=PIPE), "p2")
    directory = os.path.dirname(io.stdout_path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for path in (io.stdin_path, io.stdout_path, io.stderr_path):
        assert stat.S_ISFIFO(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    shim = _Shim(io)
    await io.shim_attached()
    assert not Path(directory).exists()  # noqa: ASYNC240
    # The ends keep working once the names are gone.
    assert io.stdin is not None
    io.stdin.write(b"hello\n")
    await io.stdin.drain()
    await wait_readable(shim.inp, 5)
    assert os.read(shim.inp, 100) == b"hello\n"
    os.write(shim.out, b"out\n")
    os.write(shim.err, b"err\n")
    shim.close()
    assert io.stdout is not None
    assert io.stderr is not None
    assert await io.stdout.read() == b"out\n"
    assert await io.stderr.read() == b"err\n"
    io.close()


async def test_stderr_into_stdout_shares_one_fifo() -> None:
    io = await ProcessIO.open(plan_io(stdout=PIPE, stderr=STDOUT), "p3")
    assert io.stderr_path == io.stdout_path
    assert io.stderr is None
    writer_a = os.open(io.stdout_path, os.O_WRONLY)
    writer_b = os.open(io.stdout_path, os.O_WRONLY)
    await io.shim_attached()
    os.write(writer_a, b"a")
    os.write(writer_b, b"b")
    os.close(writer_a)
    assert io.stdout is not None
    assert await io.stdout.readexactly(2) == b"ab"
    os.close(writer_b)
    assert await io.stdout.read() == b""  # EOF once both writers are gone
    io.close()


async def test_a_shared_fifo_does_not_end_between_the_shim_s_two_writers() -> None:
    # The shim opens stderr's writer after starting stdout's copy, which may have written
    # all and closed its writer by then (an exec that ended at once).
    io = await ProcessIO.open(plan_io(stdout=PIPE, stderr=STDOUT), "p3b")
    assert io.stdout is not None
    stdout_writer = os.open(io.stdout_path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(stdout_writer, b"a")
    os.close(stdout_writer)
    assert await io.stdout.readexactly(1) == b"a"
    await _loop_turns(10)  # an EOF would be there in four
    assert not io.stdout.at_eof()
    # Our reader is still there: the shim's open for writing does not wait.
    stderr_writer = os.open(io.stdout_path, os.O_WRONLY | os.O_NONBLOCK)
    await io.shim_attached()
    os.write(stderr_writer, b"b")
    os.close(stderr_writer)
    assert await io.stdout.read() == b"b"  # and the end once the shim's last writer is gone
    io.close()


async def test_a_shared_fifo_never_attached_leaves_no_descriptor() -> None:
    await _loop_turns(2)
    before = _open_fds()
    io = await ProcessIO.open(plan_io(stdout=PIPE, stderr=STDOUT), "p3c")
    assert len(_open_fds() - before) >= 2  # our reader and our writer
    io.close()
    await _loop_turns(2)  # the transport's own close runs on the next turns
    assert _open_fds() == before


async def test_no_eof_before_the_shim_opens_stdout() -> None:
    io = await ProcessIO.open(plan_io(stdout=PIPE), "p4")
    assert io.stdout is not None
    read = asyncio.ensure_future(io.stdout.read(1))
    # A reader with no writer yet must not see end of file: after ten turns of the loop,
    # each polling the FIFO's read end, nothing has come (an EOF would be there in four).
    await _loop_turns(10)
    assert not read.done()
    writer = os.open(io.stdout_path, os.O_WRONLY)
    os.write(writer, b"x")
    assert await read == b"x"
    os.close(writer)
    io.close()


async def test_many_megabytes_through_stdout_with_bounded_buffering() -> None:
    io = await ProcessIO.open(plan_io(stdout=PIPE), "p5")
    writer = os.open(io.stdout_path, os.O_WRONLY | os.O_NONBLOCK)
    await io.shim_attached()
    blob = os.urandom(1 << 20)
    total = 16
    loop = asyncio.get_running_loop()
    sent = hashlib.sha256()
    done = asyncio.Event()
    state = {"left": total, "view": memoryview(b"")}

    def feed() -> None:
        while True:
            if not state["view"]:
                if not state["left"]:
                    loop.remove_writer(writer)
                    os.close(writer)
                    done.set()
                    return
                state["left"] -= 1  # type: ignore[operator]
                sent.update(blob)
                state["view"] = memoryview(blob)
            try:
                n = os.write(writer, state["view"])  # type: ignore[arg-type]
            except BlockingIOError:
                return
            state["view"] = state["view"][n:]  # type: ignore[index]

    loop.add_writer(writer, feed)
    assert io.stdout is not None
    got = hashlib.sha256()
    biggest = 0
    while chunk := await io.stdout.read(1 << 16):
        got.update(chunk)
        biggest = max(biggest, len(io.stdout._buffer))  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # a slow consumer: the writer must wait, not the buffer grow
    await done.wait()
    assert got.hexdigest() == sent.hexdigest()
    assert biggest <= 4 * (1 << 16) + (1 << 18), biggest  # limit x2 plus one pipe read
    io.close()


async def test_a_failed_open_leaves_no_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A folder of the test's own: other tests (and workers) make and remove theirs in /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken(path: str, mode: int = 0o666) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "mkfifo", broken)
    with pytest.raises(OSError, match="No space"):
        await ProcessIO.open(plan_io(stdout=PIPE), "p6")
    assert os.listdir(tmp_path) == []


async def test_stdin_eof_reaches_the_reader() -> None:
    io = await ProcessIO.open(plan_io(stdin=PIPE), "p7")
    shim_in = os.open(io.stdin_path, os.O_RDONLY | os.O_NONBLOCK)
    await io.shim_attached()
    assert io.stdin is not None
    io.stdin.write(b"last")
    io.stdin.write_eof()
    await io.stdin.wait_closed()
    assert os.read(shim_in, 10) == b"last"
    assert os.read(shim_in, 10) == b""  # EOF: no writer left
    os.close(shim_in)
    io.close()


async def test_stdin_is_whole_when_the_shim_opens_its_end_after_the_reply() -> None:
    # The runc shim takes an O_PATH handle within Start and opens the FIFO from a goroutine
    # that may run after the reply: nothing written after the reply may be lost meanwhile.
    io = await ProcessIO.open(plan_io(stdin=PIPE), "p10")
    handle = os.open(io.stdin_path, os.O_PATH | os.O_CLOEXEC)
    shim_in: list[int] = []

    def shim_opens() -> None:
        shim_in.append(os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK))

    asyncio.get_running_loop().call_later(0.05, shim_opens)
    try:
        await io.shim_attached()
        assert shim_in  # it waited for the shim's reader
        assert io.stdin is not None
        io.stdin.write(b"late but whole")
        io.stdin.write_eof()
        await io.stdin.wait_closed()
        assert os.read(shim_in[0], 100) == b"late but whole"
        assert os.read(shim_in[0], 100) == b""  # EOF: no writer and no reader of ours left
    finally:
        for fd in (handle, *shim_in):
            os.close(fd)
        io.close()


async def test_a_shim_that_never_reads_stdin_loses_nothing_written() -> None:
    io = await ProcessIO.open(plan_io(stdin=PIPE), "p11")
    handle = os.open(io.stdin_path, os.O_PATH | os.O_CLOEXEC)
    try:
        await io.shim_attached(timeout=0.02)
        assert not Path(io.stdin_path).parent.exists()
        assert io.stdin is not None
        io.stdin.write(b"kept")
        await io.stdin.drain()  # no EPIPE: the held reader is still there
        late = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK)
        assert os.read(late, 100) == b"kept"
        os.close(late)
    finally:
        os.close(handle)
        io.close()


async def test_drain_raises_once_the_reader_is_gone() -> None:
    io = await ProcessIO.open(plan_io(stdin=PIPE), "p8")
    shim_in = os.open(io.stdin_path, os.O_RDONLY | os.O_NONBLOCK)
    await io.shim_attached()
    os.close(shim_in)
    assert io.stdin is not None
    stdin = io.stdin

    async def flood() -> None:
        for _ in range(100):
            stdin.write(b"x" * 65536)
            await stdin.drain()

    with pytest.raises(BrokenPipeError):
        await flood()
    io.close()


class _PipeHammer(threading.Thread):
    """Another thread of the program, making and using pipes of its own all the while.

    Records every error on its own descriptors: a number it holds closed under it, or
    a read that finds another file there.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.errors: list[str] = []
        self.rounds = 0

    def run(self) -> None:
        while not self.halt.is_set() and not self.errors:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.write(w, b"x")
                if os.read(r, 1) != b"x":
                    self.errors.append(f"round {self.rounds}: pipe {r} gave other data")
            except OSError as exc:
                self.errors.append(f"round {self.rounds}: {exc!r} on its own pipe")
            for fd in (r, w):
                try:
                    os.close(fd)
                except OSError as exc:
                    self.errors.append(f"round {self.rounds}: closing {fd}: {exc!r}")
            self.rounds += 1


async def _streams_round(name: str) -> None:
    io = await ProcessIO.open(plan_io(stdin=PIPE, stdout=PIPE, stderr=PIPE), name)
    shim = _Shim(io)
    await io.shim_attached()
    try:
        os.write(shim.out, b"out")
        os.write(shim.err, b"err")
    finally:
        shim.close()
    assert io.stdout is not None
    assert io.stderr is not None
    assert await io.stdout.read() == b"out"
    assert await io.stderr.read() == b"err"
    io.close()
    await _loop_turns(2)  # the transports' own close runs on the next turns


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_stream_descriptors_are_closed_once_while_other_threads_open_files(
    loop_kind: str,
) -> None:
    # uvloop closes a pipe transport's descriptor itself, then the file object it was
    # given: if that object owned the descriptor too, the number was closed twice, and a
    # file another thread opened in between lost its descriptor.
    import uvloop

    runner = uvloop.run if loop_kind == "uvloop" else asyncio.run

    async def rounds(hammer: _PipeHammer | None, count: int) -> int:
        for done in range(count):
            if hammer is not None and hammer.errors:
                return done
            try:
                await asyncio.wait_for(_streams_round(f"r{done}"), 5)
            except OSError as exc:
                pytest.fail(f"round {done}: our own stream failed: {exc!r}")
        return count

    runner(rounds(None, 1))  # a first loop may keep descriptors of its own for good
    gc.collect()
    before = _open_fds()
    runner(rounds(None, 50))
    gc.collect()
    assert _open_fds() == before, "streams left descriptors open"

    hammer = _PipeHammer()
    hammer.start()
    try:
        # The window is a few microseconds per round: in a trial of the double close, a
        # few hundred to a few thousand rounds found it.
        done = runner(rounds(hammer, 3000 if loop_kind == "uvloop" else 500))
    finally:
        hammer.halt.set()
        hammer.join(10)
    assert hammer.errors == [], f"after {done} rounds"
    assert hammer.rounds > 0
