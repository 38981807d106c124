"""The keeper of an isolating sandboxer's output logs, one process for all its sandboxes:
``python -I -S -c BOOT`` with a ``SOCK_SEQPACKET`` unix socket as its stdin.

Each sandbox's task writes its stdout and stderr to a FIFO of its own (containerd's
``file://`` log: the shim copies the task's output there). This process, started by the
sandboxer on its first Start and detached from it (it is not the sandboxer's child, so it
outlives a sandboxer that is killed, as the shims do), reads every FIFO it was given and
appends each to its LOG (mode 0600) until LOG holds its LIMIT bytes; what comes after is read
and dropped, and the number of bytes dropped is written to its DROPPED file (atomically, at
most every :data:`FLUSH_EVERY` seconds while it grows, and at the end; never when nothing was
dropped). Only the standard library is imported.

The keeper's first message on the socket is its pid (``{"pid": N}``, once it is detached);
it sends nothing else. The sandboxer speaks over the socket, one JSON object a message:

- ``{"keep": N, "dropped": PATH, "limit": BYTES}`` with three descriptors (SCM_RIGHTS): the
  FIFO opened for reading, the FIFO opened for writing, and LOG opened for appending. The
  sandboxer opened both ends before the task exists, so no gap between the shim's writers
  reads as the end; the writer is this keeper's to close. The count of bytes dropped starts
  from what DROPPED holds (a log handed over from a keeper that died or was ended). With
  ``"released": true`` the log is released at once (as below).
- ``{"release": N}``: the sandboxer's word that the task started (or that its start failed):
  the keeper closes its writer of log N :data:`GRACE` seconds later. Once every writer is
  closed (the task and whatever inherited its output are gone) it reads the end, writes
  DROPPED and forgets the log.

When the socket ends (the sandboxer closed, or died) every log not yet released is released,
and the keeper exits once its last log has ended. On SIGTERM (a sandboxer started again
takes its logs over) it writes every count not yet written and exits at once, having lost
nothing: what it has not read is still in the FIFOs, which the sandboxer holds open.
Nothing here runs periodically: it sleeps in ``poll`` until a FIFO has data, a message
comes, SIGTERM, or one of its own deadlines (a grace, a count to write) is due.
"""

from __future__ import annotations

import array
import json
import os
import resource
import select
import signal
import socket
import time

__all__ = ("FLUSH_EVERY", "GRACE", "run")

FLUSH_EVERY = 0.1
GRACE = 0.5
"""Seconds a log's own writer stays open after the sandboxer's word: the shim opens its
writers asynchronously, and a moment with none would read as the end."""
_CHUNK = 1 << 16
_MESSAGE = 4096
_FDS = 3


def _read_count(path: str) -> int:
    try:
        with open(path, "rb") as f:
            text = f.read(32)
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def _write_count(path: str, count: int) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, str(count).encode())
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except OSError:  # the sandbox's directory is gone: nobody is left to read it
        pass


class _Log:
    __slots__ = ("dropped", "dropped_path", "fifo", "flushed", "last", "let_go", "limit",
                 "log", "writer", "written")  # fmt: skip

    def __init__(self, fifo: int, writer: int, log: int, dropped_path: str, limit: int) -> None:
        self.fifo, self.writer, self.log = fifo, writer, log
        self.dropped_path, self.limit = dropped_path, limit
        self.written = os.fstat(log).st_size
        self.dropped = self.flushed = _read_count(dropped_path)
        self.last = time.monotonic()
        self.let_go: float | None = None

    def copy(self, data: bytes) -> None:
        room = max(0, self.limit - self.written)
        if room:
            kept = data[:room]
            os.write(self.log, kept)
            self.written += len(kept)
        self.dropped += len(data) - min(room, len(data))

    def close_writer(self) -> None:
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1

    def end(self) -> None:
        self.close_writer()
        os.close(self.fifo)
        os.close(self.log)
        if self.dropped != self.flushed:  # nothing dropped, nothing written
            _write_count(self.dropped_path, self.dropped)


class _Keeper:
    def __init__(self, control: socket.socket, wakeup: int) -> None:
        self.control: socket.socket | None = control
        self.wakeup = wakeup
        """The read end of the signal wakeup pipe: readable once SIGTERM came."""
        self.poller = select.poll()
        self.poller.register(control.fileno(), select.POLLIN)
        self.poller.register(wakeup, select.POLLIN)
        self.logs: dict[int, _Log] = {}
        """By the FIFO's descriptor."""
        self.by_id: dict[int, _Log] = {}
        self.timed: set[_Log] = set()
        """Logs with a deadline: a writer to let go of, or a count to write."""

    def _timeout(self, now: float) -> float | None:
        due = []
        for log in self.timed:
            if log.let_go is not None:
                due.append(log.let_go)
            if log.dropped != log.flushed:
                due.append(log.last + FLUSH_EVERY)
        return None if not due else max(0.0, min(due) - now) * 1000

    def _message(self) -> None:
        assert self.control is not None
        try:
            data, ancillary, _, _ = self.control.recvmsg(
                _MESSAGE, socket.CMSG_SPACE(_FDS * array.array("i").itemsize)
            )
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not data and not fds:
            self._control_ended()
            return
        try:
            message = json.loads(data)
            if "keep" in message and len(fds) == _FDS:
                log = _Log(fds[0], fds[1], fds[2], str(message["dropped"]), int(message["limit"]))
                self.logs[log.fifo] = log
                if message.get("released"):
                    log.let_go = time.monotonic() + GRACE
                    self.timed.add(log)
                else:
                    self.by_id[int(message["keep"])] = log
                self.poller.register(log.fifo, select.POLLIN)
                return
            found = self.by_id.pop(int(message.get("release", -1)), None)
            if found is not None:
                found.let_go = time.monotonic() + GRACE
                self.timed.add(found)
        except (ValueError, TypeError, KeyError, OSError):
            pass
        for fd in fds:  # a message the keeper cannot use: drop what it carried
            os.close(fd)

    def _control_ended(self) -> None:
        assert self.control is not None
        self.poller.unregister(self.control.fileno())
        self.control.close()
        self.control = None
        let_go = time.monotonic() + GRACE
        for log in self.by_id.values():
            log.let_go = let_go
            self.timed.add(log)
        self.by_id.clear()

    def _read(self, fd: int) -> None:
        log = self.logs.get(fd)
        if log is None:
            return
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        if data:
            log.copy(data)
            if log.dropped != log.flushed:
                self.timed.add(log)
            return
        self.poller.unregister(fd)
        del self.logs[fd]
        self.timed.discard(log)
        log.end()

    def _deadlines(self, now: float) -> None:
        for log in list(self.timed):
            if log.let_go is not None and now >= log.let_go:
                log.close_writer()
                log.let_go = None
            if log.dropped != log.flushed and now - log.last >= FLUSH_EVERY:
                _write_count(log.dropped_path, log.dropped)
                log.flushed, log.last = log.dropped, now
            if log.let_go is None and log.dropped == log.flushed:
                self.timed.discard(log)

    def serve(self) -> None:
        control = self.control
        while self.control is not None or self.logs:
            for fd, _ in self.poller.poll(self._timeout(time.monotonic())):
                if fd == self.wakeup:
                    self._handed_over()
                    return
                if control is not None and self.control is not None and fd == control.fileno():
                    self._message()
                else:
                    self._read(fd)
            self._deadlines(time.monotonic())

    def _handed_over(self) -> None:
        """SIGTERM: write every count not yet written; the logs are another keeper's now."""
        for log in self.logs.values():
            if log.dropped != log.flushed:
                _write_count(log.dropped_path, log.dropped)


def run() -> None:
    """Keep the logs the sandboxer sends over stdin (see the module's docstring)."""
    control = socket.socket(fileno=0)
    if os.fork():  # detach: the sandboxer waits for this parent only
        os._exit(0)
    os.setsid()
    # One keeper holds two descriptors for every sandbox of its sandboxer: with the soft
    # limit a sandboxer starts with (1024 under systemd), descriptors sent past it would be
    # lost and the sandbox's log left without a reader.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    wakeup, woken = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGTERM, lambda *_: None)  # the wakeup pipe tells the loop
    try:
        control.send(json.dumps({"pid": os.getpid()}).encode())
    except OSError:
        return
    _Keeper(control, wakeup).serve()


if __name__ == "__main__":
    run()
