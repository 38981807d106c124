"""A real containerd with the Python sandboxer plugged in as a proxy sandbox controller.

What the project's real-daemon tests and benchmarks run against, and what users' own
integration tests can run against: containerd 2.1's own controllers cannot start a sandbox on
a plain host, the Python sandboxer can.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._client import Client
from .._serve._calls import route_matches
from ..errors import NotFoundError
from ..sandboxer._state import RECORD_FILE
from ._daemon import ContainerdDaemon, require_or_skip_reason
from ._locate import ContainerdUnavailable
from ._procs import umount_under

__all__ = (
    "GVISOR_RUNSC",
    "PLUGIN_NAME",
    "HeldSandboxesError",
    "PluggedContainerd",
    "SandboxerProcess",
    "plugged_containerd",
)

_log = logging.getLogger("sandboxclient")

PLUGIN_NAME = "pysandbox"
"""The name under which containerd forwards Controller calls to the Python sandboxer."""


class SandboxerProcess:
    """``python -m sandboxclient.sandboxer`` running in a child process.

    It keeps its sandboxes in ``state_dir`` (by default ``sandboxer-state`` next to the
    socket), so it can be killed (:meth:`kill`) and started again (:meth:`start`) and take
    back the sandboxes that kept running meanwhile. :meth:`stop` (SIGTERM) kills them.

    It reports every call it receives, as it arrives, to ``trace_path`` (by default
    ``sandboxer-calls.log`` next to the socket): :meth:`wait_for_call` is how a test knows
    that a call made through containerd has reached it. The file is emptied by the first
    :meth:`start` and kept across restarts, so counts add up over them.

    ``isolation`` is its ``--isolation``: ``"container"`` (runc containers made through the
    containerd at ``containerd``, which must be given) or ``"none"`` (host processes).
    ``command`` is the program run, to which ``--socket``, ``--state-dir``, ``--isolation``,
    ``--containerd``, ``--trace-calls`` and a ``--runtime-handler`` for each of
    ``runtime_handlers`` (names to binaries) are appended.
    """

    def __init__(
        self,
        socket_path: str,
        state_dir: str | None = None,
        *,
        isolation: str = "container",
        containerd: str | None = None,
        trace_path: str | None = None,
        command: Sequence[str] = (sys.executable, "-m", "sandboxclient.sandboxer"),
        runtime_handlers: Mapping[str, str] | None = None,
    ) -> None:
        here = os.path.dirname(socket_path)
        self.runtime_handlers = dict(runtime_handlers or {})
        self.socket_path = socket_path
        self.isolation = isolation
        self.containerd = containerd
        self.state_dir = state_dir or os.path.join(here, "sandboxer-state")
        self.trace_path = trace_path or os.path.join(here, "sandboxer-calls.log")
        self.command = tuple(command)
        self.proc: subprocess.Popen[bytes] | None = None
        self._trace = _TraceReader(self.trace_path)

    def start(self, timeout: float = 15.0) -> None:
        """Start it and wait until it says it listens, for ``timeout`` seconds at most.

        Raises:
            RuntimeError: it exited, said something else, or said nothing in time (it is
                then killed); the message carries what it printed.
        """
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self._trace.begin()
        argv = [*self.command, "--socket", self.socket_path, "--state-dir", self.state_dir]
        argv += ["--isolation", self.isolation]
        if self.containerd is not None:
            argv += ["--containerd", self.containerd]
        argv += ["--trace-calls", self.trace_path]
        for name, path in self.runtime_handlers.items():
            argv += ["--runtime-handler", f"{name}={path}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=None)
        assert self.proc.stdout is not None
        out = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        printed, end = _read(out, deadline, line=True)
        said_a_line = end == "line"
        if said_a_line and os.path.exists(self.socket_path):
            return
        if said_a_line:  # yet no socket: what else it says may tell why
            more, end = _read(out, deadline, line=False)
            printed += more
        if end == "eof":  # it is going away: let it finish, to report its status
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(max(0.0, deadline - time.monotonic()))
        # Whatever it is doing, a sandboxer that never came up is not left running.
        killed = self.proc.poll() is None
        returncode = self.kill()
        if not killed:
            problem = f"exited with status {returncode}"
        elif said_a_line:
            problem = f"said it listens but has no socket at {self.socket_path}"
        elif end == "eof":
            problem = "closed its output without saying it listens"
        else:
            problem = f"did not say it listens within {timeout:g} s"
        shown = printed.decode(errors="replace")
        raise RuntimeError(f"the Python sandboxer {problem} (it printed {shown!r})")

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def call_count(self, method: str) -> int:
        """How many calls of ``method`` have reached it so far, over all its restarts.

        ``method`` is a Controller method's name (``"Wait"``), ``"Controller/Wait"``, or
        the whole gRPC route.
        """
        return self._trace.count(method)

    async def wait_for_call(self, method: str, count: int = 1, timeout: float = 30.0) -> None:
        """Return once ``count`` calls of ``method`` (see :meth:`call_count`) have reached it.

        A call has reached it when it has the call's headers, before the controller's method
        runs. Raises :class:`TimeoutError` after ``timeout`` seconds, saying how many came.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while (seen := self._trace.count(method)) < count:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(
                    f"{seen} of {count} calls of {method} reached the Python sandboxer "
                    f"within {timeout:g} s"
                )
            # The file is all there is to watch: look again soon, then less often.
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 10 s): it stops its sandboxes and exits.

        Returns its exit status (0 for a clean stop), None if it was not started.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        returncode = self.proc.wait()
        self._forget_process()
        return returncode

    def kill(self) -> int | None:
        """SIGKILL the sandboxer, as a crash would; its sandboxes keep running.

        Returns its exit status (negative: the signal), None if it was not started.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        returncode = self.proc.wait()
        self._forget_process()
        return returncode

    def _forget_process(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


def _read(fd: int, deadline: float, *, line: bool) -> tuple[bytes, str]:
    """Read ``fd`` until a newline (with ``line``), its end or the ``deadline``
    (:func:`time.monotonic`); what was read, and which ended it: "line", "eof", "timeout"."""
    got = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not (line and b"\n" in got):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return got, "timeout"
            chunk = os.read(fd, 4096)
            if not chunk:
                return got, "eof"
            got += chunk
    return got, "line"


class _TraceReader:
    """Counts the routes a sandboxer appended to its trace file, reading only what is new."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self._counts: collections.Counter[str] = collections.Counter()
        self._begun = False

    def begin(self) -> None:
        """Empty the file, the first time only: counts then add up over restarts."""
        if not self._begun:
            with open(self._path, "wb"):
                pass
            self._begun = True

    def count(self, method: str) -> int:
        """How many of the routes written so far ``method`` names."""
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                new = f.read()
        except FileNotFoundError:
            new = b""
        self._offset += len(new)
        *lines, self._partial = (self._partial + new).split(b"\n")
        self._counts.update(line.decode(errors="replace") for line in lines)
        return sum(n for route, n in self._counts.items() if route_matches(route, method))


@dataclass
class PluggedContainerd:
    """A private containerd wired to a Python sandboxer through a proxy plugin."""

    daemon: ContainerdDaemon
    sandboxer: SandboxerProcess
    plugin_name: str = PLUGIN_NAME
    start_timeout: float | None = None
    """How long each of the two may take to come up (None: their own defaults)."""

    @property
    def address(self) -> str:
        """containerd's gRPC socket."""
        return self.daemon.address

    def ensure_running(self) -> None:
        """Bring back whichever of the two was taken down."""
        if not self.sandboxer.alive():
            self.sandboxer.start(*self._timeout())
        if not self.daemon.alive():
            self.daemon.restart(*self._timeout())

    def _timeout(self) -> tuple[float, ...]:
        return () if self.start_timeout is None else (self.start_timeout,)


GVISOR_RUNSC = "/usr/bin/runsc"
"""Where Debian's ``runsc`` is (``scripts/install-runsc.sh``); the tests' sandboxer offers
it as the runtime handler ``gvisor`` when it is there."""


@contextlib.contextmanager
def plugged_containerd(
    plugin_name: str = PLUGIN_NAME, *, start_timeout: float | None = None
) -> Iterator[PluggedContainerd]:
    """Start the Python sandboxer and a private containerd that forwards to it; stop both.

    The sandboxer isolates (``--isolation container``): it runs each sandbox as a runc
    container that it creates through that daemon. Where gVisor's ``runsc`` is installed
    (:data:`GVISOR_RUNSC`), it also offers it as the runtime handler ``gvisor``.

    ``start_timeout`` bounds how long each may take to come up (their own defaults, 15 and
    20 s, when None): more for a slow machine or an emulator.

    Raises ``ContainerdUnavailable`` when no containerd 2.x can be run here (see
    ``require_or_skip_reason``).
    """
    reason = require_or_skip_reason()
    if reason is not None:
        raise ContainerdUnavailable(reason)
    tmp = tempfile.mkdtemp(prefix="sbx-")
    socket_path = str(Path(tmp) / "pysandbox.sock")
    daemon = ContainerdDaemon(proxy_plugins={plugin_name: socket_path})
    # The isolating sandboxer makes its sandboxes' containers through this very daemon.
    handlers = {"gvisor": GVISOR_RUNSC} if os.access(GVISOR_RUNSC, os.X_OK) else {}
    sandboxer = SandboxerProcess(socket_path, containerd=daemon.address, runtime_handlers=handlers)
    within = () if start_timeout is None else (start_timeout,)
    failure: BaseException | None = None
    try:
        sandboxer.start(*within)
        daemon.start(*within)
        yield PluggedContainerd(daemon, sandboxer, plugin_name, start_timeout)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        try:
            if daemon.alive():  # it kills its sandboxes through the daemon: first
                try:
                    if sandboxer.alive():
                        shut_down_held_after(
                            failure, daemon.address, plugin_name, sandboxer.state_dir
                        )
                finally:
                    sandboxer.stop()
        finally:
            daemon.cleanup()
            sandboxer.stop()
            # What a sandbox's network pins below the state directory, should one be left.
            umount_under(Path(tmp))
            shutil.rmtree(tmp, ignore_errors=True)


class HeldSandboxesError(RuntimeError):
    """Sandboxes a sandboxer still held could not be shut down; ``failures`` maps each
    (``<namespace>/<id>``) to its error."""

    def __init__(self, failures: Mapping[str, Exception]) -> None:
        self.failures = dict(failures)
        listed = "; ".join(f"{name}: {exc!r}" for name, exc in self.failures.items())
        super().__init__(f"{len(self.failures)} held sandbox(es) not shut down: {listed}")


def shut_down_held_after(
    failure: BaseException | None, address: str, sandboxer: str, state_dir: str
) -> None:
    """:func:`shut_down_held`, raising its :class:`HeldSandboxesError` only when no
    ``failure`` is on its way out; else logging it, so that it does not hide ``failure``."""
    try:
        shut_down_held(address, sandboxer, state_dir)
    except HeldSandboxesError as exc:
        if failure is None:
            raise
        _log.error("%s (on the way out of %r)", exc, failure)


def shut_down_held(address: str, sandboxer: str, state_dir: str) -> None:
    """Shut down, through containerd at ``address``, every sandbox the sandboxer of
    ``state_dir`` still holds (its records, ``sandboxes/<namespace>/<id>/sandbox.json``).

    A sandboxer with a state directory keeps a sandbox's network (its namespace's pin in
    that directory, its address lease, its rules) when it stops, for the next sandboxer over
    the directory; a test that failed with sandboxes live leaves some, and no sandboxer
    comes next.

    Each is tried, whatever befell the others (one left is one network leaked).

    Raises:
        HeldSandboxesError: some could not be shut down (each named with its error).
    """
    held = sorted(p.parent for p in Path(state_dir, "sandboxes").glob(f"*/*/{RECORD_FILE}"))
    if not held:
        return
    failures: dict[str, Exception] = {}

    async def shut_down() -> None:
        for record in held:
            namespace, sandbox_id = record.parent.name, record.name
            try:
                async with Client(address, namespace=namespace, sandboxer=sandboxer) as client:
                    try:
                        sandbox = await client.load_sandbox(sandbox_id)
                    except NotFoundError:
                        continue  # containerd's record is gone: so is the sandbox
                    await sandbox.shutdown()
            except Exception as exc:  # the others' networks must go all the same
                failures[f"{namespace}/{sandbox_id}"] = exc

    # Its own loop, in a thread of its own: the caller may be running one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, shut_down()).result()
    if failures:
        raise HeldSandboxesError(failures)
