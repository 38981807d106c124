"""The stand-in's tasks: each container's task, its processes, and how they end.

A :class:`Task` has its own process and the processes exec'd into it (:class:`Proc`). Each
runs through a :class:`Runner`: a :class:`~._hostproc.HostProcess` the stand-in spawned, or
a sandbox's process its controller spawned (see :mod:`._sandboxtasks`). When the task's
own process exits, every other process of the task is killed (SIGKILL), as runc's shim does
for a container with a PID namespace of its own, and the task's exit is reported once they
are all gone. :class:`TaskTable` holds the tasks of every namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from .._facts._clock import utcnow
from .._facts._golang import GO_ZERO_TIME
from .._serve._procfs import stat_fields
from .._wire._pb import AnyPb, MetricPb, cgroups_v1_pb, task_types_pb
from ._hostproc import GroupRemnant, group_map
from ._stdio import Stdio

__all__ = ("Proc", "Runner", "State", "Task", "TaskTable", "metric_of", "settle")

_METRICS_TYPE_URL = "io.containerd.cgroups.v1.Metrics"


_CLOSE_GRACE = 5.0


class Runner(Protocol):
    """What a process of a task runs as."""

    pid: int
    returncode: int | None
    exited_at: datetime | None

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the process; False once it has exited."""

    def holds_group(self) -> bool:
        """Whether its pid, so its process group's number, is still its own (not reaped)."""

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group, while that is safe."""

    def close(self) -> None:
        """Let go of what is held for the process."""


class State(enum.Enum):
    """Where a process is in its life (a task's pause is the task's, not the process's)."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


class Proc:
    """One process of a task: the task's own (``exec_id`` "") or an exec."""

    def __init__(
        self,
        task: Task,
        exec_id: str,
        paths: tuple[str, str, str],
        terminal: bool,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.exec_id = exec_id
        self.paths = paths
        self.terminal = terminal
        self.spec = spec
        """The exec's process spec (the task's own process runs the container's)."""
        self.runner: Runner | None = None
        self.stdio: Stdio | None = None
        self.state = State.CREATED
        self.on_exit: Callable[[Proc], None] | None = None
        """Told of the exit, once it is recorded (the Tasks service publishes it)."""
        self.exit_status = 0
        self.exited_at: datetime | None = None
        self.exited = asyncio.Event()

    @property
    def pid(self) -> int:
        """The host pid (0 for an exec not started)."""
        return self.runner.pid if self.runner is not None else 0

    @property
    def name(self) -> str:
        """The id containerd shows: the exec id, or the container id."""
        return self.exec_id or self.task.container_id

    def status(self) -> int:
        """containerd's status number; a paused task's running processes are PAUSED."""
        if self.state is State.RUNNING and self.task.paused:
            return task_types_pb.Status.PAUSED
        return {
            State.CREATED: task_types_pb.Status.CREATED,
            State.RUNNING: task_types_pb.Status.RUNNING,
            State.STOPPED: task_types_pb.Status.STOPPED,
        }[self.state]

    def to_pb(self) -> task_types_pb.Process:
        """The process as Get and List answer it (without the container id, as they do)."""
        stdin, stdout, stderr = self.paths
        return task_types_pb.Process(
            id=self.name,
            pid=self.pid,
            status=task_types_pb.Status(self.status()),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            terminal=self.terminal,
            exit_status=self.exit_status,
            exited_at=self.exited_at or GO_ZERO_TIME,
        )

    def finish(self, code: int, at: datetime | None) -> None:
        """Record the exit and wake the waiters."""
        self.state = State.STOPPED
        self.exit_status = code
        self.exited_at = at
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit(self)

    def release(self) -> None:
        """Close its streams and what its runner holds."""
        if self.stdio is not None:
            self.stdio.close()
        if self.runner is not None:
            self.runner.close()


class Task:
    """A container's task in one namespace."""

    def __init__(
        self,
        namespace: str,
        container_id: str,
        paths: tuple[str, str, str],
        terminal: bool,
        root: str | None,
        *,
        rooted: bool = False,
    ) -> None:
        self.namespace = namespace
        self.container_id = container_id
        self.root = root
        """The container's ``root.path``, where a cwd missing on the host is looked for."""
        self.rooted = rooted
        """Whether ``root`` is an image's snapshot, where programs and cwds are looked up
        first (see the host-process module)."""
        self.init = Proc(self, "", paths, terminal)
        self.execs: dict[str, Proc] = {}
        self.paused = False
        self.resources: dict[str, Any] = {}
        """The last resources Update stored (recorded, not enforced)."""
        self._init_exit: tuple[int, datetime | None] | None = None
        self._remnants: list[GroupRemnant] = []

    def processes(self) -> Iterator[Proc]:
        """The task's own process, then the execs."""
        yield self.init
        yield from self.execs.values()

    def running(self) -> list[Proc]:
        """The processes that have started and not exited."""
        return [p for p in self.processes() if p.state is State.RUNNING]

    def groups(self) -> set[int]:
        """The process groups of the task's processes not yet reaped (each leads its own):
        a reaped leader's number may be anyone's by now."""
        return {
            p.pid
            for p in self.processes()
            if p.runner is not None and p.pid and p.runner.holds_group()
        }

    def members(self) -> list[int]:
        """Every process of the task on the host: those of its processes' groups, and what
        is left in the groups of those reaped."""
        if self.init.state is State.STOPPED:
            return []
        groups = self.groups()
        found = self._look(groups)
        members = {pid for group in groups for pid in found[group]}
        for remnant in self._remnants:
            members.update(remnant.pids())
        return sorted(members)

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every process of the task."""
        for proc in self.processes():
            if proc.runner is not None and proc.state is not State.STOPPED:
                proc.runner.signal_group(signum)
        if self._remnants:
            self._look(set())
        for remnant in self._remnants:
            remnant.signal(signum)

    def _look(self, groups: set[int]) -> dict[int, list[int]]:
        """One look through /proc for the members of ``groups`` and of the remnants, which
        are brought up to date with it (those left with none are dropped)."""
        for remnant in [r for r in self._remnants if not r.drop_gone()]:
            self._drop(remnant)
        found = group_map(groups | {r.pgid for r in self._remnants})
        for remnant in list(self._remnants):
            if not remnant.refresh(found[remnant.pgid]):
                self._drop(remnant)
        return found

    def _drop(self, remnant: GroupRemnant) -> None:
        remnant.close()
        self._remnants.remove(remnant)

    # -- exits ----------------------------------------------------------------------------

    def leader_exiting(self, pid: int) -> None:
        """Process ``pid`` of the task has exited, not yet reaped: hold what is left of its
        group while the number is still its."""
        remnant = GroupRemnant(pid)
        remnant.take(group_map([pid])[pid])
        if remnant.pids():
            self._remnants.append(remnant)

    def init_exiting(self, pid: int = 0) -> None:
        """The task's own process has exited, not yet reaped: kill the rest of the task.
        ``pid``: its pid, where the stand-in reaps it (what is left of its group is held)."""
        if pid:
            self.leader_exiting(pid)
        self.signal_all(signal.SIGKILL)

    def init_exited(self, code: int, at: datetime | None) -> None:
        """Hold the task's exit until its execs are gone, then report it."""
        self._init_exit = (code, at)
        self._settle()

    def exec_exited(self, proc: Proc, code: int, at: datetime | None) -> None:
        """An exec has exited."""
        proc.finish(code, at)
        self._settle()

    def _settle(self) -> None:
        if self._init_exit is None or self.init.state is State.STOPPED:
            return
        if any(p.state is State.RUNNING for p in self.execs.values()):
            return
        self.paused = False
        self.init.finish(*self._init_exit)

    def release(self) -> None:
        """Close every stream and runner of the task, and what is held of its groups."""
        for proc in self.processes():
            proc.release()
        for remnant in self._remnants:
            remnant.close()
        self._remnants.clear()


class TaskTable:
    """The tasks of every namespace, by container id."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], Task] = {}
        self.closed = False
        self.late_shared_writer = False
        """Whether an exec's Start opens a FIFO's second writer late (``Stdio.started_late``)."""

    def get(self, namespace: str, container_id: str) -> Task | None:
        """The task of ``container_id`` in ``namespace``, if it has one."""
        return self._tasks.get((namespace, container_id))

    def add(self, task: Task) -> None:
        """Keep a new task."""
        self._tasks[(task.namespace, task.container_id)] = task

    def remove(self, task: Task) -> None:
        """Forget ``task`` and close what it holds."""
        if self._tasks.get((task.namespace, task.container_id)) is task:
            del self._tasks[(task.namespace, task.container_id)]
        task.release()

    def in_namespace(self, namespace: str) -> list[Task]:
        """The tasks of ``namespace``, by container id."""
        return [self._tasks[k] for k in sorted(self._tasks) if k[0] == namespace]

    def all(self) -> list[Task]:
        """Every task."""
        return list(self._tasks.values())

    async def aclose(self) -> None:
        """Kill every process of every task, wait for them to exit (a few seconds at most)
        and close everything held. Idempotent."""
        self.closed = True
        tasks = list(self._tasks.values())
        waits = []
        for task in tasks:
            task.signal_all(signal.SIGKILL)
            for proc in task.processes():
                if proc.runner is not None and proc.state is not State.STOPPED:
                    proc.runner.signal(signal.SIGKILL)
                    waits.append(asyncio.ensure_future(proc.exited.wait()))
        if waits:
            try:
                await asyncio.wait(waits, timeout=_CLOSE_GRACE)
            finally:
                for waiter in waits:
                    waiter.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        for task in tasks:
            self.remove(task)


async def settle(task: Task, *, stopped: bool, timeout: float = 1.0) -> None:
    """Wait until every process of ``task`` is stopped (or none is), as runc's freezer
    waits for its cgroup to be FROZEN (or THAWED) by reading its state every millisecond."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        states = []
        for pid in task.members():
            with contextlib.suppress(OSError, IndexError):
                states.append(stat_fields(pid)[0])
        if all((state in "tT") == stopped for state in states if state not in "ZX"):
            return
        await asyncio.sleep(0.001)


def _limit(resources: dict[str, Any], section: str) -> int:
    value = resources.get(section)
    limit = value.get("limit") if isinstance(value, dict) else None
    return limit if isinstance(limit, int) and limit > 0 else 0


def metric_of(task: Task) -> MetricPb:
    """A cgroup v1 Metrics sample of ``task``, from /proc."""
    ticks_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    user = kernel = rss = 0
    members = task.members()
    for pid in members:
        try:
            fields = stat_fields(pid)
            user += int(fields[11]) * ticks_ns
            kernel += int(fields[12]) * ticks_ns
            rss += int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    data = cgroups_v1_pb.Metrics(
        pids=cgroups_v1_pb.PidsStat(current=len(members), limit=_limit(task.resources, "pids")),
        cpu=cgroups_v1_pb.CpuStat(
            usage=cgroups_v1_pb.CpuUsage(total=user + kernel, kernel=kernel, user=user)
        ),
        memory=cgroups_v1_pb.MemoryStat(
            usage=cgroups_v1_pb.MemoryEntry(usage=rss, limit=_limit(task.resources, "memory"))
        ),
    )
    return MetricPb(
        timestamp=utcnow(),
        id=task.container_id,
        data=AnyPb(type_url=_METRICS_TYPE_URL, value=bytes(data)),
    )
