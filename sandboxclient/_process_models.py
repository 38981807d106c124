"""Public, immutable views of tasks and processes: their state and what a run produced."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ._models import AnyValue

__all__ = ("CompletedProcess", "ProcessInfo", "ProcessStatus", "TaskInfo", "TaskState")


class TaskState(enum.StrEnum):
    """A task's or process's state, as containerd names it."""

    UNKNOWN = "unknown"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    PAUSING = "pausing"


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """Where a task or process is: its state, and once stopped its exit code and time."""

    state: TaskState
    pid: int
    returncode: int | None = None
    """None until the process has stopped."""
    exited_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task or exec process as containerd lists it."""

    container_id: str
    exec_id: str
    """"" for a container's own task, the exec id for a process exec'd into it."""
    pid: int
    state: TaskState
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    returncode: int | None = None
    exited_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process of a task, as ``pids()`` reports it."""

    pid: int
    info: AnyValue | None = None


@dataclass(frozen=True, slots=True)
class CompletedProcess:
    """What ``run()`` gives back: the exit code and all the output, as bytes.

    ``stdout_truncated`` / ``stderr_truncated`` say whether that stream went over
    ``max_output`` bytes, the rest of it read and dropped.
    """

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    started_at: datetime | None = None
    exited_at: datetime | None = None

    @property
    def success(self) -> bool:
        """Whether the exit code is 0."""
        return self.returncode == 0

    @classmethod
    def of(
        cls,
        args: Sequence[str],
        returncode: int,
        output: tuple[tuple[bytes, bool], tuple[bytes, bool]],
        started_at: datetime | None,
        exited_at: datetime | None,
    ) -> CompletedProcess:
        """Build one from the two streams' (bytes, truncated) pairs."""
        (out, out_cut), (err, err_cut) = output
        return cls(tuple(args), returncode, out, err, out_cut, err_cut, started_at, exited_at)
