"""The stand-in's processes: an OCI process spec run as a plain process on this host.

No isolation at all: the spec's namespaces, root filesystem, user, capabilities, rlimits
and cgroup are not enforced. What is acted on is ``args``, ``env`` and ``cwd``, checked
and resolved as runc does it (runc's words for what it refuses), with two host-side rules:

- the program is looked up on the host, along the ``PATH`` of the spec's ``env``;
- ``cwd`` is a host directory when there is one; otherwise the same path inside the
  container's ``root.path``, which a task's own process gets made there if missing, as runc
  makes a missing ``cwd`` in the container's root (an exec's is not made, as with runc);
- a task whose root is an image's snapshot (its Create's rootfs is one of the stand-in's
  snapshots) finds its program and cwd inside that directory instead, as if it were ``/``
  (without a chroot: a symbolic link there to an absolute path leads to the host's file).

Each process leads a session and process group of its own. It is spawned through a small
Python trampoline that sets up what :mod:`subprocess` cannot (the pty as controlling
terminal, signals left at their defaults) and then ``execve`` s the program with exactly
the spec's argv and environment; a task's own process waits in the trampoline until Start,
so it has its pid from Create on, as runc's ``init`` does. Exits are heard through a pidfd
on the event loop: no thread waits on the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._facts._clock import utcnow
from .._serve._procfs import stat_fields
from ._pump import close_fd

__all__ = (
    "GroupRemnant",
    "HostProcess",
    "Launch",
    "SpecError",
    "group_map",
    "resolve",
)

# argv: flags, gate fd (-1: none), status fd, program, cwd, argc, argv..., env...
_TRAMPOLINE = """\
import os, signal, sys
flags, gate, status, path, cwd, argc, *rest = sys.argv[1:]
gate, status, argc = int(gate), int(status), int(argc)
if gate >= 0:
    if not os.read(gate, 1):
        os._exit(255)
    os.close(gate)
if "t" in flags:
    import fcntl, termios
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
for name in ("SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
os.set_inheritable(status, False)
try:
    os.chdir(cwd)
    os.execve(path, rest[:argc], dict(e.split("=", 1) for e in rest[argc:] if "=" in e))
except OSError as exc:
    os.write(status, str(exc.errno).encode())
os._exit(255)
"""


class SpecError(Exception):
    """runc refused the process; ``message`` is its words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Launch:
    """A process spec, checked and resolved on this host."""

    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def resolve(
    process: Mapping[str, Any], *, root: str | None, own: bool, rooted: bool = False
) -> Launch:
    """Check ``process`` (an OCI process spec) as runc does and find its program and cwd.

    ``root`` is the container's ``root.path``; ``own`` is True for a task's own process.
    ``rooted`` (an image's snapshot is the root) looks the cwd and the program up inside
    ``root`` instead of on the host. Raises :class:`SpecError`.
    """
    cwd = process.get("cwd") or ""
    if not isinstance(cwd, str) or not cwd:
        raise SpecError("Cwd property must not be empty")
    if not os.path.isabs(cwd):
        raise SpecError("Cwd must be an absolute path")
    args = _strings(process.get("args"))
    if not args:
        raise SpecError("args must not be empty")
    env = _strings(process.get("env"))
    if rooted and root:
        host_cwd = _host_cwd(cwd, root, own, rooted=True)
        return Launch(_look_path(args[0], env, host_cwd, root), args, env, host_cwd)
    host_cwd = _host_cwd(cwd, root, own)
    return Launch(_look_path(args[0], env, host_cwd), args, env, host_cwd)


def _host_cwd(cwd: str, root: str | None, own: bool, *, rooted: bool = False) -> str:
    if not rooted and os.path.isdir(cwd):
        return cwd
    if root and os.path.isabs(root) and os.path.isdir(root):
        inside = os.path.join(root, cwd.lstrip("/"))
        if own:
            with contextlib.suppress(OSError):
                os.makedirs(inside, mode=0o755, exist_ok=True)
        if os.path.isdir(inside):
            return inside
    raise SpecError(
        f'unable to start container process: chdir to cwd ("{cwd}") set in config.json '
        "failed: no such file or directory"
    )


def _look_path(name: str, env: Iterable[str], cwd: str, root: str = "/") -> str:
    """Go's ``exec.LookPath`` with the spec's PATH, as runc's init calls it; absolute paths
    are taken under ``root``."""
    prefix = "unable to start container process: exec: "
    if "/" in name:
        path = (
            os.path.join(root, name.lstrip("/"))
            if name.startswith("/")
            else os.path.join(cwd, name)
        )
        try:
            os.stat(path)
        except OSError as exc:
            text = exc.strerror or str(exc)
            raise SpecError(
                f'{prefix}"{name}": stat {name}: {text[:1].lower()}{text[1:]}'
            ) from None
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise SpecError(f'{prefix}"{name}": permission denied')
        return path
    search = ""
    for entry in env:
        if entry.startswith("PATH="):
            search = entry[len("PATH=") :]
    for folder in search.split(":") if search else ():
        if folder.startswith("/"):
            path = os.path.join(root, folder.lstrip("/"), name)
        else:
            path = os.path.join(cwd, folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise SpecError(f'{prefix}"{name}": executable file not found in $PATH')


def group_map(groups: Iterable[int]) -> dict[int, list[int]]:
    """The pids of the processes in each of the process groups ``groups``, sorted, by group
    (one look through /proc for them all)."""
    found: dict[int, list[int]] = {group: [] for group in groups}
    if not found:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            members = found.get(int(stat_fields(int(entry))[2]))
            if members is not None:
                members.append(int(entry))
    for members in found.values():
        members.sort()
    return found


def _unreaped(pidfd: int) -> bool:
    """Whether the process ``pidfd`` names has not been reaped (a zombie has not)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but no longer ours to signal (a set-user-ID program)
        return True
    return True


class GroupRemnant:
    """What is left of a process group once its leader is reaped, held by pidfd.

    With its leader reaped, a group's number stays reserved only while a member lives; then
    the kernel may give it to any new process, whose own session would be a group of that
    number. So members are taken only while the number is provably the group's (its leader
    not yet reaped; later, a member already held still in it around the look) and are
    signalled through their pidfds, never through the number. What is not seen is not held:
    a member's child born after one look, whose parent is reaped before the next, is lost
    with the proof that the number is still the group's.
    """

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self._held: dict[int, int] = {}

    def take(self, members: Iterable[int]) -> None:
        """Hold ``members``, the group's as a look through /proc found them; only while its
        number is known to be its."""
        for pid in members:
            if pid == self.pgid or pid in self._held:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            # The pid may name another process by now: held only if the one the descriptor
            # names was still in the group when it was looked at again.
            if self._in_group(pid, fd):
                self._held[pid] = fd
            else:
                close_fd(fd)

    def drop_gone(self) -> bool:
        """Let go of the members reaped; False once none is left."""
        for pid, fd in list(self._held.items()):
            if not _unreaped(fd):
                close_fd(self._held.pop(pid))
        return bool(self._held)

    def refresh(self, members: Iterable[int]) -> bool:
        """Take the group's ``members`` from a look made after :meth:`drop_gone` (those that
        came since: children of the held), if a member held before the look is still in the
        group after it; False once none is left."""
        known = dict(self._held)
        self.take(members)
        if not any(self._in_group(pid, fd) for pid, fd in known.items()):
            # None of those held stayed through the look: its number may be another's now.
            for pid in [p for p in self._held if p not in known]:
                close_fd(self._held.pop(pid))
        return self.drop_gone()

    def pids(self) -> list[int]:
        """The members held, sorted."""
        return sorted(self._held)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every member held."""
        for pid, fd in list(self._held.items()):
            try:
                signal.pidfd_send_signal(fd, signum)
            except ProcessLookupError:
                close_fd(self._held.pop(pid))
            except PermissionError:
                pass  # a set-user-ID program's, which the stand-in's user may not signal

    def close(self) -> None:
        """Let go of every descriptor held. Idempotent."""
        for fd in self._held.values():
            close_fd(fd)
        self._held.clear()

    def _in_group(self, pid: int, pidfd: int) -> bool:
        # Read before the pidfd is asked: unreaped then, the pid still named that process.
        try:
            in_group = int(stat_fields(pid)[2]) == self.pgid
        except (OSError, IndexError, ValueError):
            return False
        return in_group and _unreaped(pidfd)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class HostProcess:
    """One spawned process: its pid, signals, and its exit as the loop hears it."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        gate: int | None,
        status: int,
        on_exit: Callable[[HostProcess], None],
        before_reap: Callable[[HostProcess], None] | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._popen = popen
        self._gate = gate
        self._status = status
        self._on_exit = on_exit
        self._before_reap = before_reap
        self.pid = popen.pid
        self.returncode: int | None = None
        """The exit code (128 + N for signal N) once it has exited."""
        self.exited_at: datetime | None = None
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._exited)

    @classmethod
    def spawn(
        cls,
        launch: Launch,
        fds: tuple[int, int, int],
        *,
        gated: bool,
        terminal: bool,
        on_exit: Callable[[HostProcess], None],
        before_reap: Callable[[HostProcess], None] | None = None,
    ) -> HostProcess:
        """Start ``launch`` with ``fds`` as its stdin, stdout and stderr.

        A ``gated`` process waits for :meth:`release` before it runs its program.
        ``before_reap`` is called once it has exited, while its pid is still reserved (the
        safe moment to signal its process group); then ``on_exit``. Raises ``OSError``.
        """
        gate_r, gate_w = os.pipe2(os.O_CLOEXEC) if gated else (-1, None)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        argv = [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, "t" if terminal else "-"]
        argv += [str(gate_r), str(status_w), launch.path, launch.cwd, str(len(launch.args))]
        argv += [*launch.args, *launch.env]
        try:
            popen = subprocess.Popen(
                argv,
                stdin=fds[0],
                stdout=fds[1],
                stderr=fds[2],
                pass_fds=tuple(fd for fd in (gate_r, status_w) if fd >= 0),
                start_new_session=True,
                env={},
                cwd="/",
            )
        except BaseException:
            for fd in (gate_r, gate_w, status_r):
                close_fd(fd)
            raise
        finally:
            close_fd(status_w)
        close_fd(gate_r)
        os.set_blocking(status_r, False)
        return cls(popen, gate_w, status_r, on_exit, before_reap)

    @property
    def running(self) -> bool:
        """Whether it has not exited yet."""
        return self.returncode is None

    async def release(self) -> None:
        """Let the program run (a gated process) and wait until it has been executed.

        Raises :class:`SpecError` when ``execve`` failed (the process then exits).
        """
        gate, self._gate = self._gate, None
        if gate is not None:
            with contextlib.suppress(OSError):
                os.write(gate, b"g")
            close_fd(gate)
        answer: asyncio.Future[bytes] = self._loop.create_future()
        status = self._status

        def readable() -> None:
            try:
                data = os.read(status, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not answer.done():
                answer.set_result(data)

        self._loop.add_reader(status, readable)
        try:
            data = await answer
        finally:
            self._loop.remove_reader(status)
            close_fd(status)
            self._status = -1
        if data:
            raise SpecError(f"unable to start container process: exec: {os.strerror(int(data))}")

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the process itself; False if it has exited."""
        if self._pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:
            return False
        return True

    def holds_group(self) -> bool:
        """Whether it has not been reaped: its pid, and so its group's number, is its own."""
        return self._pidfd is not None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to its process group while it has not been reaped."""
        if self.holds_group():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def _exited(self) -> None:
        if self._pidfd is None:
            return
        self._loop.remove_reader(self._pidfd)
        if self._before_reap is not None:
            self._before_reap(self)
        try:
            _, status = os.waitpid(self.pid, 0)
            code = _exit_code(status)
        except ChildProcessError:  # reaped by someone else: the status is lost
            code = 255
        self._popen.returncode = code  # so that Popen does not think it still runs
        close_fd(self._pidfd)
        self._pidfd = None
        self.returncode = code
        self.exited_at = utcnow()
        self._on_exit(self)

    def close(self) -> None:
        """Let go of every descriptor held for the process, its pidfd included (then its
        exit is no longer heard); the process itself is not touched. Idempotent."""
        close_fd(self._gate)
        self._gate = None
        close_fd(self._status)
        self._status = -1
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            close_fd(self._pidfd)
            self._pidfd = None
