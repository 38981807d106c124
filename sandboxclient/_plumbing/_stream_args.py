"""A process's stream arguments, checked together (:func:`plan_io`) into an :class:`IOPlan`.

``stdin=``, ``stdout=`` and ``stderr=`` take what ``asyncio.create_subprocess_exec`` takes:
:data:`PIPE` (a stream in this process), :data:`DEVNULL` or None (not connected: the process
gets ``/dev/null``), :data:`STDOUT` for stderr (into stdout's stream), or, for stdout and
stderr, a file path (containerd's ``file://`` log: the shim appends both streams to it) or a
:class:`NamedFifo` someone else holds. What the plan's streams become, FIFOs opened here
and the paths containerd is given, is :class:`~.._io.ProcessIO`'s.
"""

from __future__ import annotations

import os
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from dataclasses import dataclass
from typing import Literal

__all__ = (
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "IOPlan",
    "NamedFifo",
    "StreamArg",
    "plan_io",
)


@dataclass(frozen=True, slots=True)
class NamedFifo:
    """A FIFO someone else holds the read end of, given to the shim by its plain path (a
    sandboxer hands its client's FIFOs over so): for stdout and stderr together, the same
    one twice when they share it. The path must be absolute and normalised (no ``.``,
    ``..`` or doubled ``/``): ValueError naming the argument otherwise, as the shim would
    open it relative to its own working directory. The shim opens it for writing without
    creating it, following symbolic links: the one who gives it vouches for it."""

    path: str


StreamArg = int | str | os.PathLike[str] | NamedFifo | None
"""What a stream argument may be: PIPE, DEVNULL, STDOUT (stderr only), a path, a
:class:`NamedFifo` (stdout and stderr only) or None."""

_Kind = Literal["pipe", "null", "file", "stdout", "fifo"]


@dataclass(frozen=True, slots=True)
class IOPlan:
    """What each stream is to be, checked."""

    stdin: _Kind
    stdout: _Kind
    stderr: _Kind
    terminal: bool
    log_path: str = ""
    """The absolute path of the log file when stdout (and so stderr) goes to a file."""
    fifos: tuple[str, str] = ("", "")
    """stdout's and stderr's :class:`NamedFifo` paths."""

    @property
    def pipes(self) -> bool:
        """Whether any stream is a FIFO this process holds."""
        return "pipe" in (self.stdin, self.stdout, self.stderr)


def _kind(value: StreamArg, name: str, *, file_ok: bool, stdout_ok: bool) -> tuple[_Kind, str]:
    if isinstance(value, NamedFifo):
        path = value.path
        if (
            not isinstance(path, str)
            or "\0" in path
            or not os.path.isabs(path)
            or os.path.normpath(path) != path
        ):
            raise ValueError(
                f"{name}={value!r}: a NamedFifo's path must be absolute and normalised"
            )
        return "fifo", path
    if value is None or value == DEVNULL:
        return "null", ""
    if value == PIPE:
        return "pipe", ""
    if value == STDOUT:
        if not stdout_ok:
            raise ValueError(f"{name}=STDOUT is only for stderr")
        return "stdout", ""
    if isinstance(value, bool | int):
        raise ValueError(f"{name} must be PIPE, DEVNULL, a path or None, got the integer {value}")
    if isinstance(value, str | os.PathLike):
        if not file_ok:
            raise ValueError(
                f"{name} from a file is not something containerd's IO does: open the file "
                "and write it to a PIPE"
            )
        text = os.fspath(value)
        if not isinstance(text, str) or not text or "\0" in text:
            raise ValueError(f"{name} must be a non-empty path without NUL bytes")
        return "file", os.path.abspath(text)
    raise TypeError(f"{name} must be PIPE, DEVNULL, a path or None, got {type(value).__name__}")


def plan_io(
    stdin: StreamArg = None,
    stdout: StreamArg = None,
    stderr: StreamArg = None,
    *,
    terminal: bool = False,
) -> IOPlan:
    """Check a process's stream arguments together; ValueError or TypeError naming them."""
    in_kind, _ = _kind(stdin, "stdin", file_ok=False, stdout_ok=False)
    out_kind, out_path = _kind(stdout, "stdout", file_ok=True, stdout_ok=False)
    err_kind, err_path = _kind(stderr, "stderr", file_ok=True, stdout_ok=True)
    if not isinstance(terminal, bool):
        raise TypeError(f"terminal must be a bool, got {type(terminal).__name__}")
    if "fifo" in (in_kind, out_kind, err_kind):
        if (out_kind, err_kind, in_kind, terminal) != ("fifo", "fifo", "null", False):
            raise ValueError("a NamedFifo is for stdout and stderr together, without a pty")
        return IOPlan(in_kind, out_kind, err_kind, terminal, fifos=(out_path, err_path))
    if terminal and err_kind not in ("null", "stdout"):
        raise ValueError("with terminal=True the pty carries stderr too: leave stderr None")
    if out_kind == "file":
        if err_kind == "stdout" or (err_kind == "file" and err_path == out_path):
            err_kind = "file"
        else:
            raise ValueError(
                "with stdout to a file containerd writes stderr to the same file: pass "
                "stderr=STDOUT or the same path"
            )
    elif err_kind == "file":
        raise ValueError(
            "stderr to a file needs stdout to the same file: containerd logs both streams "
            "to stdout's file"
        )
    elif err_kind == "stdout" and out_kind == "null":
        err_kind = "null"
    return IOPlan(in_kind, out_kind, err_kind, terminal, out_path)
