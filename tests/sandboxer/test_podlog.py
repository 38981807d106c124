"""The shared log keeper (sandboxer/_podlog.py, _logcap.py), without containerd: one process
keeps every sandbox's log, bounded, and ends once let go of and its last log has ended; a
keeper killed is replaced at once, losing nothing, and the next sandboxer takes over."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient.sandboxer._podlog import DROPPED_FILE, KEEPER_FILE, LogKeepers, dropped_bytes
from tests.support.helpers import pid_gone, until, wait_pid_gone
from tests.support.host import holders

pytestmark = pytest.mark.anyio


async def keeper_of(fifo: str) -> int:
    """The keeper's pid, once it holds ``fifo`` (sent to it over its socket: nothing
    announces that it was received)."""
    await until(lambda: bool(holders(Path(fifo))))
    (pid,) = holders(Path(fifo))
    return pid


def open_files_limits(pid: int) -> list[str]:
    """The soft and hard limits on open files of process ``pid``, as /proc shows them."""
    limits = Path(f"/proc/{pid}/limits").read_text()
    (found,) = [line.split()[3:5] for line in limits.splitlines() if "open files" in line]
    return found


async def file_says(path: Path, expected: bytes) -> None:
    """Wait until ``path`` holds ``expected`` (the keeper writes it; nothing announces it)."""
    await until(lambda: path.exists() and path.read_bytes() == expected)


@pytest.fixture
async def keepers() -> AsyncIterator[LogKeepers]:
    found = LogKeepers()
    try:
        yield found
    finally:
        found.close()


def sandbox_dir(tmp_path: Path, name: str) -> tuple[Path, Path]:
    directory = tmp_path / name
    directory.mkdir()
    log = directory / "output.log"
    log.touch(mode=0o600)
    return directory, log


async def write_through(fifo: str, data: bytes) -> None:
    def write() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    await asyncio.to_thread(write)


async def test_one_keeper_bounds_every_log_and_counts_what_it_drops(
    tmp_path: Path, keepers: LogKeepers
) -> None:
    (one, log1), (two, log2) = sandbox_dir(tmp_path, "one"), sandbox_dir(tmp_path, "two")
    first = await keepers.keep(str(one), str(log1), 10)
    second = await keepers.keep(str(two), str(log2), 1000)
    keeper = await keeper_of(first.fifo)
    assert await keeper_of(second.fifo) == keeper  # one process for both
    # It holds two descriptors a sandbox: it may open as many as the hard limit allows.
    hard = str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    assert open_files_limits(keeper) == [hard, hard]
    await write_through(first.fifo, b"0123456789abcdef")
    await write_through(second.fifo, b"hello\n")
    first.release()
    second.release()
    await file_says(one / DROPPED_FILE, b"6")
    await file_says(log2, b"hello\n")
    assert log1.read_bytes() == b"0123456789"
    assert dropped_bytes(str(two)) == 0
    assert not (two / DROPPED_FILE).exists()  # nothing dropped, nothing written
    # Released and without writers, each log is let go of after the grace.
    await until(lambda: not holders(Path(first.fifo)) and not holders(Path(second.fifo)))
    keepers.close()
    await wait_pid_gone(keeper)


async def test_a_log_stays_open_until_released_and_its_writers_are_gone(
    tmp_path: Path, keepers: LogKeepers
) -> None:
    directory, log = sandbox_dir(tmp_path, "one")
    kept = await keepers.keep(str(directory), str(log), 100)
    keeper = await keeper_of(kept.fifo)
    # A writer that opens and closes before release is no end: the keeper's own writer
    # keeps the FIFO open until the word comes.
    await write_through(kept.fifo, b"a")
    await write_through(kept.fifo, b"b")
    await file_says(log, b"ab")
    writer = os.open(kept.fifo, os.O_WRONLY)
    try:
        kept.release()
        await asyncio.sleep(1.0)  # past the grace: the task's writer still holds it
        assert keeper in holders(Path(kept.fifo))
        os.write(writer, b"c")
        await file_says(log, b"abc")
    finally:
        os.close(writer)
    await until(lambda: not holders(Path(kept.fifo)))


async def test_closing_lets_the_keeper_end_after_its_last_log_and_the_next_keep_starts_another(
    tmp_path: Path, keepers: LogKeepers
) -> None:
    directory, log = sandbox_dir(tmp_path, "one")
    kept = await keepers.keep(str(directory), str(log), 100)
    keeper = await keeper_of(kept.fifo)
    writer = os.open(kept.fifo, os.O_WRONLY)
    keepers.close()  # not released: the end of the socket releases it
    await asyncio.sleep(1.0)
    assert not pid_gone(keeper)  # its log still has a writer
    os.write(writer, b"late")
    os.close(writer)
    await wait_pid_gone(keeper)
    assert log.read_bytes() == b"late"
    again, log2 = sandbox_dir(tmp_path, "two")
    other = await keepers.keep(str(again), str(log2), 100)
    second = await keeper_of(other.fifo)
    assert second != keeper
    other.release()


async def test_a_killed_keeper_is_replaced_at_once_and_no_output_or_count_is_lost(
    tmp_path: Path, keepers: LogKeepers
) -> None:
    (one, log1), (two, log2) = sandbox_dir(tmp_path, "one"), sandbox_dir(tmp_path, "two")
    bounded = await keepers.keep(str(one), str(log1), 10)
    roomy = await keepers.keep(str(two), str(log2), 100)
    keeper = await keeper_of(bounded.fifo)
    # The tasks' writers (the shim's), open for as long as the tasks run.
    writers = [os.open(bounded.fifo, os.O_WRONLY), os.open(roomy.fifo, os.O_WRONLY)]
    try:
        bounded.release()
        roomy.release()
        os.write(writers[0], b"0123456789abcdef")
        os.write(writers[1], b"before,")
        await file_says(one / DROPPED_FILE, b"6")
        await file_says(log2, b"before,")
        os.kill(keeper, signal.SIGKILL)
        await wait_pid_gone(keeper)
        # No EPIPE: the sandboxer holds each FIFO's read end; a new keeper takes both over.
        os.write(writers[0], b"ghij")
        os.write(writers[1], b"after")
        await file_says(log2, b"before,after")
        await file_says(one / DROPPED_FILE, b"10")  # the count goes on from the file's
        assert log1.read_bytes() == b"0123456789"
        second = await keeper_of(roomy.fifo)
        assert second != keeper
        assert await keeper_of(bounded.fifo) == second
    finally:
        for fd in writers:
            os.close(fd)
    # Released and without writers, each log is let go of after the grace, as before.
    await until(lambda: not holders(Path(bounded.fifo)) and not holders(Path(roomy.fifo)))
    keepers.close()
    await wait_pid_gone(second)


async def test_a_keeper_ended_by_the_next_sandboxer_hands_its_logs_over(tmp_path: Path) -> None:
    """A sandboxer started again over the same directory ends the last one's keeper, which
    writes its count first, and keeps the logs of the sandboxes it took back."""
    base = tmp_path / "base"
    base.mkdir()
    first = LogKeepers(str(base))
    directory, log = sandbox_dir(tmp_path, "one")
    kept = await first.keep(str(directory), str(log), 10)
    keeper = await keeper_of(kept.fifo)
    assert (base / KEEPER_FILE).read_text().split()[0] == str(keeper)
    writer = os.open(kept.fifo, os.O_WRONLY)
    try:
        kept.release()
        os.write(writer, b"0123456789abc")
        await file_says(log, b"0123456789")
        first.close()  # as a sandboxer killed: the keeper goes on alone
        second = LogKeepers(str(base), [(str(directory), str(log))], 10)
        try:
            await wait_pid_gone(keeper)  # ended (SIGTERM), its count written first
            assert dropped_bytes(str(directory)) == 3
            os.write(writer, b"def")
            await file_says(directory / DROPPED_FILE, b"6")
            assert await keeper_of(kept.fifo) != keeper
        finally:
            second.close()
    finally:
        os.close(writer)
    await until(lambda: not holders(Path(kept.fifo)))


async def test_a_log_not_yet_released_is_handed_over_as_such(
    tmp_path: Path, keepers: LogKeepers
) -> None:
    """The keeper dies during a Start (the log sent, the task's writers not yet open): the
    new keeper keeps a writer of its own until the Start's word, as the first did."""
    directory, log = sandbox_dir(tmp_path, "one")
    kept = await keepers.keep(str(directory), str(log), 100)
    keeper = await keeper_of(kept.fifo)
    os.kill(keeper, signal.SIGKILL)
    await wait_pid_gone(keeper)
    await until(lambda: holders(Path(kept.fifo)) not in ([], [keeper]))
    second = await keeper_of(kept.fifo)
    await asyncio.sleep(1.0)  # past the grace: not released, so not let go of
    await write_through(kept.fifo, b"late writer")  # opens and closes: no end either
    await file_says(log, b"late writer")
    assert holders(Path(kept.fifo)) == [second]
    kept.release()
    await until(lambda: not holders(Path(kept.fifo)))


async def test_a_keeper_that_stops_reading_is_killed_before_another_takes_its_logs(
    tmp_path: Path, keepers: LogKeepers
) -> None:
    """A Start whose message the keeper does not take (its socket full: it is stopped)
    replaces it, and the one replaced is ended first: two keepers never copy one FIFO."""
    one, one_log = sandbox_dir(tmp_path, "one")
    kept = await keepers.keep(str(one), str(one_log), 100)
    kept.release()
    keeper = await keeper_of(kept.fifo)
    os.kill(keeper, signal.SIGSTOP)
    try:
        control = keepers._control
        assert control is not None
        full = False
        while not full:  # what a Start meets with the keeper stuck
            try:
                control.send(b"{}")
            except BlockingIOError:
                full = True
        two, two_log = sandbox_dir(tmp_path, "two")
        other = await keepers.keep(str(two), str(two_log), 100)
        await wait_pid_gone(keeper)
        second = await keeper_of(other.fifo)
        assert await keeper_of(kept.fifo) == second != keeper
        other.release()
        await write_through(kept.fifo, b"once")
        await file_says(one_log, b"once")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(keeper, signal.SIGKILL)


async def test_a_keeper_that_cannot_be_replaced_at_once_is_tried_again(
    tmp_path: Path, keepers: LogKeepers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper dies and its replacement fails to start: without any Start, another is
    tried a moment later, and it keeps the log (its writers would block until then)."""
    directory, log = sandbox_dir(tmp_path, "one")
    kept = await keepers.keep(str(directory), str(log), 100)
    kept.release()
    keeper = await keeper_of(kept.fifo)
    real_start = LogKeepers._start
    failed = asyncio.Event()

    async def start_once_failing(self: LogKeepers) -> socket.socket:
        if not failed.is_set():
            failed.set()
            raise OSError("no keeper this time")
        return await real_start(self)

    monkeypatch.setattr(LogKeepers, "_start", start_once_failing)
    os.kill(keeper, signal.SIGKILL)
    await failed.wait()
    await until(lambda: holders(Path(kept.fifo)) not in ([], [keeper]))
    await write_through(kept.fifo, b"after")
    await file_says(log, b"after")


def fail_opening_once(monkeypatch: pytest.MonkeyPatch, log: Path) -> asyncio.Event:
    """Make the first ``os.open`` of ``log`` fail (EMFILE); the event is set once it has."""
    real_open = os.open
    failed = asyncio.Event()

    def open_once_failing(path: str, flags: int, mode: int = 0o777) -> int:
        if path == str(log) and not failed.is_set():
            failed.set()
            raise OSError(errno.EMFILE, "too many open files")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", open_once_failing)
    return failed


async def test_a_log_whose_handover_failed_is_handed_over_again(
    tmp_path: Path, keepers: LogKeepers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper dies; handing one of its logs to the next fails once (its log cannot be
    opened then): that log is handed over again a moment later, without any Start, and
    what its task writes meanwhile reaches it (the others' were handed over at once)."""
    (one, log1), (two, log2) = sandbox_dir(tmp_path, "one"), sandbox_dir(tmp_path, "two")
    flaky = await keepers.keep(str(one), str(log1), 100)
    steady = await keepers.keep(str(two), str(log2), 100)
    flaky.release()
    steady.release()
    keeper = await keeper_of(flaky.fifo)
    failed = fail_opening_once(monkeypatch, log1)
    os.kill(keeper, signal.SIGKILL)
    await failed.wait()
    await write_through(steady.fifo, b"handed at once")
    await file_says(log2, b"handed at once")
    await write_through(flaky.fifo, b"handed again")
    await file_says(log1, b"handed again")


async def test_a_keeper_that_does_not_take_a_log_handed_again_is_replaced(
    tmp_path: Path, keepers: LogKeepers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log handed over again meets a keeper that does not read (stopped, its socket
    full): that keeper is killed and another is handed every log, this one too."""
    (one, log1), (two, log2) = sandbox_dir(tmp_path, "one"), sandbox_dir(tmp_path, "two")
    flaky = await keepers.keep(str(one), str(log1), 100)
    steady = await keepers.keep(str(two), str(log2), 100)
    flaky.release()
    steady.release()
    first = await keeper_of(steady.fifo)
    failed = fail_opening_once(monkeypatch, log1)
    os.kill(first, signal.SIGKILL)
    await failed.wait()
    await until(lambda: holders(Path(steady.fifo)) not in ([], [first]))
    (stuck,) = holders(Path(steady.fifo))
    os.kill(stuck, signal.SIGSTOP)
    try:
        control = keepers._control
        assert control is not None
        with contextlib.suppress(BlockingIOError):
            while True:  # what the handover meets with the keeper stuck
                control.send(b"{}")
        await wait_pid_gone(stuck)
        await write_through(flaky.fifo, b"handed to a third")
        await file_says(log1, b"handed to a third")
        assert await keeper_of(steady.fifo) == await keeper_of(flaky.fifo) != stuck
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
