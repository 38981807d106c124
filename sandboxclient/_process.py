"""A process in a task, as Go's ``client.Process``: a task's own, or one exec'd into it.

It holds its streams (``stdin``, ``stdout``, ``stderr``, as ``asyncio.subprocess.Process``
does) and the verbs containerd's Tasks service has for one process. Its streams are owned
by the Client: closing the Client closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as _signal

from ._facts._golang import go_quote
from ._io import ProcessIO
from ._models import ExitStatus
from ._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout, run_to_end
from ._plumbing._pipes import ProcessWriter
from ._plumbing._wait import ExitChannel, WaitRegistry
from ._process_models import ProcessStatus, TaskState
from ._wire._convert import exit_status, process_status_from_pb
from ._wire._pb import tasks_pb
from .errors import (
    CanceledError,
    ContainerdError,
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    UnknownError,
)

__all__ = ("DISCARD_TIMEOUT", "FORCE_KILL_TIMEOUT", "Process", "checked_signal")

FORCE_KILL_TIMEOUT = 10.0
"""How long ``delete(force=True)`` waits for a killed process to be gone, by default."""

DISCARD_TIMEOUT = 15.0
"""The most ``discard()`` takes: its kill, the exit, and the delete, which containerd's shim
holds until it has copied the process's output or waited 10 s for it."""

_DELETE_FIRST_TRY = 2.0
_log = logging.getLogger("sandboxclient")

_MAX_SIGNAL = 64


def checked_signal(value: int) -> int:
    """``value`` as a signal number containerd can carry; ValueError if it is none."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"signal must be an int or a signal.Signals, got {type(value).__name__}")
    if not 1 <= int(value) <= _MAX_SIGNAL:
        raise ValueError(f"signal must be between 1 and {_MAX_SIGNAL}, got {int(value)}")
    return int(value)


class Process:
    """One process of a container's task: ``exec_id`` "" is the task's own process."""

    def __init__(
        self,
        connection: Connection,
        waits: WaitRegistry,
        container_id: str,
        exec_id: str = "",
        *,
        io: ProcessIO | None = None,
        pid: int = 0,
    ) -> None:
        self._connection = connection
        self._waits = waits
        self._container_id = container_id
        self._exec_id = exec_id
        self._io = io
        self._pid = pid
        self._returncode: int | None = None
        self._release_io = connection.own(io.close) if io is not None else None

    def __repr__(self) -> str:
        kind = f"exec {self._exec_id!r} in" if self._exec_id else "task of"
        return f"<{type(self).__name__} {kind} {self._container_id!r} pid={self._pid or None}>"

    # -- identity and streams ----------------------------------------------------------------

    @property
    def id(self) -> str:
        """The exec id, or the container id for a container's own task."""
        return self._exec_id or self._container_id

    @property
    def container_id(self) -> str:
        """The container the process runs in."""
        return self._container_id

    @property
    def exec_id(self) -> str:
        """The exec id ("" for the task's own process)."""
        return self._exec_id

    @property
    def pid(self) -> int:
        """The pid on the host (0 until known)."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        """The exit code once ``communicate()``, ``wait_exit()`` or ``delete()`` learned it."""
        return self._returncode

    @property
    def stdin(self) -> ProcessWriter | None:
        """The write end of stdin, when it was asked for with ``stdin=PIPE``."""
        return None if self._io is None else self._io.stdin

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        """stdout (the pty's output with ``terminal=True``), when ``stdout=PIPE``."""
        return None if self._io is None else self._io.stdout

    @property
    def stderr(self) -> asyncio.StreamReader | None:
        """stderr, when ``stderr=PIPE``."""
        return None if self._io is None else self._io.stderr

    def _stub(self) -> tasks_pb.TasksStub:
        return self._connection.stub(tasks_pb.TasksStub)

    def _close_io(self) -> None:
        """Close the streams held here (what had arrived stays readable); idempotent."""
        if self._io is not None:
            self._io.close()
        if self._release_io is not None:
            self._release_io()
            self._release_io = None

    # -- verbs -------------------------------------------------------------------------------

    async def start(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> int:
        """Start the process; returns its pid."""
        resp = await self._connection.call(
            self._stub().start,
            tasks_pb.StartRequest(container_id=self._container_id, exec_id=self._exec_id),
            timeout,
        )
        self._pid = resp.pid
        if self._io is not None:
            await self._io.shim_attached()  # the shim has its ends now: remove the FIFOs
        return self._pid

    async def wait(self, *, timeout: float | None = None) -> ExitChannel:
        """Start waiting for the process to exit; the channel is returned at once.

        One Wait call per process however many channels wait on it, exactly one
        ``ExitStatus`` on each, and a wait rides out a daemon restart, as for sandboxes.
        """
        request = tasks_pb.WaitRequest(container_id=self._container_id, exec_id=self._exec_id)
        stub = self._stub()

        async def wait_once() -> ExitStatus:
            resp = await self._connection.call(stub.wait, request, None)
            status = exit_status(resp.exit_status, resp.exited_at)
            self._returncode = status.returncode
            return status

        return self._waits.channel(
            ("task", self._container_id, self._exec_id),
            wait_once,
            what=self._what(),
            timeout=timeout,
        )

    async def wait_exit(self, *, timeout: float | None = None) -> ExitStatus:
        """Wait for the exit and return its status: ``await (await wait()).get()``."""
        channel = await self.wait(timeout=timeout)
        try:
            return await channel.get()
        finally:
            channel.close()

    async def send_signal(
        self,
        sig: int,
        *,
        all_processes: bool = False,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> None:
        """Send signal ``sig`` (a number or a ``signal.Signals``), as asyncio's
        ``Process.send_signal``; ``all_processes=True`` sends it to every process of the
        task (Go's ``WithKillAll``)."""
        number = checked_signal(sig)
        await self._connection.call(
            self._stub().kill,
            tasks_pb.KillRequest(
                container_id=self._container_id,
                exec_id=self._exec_id,
                signal=number,
                all=all_processes,
            ),
            timeout,
        )

    async def terminate(
        self, *, all_processes: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Send SIGTERM, as asyncio's ``Process.terminate``; see :meth:`send_signal`."""
        await self.send_signal(_signal.SIGTERM, all_processes=all_processes, timeout=timeout)

    async def kill(
        self, *, all_processes: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Send SIGKILL, as asyncio's ``Process.kill``; see :meth:`send_signal`."""
        await self.send_signal(_signal.SIGKILL, all_processes=all_processes, timeout=timeout)

    async def status(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> ProcessStatus:
        """The process's state, and once stopped its exit code and time."""
        resp = await self._connection.call(
            self._stub().get,
            tasks_pb.GetRequest(container_id=self._container_id, exec_id=self._exec_id),
            timeout,
            idempotent=True,
        )
        if resp.process is None:
            raise NotFoundError(f"process {go_quote(self.id)} not found")
        return process_status_from_pb(resp.process)

    async def delete(
        self, *, force: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> ExitStatus:
        """Delete the process and return how it ended; its streams close.

        A process still running is refused (containerd's FailedPreconditionError) unless
        ``force=True``, which kills it (SIGKILL, every process of a task) and waits for its
        exit first. Read what you need from stdout before: what is still in the pipe goes.
        Not idempotent, as Go's ``Process.Delete`` is not: a process already deleted raises
        NotFoundError (``discard()`` and ``async with`` are the clean-up that tolerates it).
        """
        if force:
            await self._kill_and_wait(self._connection.deadline(timeout) or FORCE_KILL_TIMEOUT)
        try:
            status = await self._delete_call(timeout)
        except UnknownError as exc:
            # The shim's refusal of a live process comes untyped: say what it is.
            state = await self._state_or_none()
            if state is None or state is TaskState.STOPPED:
                raise
            raise FailedPreconditionError(
                f"{self._what()} is {state}: kill it first, or delete(force=True)"
            ) from exc
        self._returncode = status.returncode
        self._close_io()
        return status

    async def _delete_call(self, timeout: Timeout) -> ExitStatus:
        if self._exec_id:
            resp = await self._connection.call(
                self._stub().delete_process,
                tasks_pb.DeleteProcessRequest(
                    container_id=self._container_id, exec_id=self._exec_id
                ),
                timeout,
            )
        else:
            resp = await self._connection.call(
                self._stub().delete,
                tasks_pb.DeleteTaskRequest(container_id=self._container_id),
                timeout,
            )
        return exit_status(resp.exit_status, resp.exited_at)

    def _what(self) -> str:
        return (
            f"exec {go_quote(self._exec_id)}"
            if self._exec_id
            else f"task {go_quote(self._container_id)}"
        )

    async def _state_or_none(self) -> TaskState | None:
        """The state, or None once containerd knows the process no more."""
        try:
            return (await self.status()).state
        except NotFoundError:
            return None

    async def _kill_and_wait(self, bound: float) -> None:
        try:
            state = (await self.status()).state
        except NotFoundError:
            return
        if state is TaskState.STOPPED or (state is TaskState.CREATED and self._exec_id):
            return  # ended, or an exec never started: nothing to kill
        channel = await self.wait(timeout=bound)
        try:
            # NotFound or FailedPrecondition: it ended meanwhile.
            with contextlib.suppress(NotFoundError, FailedPreconditionError):
                await self.kill(all_processes=not self._exec_id)
            await channel.get()
        finally:
            channel.close()

    async def close_stdin(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """End the process's input: what was written is delivered, then it reads EOF.

        The shim keeps a write end of the stdin FIFO of its own (so that a client can go and
        come back); this closes ours, then asks the shim to close its own (CloseIO).
        """
        if self._io is not None and self._io.stdin is not None:
            self._io.stdin.write_eof()
            await self._io.stdin.wait_closed()
        await self._connection.call(
            self._stub().close_io,
            tasks_pb.CloseIoRequest(
                container_id=self._container_id, exec_id=self._exec_id, stdin=True
            ),
            timeout,
        )

    async def resize(self, cols: int, rows: int, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Resize the process's pty (``terminal=True``) to ``cols`` x ``rows``."""
        for name, value in (("cols", cols), ("rows", rows)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**16:
                raise ValueError(f"{name} must be an int from 1 to 65535, got {value!r}")
        await self._connection.call(
            self._stub().resize_pty,
            tasks_pb.ResizePtyRequest(
                container_id=self._container_id, exec_id=self._exec_id, width=cols, height=rows
            ),
            timeout,
        )

    async def communicate(self, input: bytes | None = None) -> tuple[bytes | None, bytes | None]:
        """Send ``input`` to stdin (then close it), read stdout and stderr to their end, and
        wait for the exit: asyncio's ``Process.communicate``. ``returncode`` is then set.

        The result holds None for a stream not opened with PIPE.
        """
        stdin = self.stdin
        if input is not None and stdin is None:
            raise ValueError("communicate(input=...) needs stdin=PIPE")

        async def feed() -> None:
            if stdin is None:
                return
            if input:
                stdin.write(input)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await stdin.drain()
            await self.close_stdin()

        async def read(stream: asyncio.StreamReader | None) -> bytes | None:
            return None if stream is None else await stream.read()

        _, out, err = await asyncio.gather(feed(), read(self.stdout), read(self.stderr))
        await self.wait_exit()
        return out, err

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Kill the process if it runs, and delete it (see :meth:`discard`)."""
        await self.discard()

    async def discard(self, *, timeout: float | None = None) -> None:
        """Kill the process if it runs and delete it; a process already gone is fine.

        The work runs as clean-up the Client owns, to its end (at most
        :data:`DISCARD_TIMEOUT`) even if the caller is cancelled; closing the Client waits
        for it. What the process's streams still hold is read and dropped meanwhile:
        containerd's shim lets go of a process only once it has copied all its output.
        ``timeout`` is how long to wait for it: None, to its end (its failure is raised);
        a number of seconds, at most that long (0: not at all), the work going on past it,
        and a failure is then logged (logger ``sandboxclient``), not raised.
        """
        work = self._connection.start_cleanup(
            self._discard(), name=f"sandboxclient-discard-{self.id}"
        )
        if timeout is None:
            await run_to_end(work)
            return
        work.add_done_callback(self._log_failure)
        if timeout > 0:
            await asyncio.wait([work], timeout=timeout)

    def _log_failure(self, work: asyncio.Task[None]) -> None:
        if not work.cancelled() and (exc := work.exception()) is not None:
            _log.warning("discarding %s: %s", self._what(), exc)

    async def _discard(self) -> None:
        drains = [
            asyncio.ensure_future(_drain(stream))
            for stream in (self.stdout, self.stderr)
            if stream is not None
        ]
        try:
            async with asyncio.timeout(DISCARD_TIMEOUT):
                await self._kill_and_delete()
        except TimeoutError:
            self._close_io()
            raise DeadlineExceededError(
                f"{self._what()} was not deleted within {DISCARD_TIMEOUT} s"
            ) from None
        except ContainerdError:
            self._close_io()
            raise
        finally:
            for drain in drains:
                drain.cancel()
            if drains:
                await asyncio.wait(drains)

    async def _kill_and_delete(self) -> None:
        with contextlib.suppress(NotFoundError):
            await self._kill_and_wait(DISCARD_TIMEOUT)
            try:
                await self.delete(timeout=_DELETE_FIRST_TRY)
            except (DeadlineExceededError, UnknownError, CanceledError):
                # The shim holds a process until it has copied all its output, which a child
                # left in the background can keep open; containerd 2.1's shim waits up to 10
                # s for it, or until the call's deadline (the call then fails), and deletes
                # the process anyway. Gone already (NotFoundError), or once more with time
                # for the shim's wait.
                await self.status(timeout=_DELETE_FIRST_TRY)
                await self.delete(timeout=DISCARD_TIMEOUT)


async def _drain(stream: asyncio.StreamReader) -> None:
    """Read ``stream`` to its end, dropping what comes; a concurrent reader wins."""
    with contextlib.suppress(RuntimeError, OSError):
        while await stream.read(1 << 16):
            pass
