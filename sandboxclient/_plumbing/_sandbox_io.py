"""A sandbox's own process's output, given to its client: the labels that ask a sandboxer for
it, and the FIFOs, held by the sandbox's handle, that carry it.

``new_sandbox(id, command=..., stdout=PIPE, stderr=PIPE)`` makes, before the sandbox
exists, a FIFO per stream in a private folder (mode 0700) and names them in the sandbox's
labels: :data:`OUTPUT_LABEL` (stdout; stderr too when no :data:`ERROR_LABEL` is given, the
one stream ``stderr=STDOUT`` asks for) and :data:`ERROR_LABEL` (stderr, apart). Either may
be ``/dev/null`` (``DEVNULL``). This project's sandboxers check the paths at Start (absolute,
no symbolic link, a FIFO or ``/dev/null``: else INVALID_ARGUMENT naming the label), give
them to the sandbox's process in place of its log, and say so among the labels of Start's
answer, one word per label: :data:`OUTPUT_ATTACHED_LABEL`, :data:`ERROR_ATTACHED_LABEL`. A
sandboxer that leaves one out is refused (FailedPreconditionError) at ``start()``.

The read ends are ``asyncio.StreamReader``s, as a process's (``Process.stdout``): a reader
holds at most about twice its limit (64 KiB) before the FIFO is no longer read, so nothing
is buffered past that unless the user reads, and a sandbox whose output is not read blocks
on its writes, as on a full pipe. Each FIFO also has a write end of ours, so that it cannot
end before the sandbox's writers hold it (containerd's shim opens its writers from
goroutines, one per stream, the second of a shared FIFO perhaps once the first's copy has
ended; the none sandboxer's supervisor opens them before its process runs); it is let go of once
the sandbox's exit is known, by a watch that ``start()`` begins and the Client owns. The
output then ends when the sandbox's last writer closes, once all it wrote is read.

The handle owns the folder and the FIFOs: the folder goes once Start has answered (the open
ends keep working). While ``shutdown()`` runs, each reader takes, past its bound, what the
sandbox's writers give (a shim's copy blocked on a full FIFO may otherwise be cut when its
task is deleted); once the sandbox is shut down (and only then: a failed ``shutdown()``
leaves the output as it was, the sandbox may still run), it takes the rest until every
writer has closed, and every descriptor is closed: the readers give all the sandbox wrote,
to its end (as asyncio's streams after ``wait()``). That is bounded: at most
:data:`REST_BOUND` bytes a stream, and :data:`REST_DEADLINE` seconds after the shutdown
for them all; output past either (more than the reader's bound, twice 64 KiB, and 1 MiB
unread at the shutdown, or a writer outliving the sandbox) is cut, the reader ending
there. A failed ``new_sandbox`` or closing the Client closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from .._facts._golang import go_quote
from .._models import ExitStatus, StartResult
from ..errors import FailedPreconditionError
from ._connection import Connection
from ._pipes import read_pipe, readable
from ._stream_args import DEVNULL, PIPE, STDOUT, StreamArg
from ._wait import ExitChannel

__all__ = (
    "ERROR_ATTACHED_LABEL",
    "ERROR_LABEL",
    "NULL_STREAM",
    "OUTPUT_ATTACHED_LABEL",
    "OUTPUT_LABEL",
    "REST_BOUND",
    "REST_DEADLINE",
    "OutputPlan",
    "SandboxOutput",
    "closed_on_error",
    "drain",
    "open_output",
    "plan_output",
)

OUTPUT_LABEL: Final = "io.sandboxclient.output"
"""A sandbox label: the absolute path of a FIFO (or ``/dev/null``) the sandboxer gives the
sandbox's own process as its stdout, and as its stderr too unless :data:`ERROR_LABEL` is
set, in place of its log."""
ERROR_LABEL: Final = "io.sandboxclient.error"
"""A sandbox label: the FIFO (or ``/dev/null``) that gets the process's stderr, apart from
its stdout; only with :data:`OUTPUT_LABEL`."""
OUTPUT_ATTACHED_LABEL: Final = "io.sandboxclient.output-attached"
"""Set to ``"true"`` among the labels of Start's answer by a sandboxer that honoured
:data:`OUTPUT_LABEL`."""
ERROR_ATTACHED_LABEL: Final = "io.sandboxclient.error-attached"
"""Set to ``"true"`` among the labels of Start's answer by a sandboxer that honoured
:data:`ERROR_LABEL`."""
NULL_STREAM: Final = os.devnull
"""The one path besides a FIFO that the labels may name: the stream is dropped."""

_READ_LIMIT: Final = 2**16
REST_BOUND: Final = 2**20
"""What a stream's reader takes at most, past its bound, of what the sandbox's writers give
while and once it is shut down; the rest is cut."""
REST_DEADLINE: Final = 2.0
"""How long, in seconds, a sandbox's shutdown waits at most for its output's writers to
close; what they give later is cut."""

_Out = Literal["pipe", "null"]
_Err = Literal["pipe", "null", "stdout"]


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """Where a sandbox's process's stdout and stderr go, checked."""

    stdout: _Out
    stderr: _Err


def _kind(value: StreamArg, name: str) -> str:
    if isinstance(value, bool) or value not in (PIPE, DEVNULL, STDOUT):
        raise ValueError(
            f"{name}= of a sandbox's process must be PIPE, DEVNULL"
            f"{' or STDOUT' if name == 'stderr' else ''}, got {value!r}: its output goes to "
            "the client or to the sandbox's log (both None)"
        )
    return {PIPE: "pipe", DEVNULL: "null", STDOUT: "stdout"}[value]


def plan_output(stdout: StreamArg, stderr: StreamArg) -> OutputPlan | None:
    """Check ``stdout=`` and ``stderr=`` of a sandbox: None for both None (the sandbox's
    log), else where each goes; ValueError naming the argument."""
    if stdout is None and stderr is None:
        return None
    if stdout is None or stderr is None:
        given = "stdout" if stderr is None else "stderr"
        raise ValueError(
            f"{given}= is given but {'stderr' if given == 'stdout' else 'stdout'}= is None (the "
            "sandbox's log): a sandbox's output goes to the client or to its log, not both; "
            "give stderr=PIPE, STDOUT or DEVNULL with stdout=PIPE or DEVNULL"
        )
    out = _kind(stdout, "stdout")
    if out == "stdout":
        raise ValueError("stdout=STDOUT is only for stderr")
    return OutputPlan(out, _kind(stderr, "stderr"))  # type: ignore[arg-type]


class _Gate:
    """A read transport as its stream reader sees it: the reader pauses and resumes it,
    save while :attr:`held`: then it stays paused, its descriptor read by us alone, and
    is left as the reader last asked once let go."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport: Any = transport  # a read transport, asyncio's or uvloop's
        self._reading = True
        self.held = False

    def pause_reading(self) -> None:
        self._reading = False
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading = True
        if not self.held:
            self._transport.resume_reading()

    def hold(self) -> None:
        self.held = True
        self._transport.pause_reading()

    def let_go(self) -> None:
        self.held = False
        if self._reading:
            self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _EndingProtocol(asyncio.StreamReaderProtocol):
    """A stream's protocol that says when its pipe is closed (its end read, or closed), and
    gives its reader the transport through a :class:`_Gate`."""

    def __init__(self, reader: asyncio.StreamReader, *, on_lost: Callable[[], None]) -> None:
        super().__init__(reader)
        self._on_lost = on_lost
        self.gate: _Gate | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.gate = _Gate(transport)
        super().connection_made(self.gate)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._on_lost()


class _Fifo:
    """One FIFO: its read end as a stream, and a write end of ours held until released."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.transport: asyncio.ReadTransport | None = None
        self.protocol: _EndingProtocol | None = None
        self.writer = -1
        self.fd = -1
        """The read end, the transport's: valid while :attr:`transport` is set."""
        self.lost = asyncio.Event()
        """Set once the transport has closed the read end (its end read, or closed by us)."""

    async def open(self) -> None:
        os.mkfifo(self.path, 0o600)
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            os.close(fd)
            raise
        loop = asyncio.get_running_loop()

        def protocol(reader: asyncio.StreamReader) -> _EndingProtocol:
            self.protocol = _EndingProtocol(reader, on_lost=self.lost.set)
            return self.protocol

        self.transport, self.reader = await read_pipe(
            loop, fd, limit=_READ_LIMIT, protocol=protocol
        )
        self.fd = fd

    def hold(self) -> _Gate | None:
        """Stop the transport's reads, so that :meth:`pull` alone reads: None if it has
        ended (or is closed)."""
        gate = None if self.protocol is None else self.protocol.gate
        if self.transport is None or self.lost.is_set() or gate is None:
            return None
        gate.hold()
        return gate

    async def pull(self) -> bool:
        """Move into the reader, whatever its bound, what the FIFO's writers give, until
        they have all closed (True) or :data:`REST_BOUND` bytes (False); cancel to stop.
        The reads are the loop's, non-blocking, on a copy of the read end, while
        :meth:`hold` keeps the transport from reading."""
        assert self.reader is not None
        fd = os.dup(self.fd)
        try:
            left = REST_BOUND
            while left > 0:
                try:
                    data = os.read(fd, min(left, _READ_LIMIT))
                except BlockingIOError:  # a writer holds it, nothing is there yet
                    await readable(fd)
                    continue
                if not data:  # every writer has closed, and all they wrote is read
                    return True
                self.reader.feed_data(data)
                left -= len(data)
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1

    def close(self) -> None:
        self.release()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            self.fd = -1


class SandboxOutput:
    """The FIFOs a sandbox's handle holds for its process's output (see the module)."""

    def __init__(self, plan: OutputPlan, connection: Connection) -> None:
        self._plan = plan
        self._connection = connection
        self._dir: str | None = None
        self._fifos: list[_Fifo] = []
        self._watch: asyncio.Task[None] | None = None
        self._unown: Callable[[], None] | None = connection.own(self.close)
        self.labels: dict[str, str] = {}
        """The labels that ask the sandboxer for it."""
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self.exit: ExitStatus | None = None
        """The sandbox's exit once its watch saw it."""

    @classmethod
    async def open(cls, plan: OutputPlan, connection: Connection) -> SandboxOutput:
        """Make and open the FIFOs ``plan`` asks for; nothing is left if this fails."""
        self = cls(plan, connection)
        try:
            await self._open()
        except BaseException:
            self.close()
            raise
        return self

    async def _open(self) -> None:
        plan = self._plan
        if "pipe" in (plan.stdout, plan.stderr):
            self._dir = tempfile.mkdtemp(prefix="sandboxclient-out-")  # mode 0700
        self.labels[OUTPUT_LABEL] = NULL_STREAM
        if plan.stdout == "pipe":
            self.labels[OUTPUT_LABEL], self.stdout = await self._fifo("stdout")
        if plan.stderr == "pipe":
            self.labels[ERROR_LABEL], self.stderr = await self._fifo("stderr")
        elif plan.stderr == "null":
            self.labels[ERROR_LABEL] = NULL_STREAM

    async def _fifo(self, name: str) -> tuple[str, asyncio.StreamReader]:
        assert self._dir is not None
        fifo = _Fifo(os.path.join(self._dir, name))
        self._fifos.append(fifo)
        await fifo.open()
        assert fifo.reader is not None
        return fifo.path, fifo.reader

    async def start(
        self,
        start: Callable[[], Awaitable[StartResult]],
        channel: ExitChannel,
        *,
        sandbox_id: str,
        sandboxer: str,
    ) -> StartResult:
        """Run the sandbox's Start (``start``), check that the sandboxer took the output,
        and watch for the exit on ``channel`` (opened before the Start) to let go of our
        write ends; ``channel`` is closed here whatever happens. A second Start is the
        controller's to answer (or refuse): it begins no second watch."""
        if self._watch is not None:
            channel.close()
            return await start()
        try:
            result = await start()
            acks = {OUTPUT_LABEL: OUTPUT_ATTACHED_LABEL, ERROR_LABEL: ERROR_ATTACHED_LABEL}
            missing = [
                label
                for label, ack in acks.items()
                if label in self.labels and result.labels.get(ack) != "true"
            ]
            if missing:
                raise FailedPreconditionError(
                    f"sandboxer {go_quote(sandboxer)} did not give the sandbox's output to the "
                    f"client (it does not read label {', '.join(missing)}): stdout=/stderr= "
                    "and run() need this project's sandboxers"
                )
        except BaseException:
            channel.close()
            raise
        self._remove_dir()  # the sandboxer has opened them: the open ends keep working
        self._watch = self._connection.spawn(
            self._follow(channel), f"sandboxclient-output-{sandbox_id}"
        )
        return result

    async def _follow(self, channel: ExitChannel) -> None:
        try:
            self.exit = await channel.get()
        finally:
            channel.close()
            for fifo in self._fifos:
                fifo.release()  # the sandbox's writers are open by now: the output ends with them

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def finish(self, shutdown: Callable[[], Awaitable[None]]) -> None:
        """Shut the sandbox down (``shutdown``), its output read meanwhile past the
        readers' bounds (a shim may wait for that to end its copy: see :meth:`_Fifo.pull`);
        once it is, let go of the watch, the folder, our write ends and, once their writers
        have closed (:data:`REST_DEADLINE` at most), the read ends: return once every
        descriptor is closed. Should ``shutdown`` fail, the output is left as it was, but
        for what was read meanwhile: the sandbox may still run. Before a Start has answered
        there is nothing to read: everything is closed."""
        gates = [(fifo, fifo.hold()) for fifo in self._fifos] if self._watch else []
        pulls = {fifo: asyncio.ensure_future(fifo.pull()) for fifo, gate in gates if gate}
        try:
            await shutdown()
        except BaseException:
            for pull in pulls.values():
                pull.cancel()  # it reads no more, though its end may come later
            if pulls:
                await asyncio.wait(pulls.values())  # their copies of the read ends closed
            for fifo, gate in gates:
                ran = pulls.get(fifo)
                if ran is not None and not ran.cancelled() and not ran.exception() and ran.result():
                    fifo.close()  # read to its end: nothing more can come
                elif gate is not None:
                    gate.let_go()
            raise
        opened = [fifo for fifo in self._fifos if fifo.transport is not None]
        for fifo in self._fifos:
            fifo.release()
        try:
            if pulls:
                await asyncio.wait(pulls.values(), timeout=REST_DEADLINE)
        finally:
            for pull in pulls.values():
                pull.cancel()
            self.close()
            if pulls:
                await asyncio.wait(pulls.values())  # their copies of the read ends closed
                for pull in pulls.values():
                    if not pull.cancelled():
                        pull.exception()  # a read that failed ends it, as the bound does
        for fifo in opened:  # the transports close the descriptors on the loop's next turns
            await fifo.lost.wait()

    def close(self) -> None:
        """Stop the watch, close every end and remove the folder; idempotent. What the
        readers hold stays readable; nothing more comes."""
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
        for fifo in self._fifos:
            fifo.close()
        self._remove_dir()
        if self._unown is not None:
            self._unown()
            self._unown = None


async def open_output(
    connection: Connection, stdout: StreamArg, stderr: StreamArg, labels: dict[str, str]
) -> SandboxOutput | None:
    """The output ``stdout=`` and ``stderr=`` ask for, opened, its labels added to
    ``labels`` (None: the sandbox's log); ValueError if they name one of its own."""
    plan = plan_output(stdout, stderr)
    if plan is None:
        return None
    for label in (OUTPUT_LABEL, ERROR_LABEL):
        if label in labels:
            raise ValueError(f"label {label} is stdout=/stderr='s own: give one")
    output = await SandboxOutput.open(plan, connection)
    labels.update(output.labels)
    return output


async def drain(*readers: asyncio.StreamReader | None) -> None:
    """Read ``readers`` to their end, dropping what they hold: their pipes close at it."""
    for reader in readers:
        while reader is not None and await reader.read(_READ_LIMIT):
            pass


@contextlib.contextmanager
def closed_on_error(output: SandboxOutput | None) -> Iterator[None]:
    """Close ``output`` if the block fails (or is cancelled), and let that propagate."""
    try:
        yield
    except BaseException:
        if output is not None:
            output.close()
        raise
