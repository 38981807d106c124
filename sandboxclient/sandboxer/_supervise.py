"""The supervisor of one process sandbox: ``python -I -S _supervise.py DIR TIED [SIGNUM...]``.

A :class:`~sandboxclient.sandboxer.ProcessSandboxer` (``--isolation none``) starts one of these
per sandbox, in a session of its own. It runs as a top-level module (or by path) with only the
standard library: nothing of the package is imported, which keeps its start-up close to a
bare interpreter's. It talks over its stdin and stdout:

1. It makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): whatever the sandbox's
   processes start, however they detach (``setsid``, a double fork), is reparented to it
   when its parent dies, never to the host's init, so the whole tree stays its to kill. With
   TIED = ``1`` (a sandboxer without a state directory) it also asks to be told
   (``PR_SET_PDEATHSIG``) when the sandboxer dies, and then kills the tree.
2. stdin carries the request: ``<length>\\n`` then NUL-separated fields: ``cwd``, the number
   of arguments, the arguments, then the ``KEY=VALUE`` environment entries, and, when the
   sandbox's output goes to its client's FIFO, an empty field and that FIFO's path, then,
   when stderr goes to a FIFO of its own, that FIFO's path.
3. It spawns the process in a new session (so its own process group), with stdin on
   /dev/null, stdout and stderr appended to ``DIR/stdout`` and ``DIR/stderr`` (mode 0600)
   or on the client's FIFOs (opened without waiting: with no reader the start fails; what
   is opened must be a FIFO or /dev/null, else the start fails with :data:`NOT_A_STREAM`),
   and the SIGNUMs (SIGPIPE, SIGXFSZ: what Python ignores) back to their default action, and
   answers on stdout ``started\\0PID\\0START`` (START is the process's start time in clock
   ticks since boot, from /proc) or ``failed\\0ERRNO\\0FILENAME``, either ended by two NULs;
   then stdout is closed. Every other descriptor it inherited was closed at its start.
4. It reads stdin to its end: ``go`` confirms the start. Anything else (the sandboxer died or
   gave up before recording the pid) kills the tree, as nobody would know of it.
5. It reaps every process that comes to it until the sandbox's own exits, then kills the rest
   of the tree (as when a container's init dies), reaps it, and writes ``DIR/exit.<its own
   pid>`` atomically (mode 0600, temporary file and rename), as JSON: ``exit_status``
   (128 + N for signal N), ``exited_at_ns`` (Unix time), ``pid``, and ``reason`` when the
   status is not the process's own.

SIGTERM, SIGINT and SIGHUP sent to the supervisor are passed on to the sandbox's process
group; SIGUSR1 kills the whole tree (what the sandboxer sends for a Stop's SIGKILL).
"""

from __future__ import annotations

import errno
import os
import stat  # already loaded by os: nothing more is read at start-up
import sys
import time

__all__ = (
    "ANSWER_END",
    "EXIT_PREFIX",
    "GO",
    "KILL_TREE",
    "LOG_FILES",
    "NOT_A_STREAM",
    "exit_file",
    "main",
    "run",
    "start_ticks",
)

EXIT_PREFIX = "exit."
"""The exit file is ``EXIT_PREFIX`` + the supervisor's pid, in the sandbox's directory."""

ANSWER_END = b"\0\0"
"""What ends the supervisor's answer (its fields hold no NUL)."""

GO = b"go"
"""What the sandboxer writes to the supervisor's stdin once it has recorded the start."""

KILL_TREE = 10
"""SIGUSR1: the signal that has a supervisor kill every process of its sandbox."""

LOG_FILES = ("stdout", "stderr")
"""The files, in the sandbox's directory, that get its stdout and stderr."""

_SIGKILL = 9
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_DEV_NULL = "/dev/null"
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW  # kept across the exec


def exit_file(directory: str, supervisor_pid: int) -> str:
    """Where the supervisor with pid ``supervisor_pid`` writes the exit of its process."""
    return os.path.join(directory, f"{EXIT_PREFIX}{supervisor_pid}")


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _prctl(option: int, value: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_request(fd: int) -> tuple[bytes, list[bytes], dict[bytes, bytes], bytes, bytes]:
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError("no request")
        header += byte
    fields = _read_exactly(fd, int(header)).split(b"\0")
    cwd, count = fields[0], int(fields[1])
    args = fields[2 : 2 + count]
    rest, output, error = fields[2 + count :], b"", b""
    if b"" in rest:  # env entries are never empty: what follows is the output FIFO(s)
        output, *errors = rest[rest.index(b"") + 1 :]
        error = errors[0] if errors else b""
        rest = rest[: rest.index(b"")]
    env = dict(item.split(b"=", 1) for item in rest)
    return cwd, args, env, output, error


NOT_A_STREAM = errno.EINVAL
"""The errno of a ``failed`` answer whose file, a client's FIFO by its path, was found
once opened to be neither a FIFO nor ``/dev/null``."""


def _check_stream(fd: int, path: bytes) -> None:
    """Refuse what ``path`` opened as ``fd`` unless it is a FIFO or ``/dev/null``: the
    sandboxer checked the path at Start, but it may have been replaced since."""
    found = os.fstat(fd)
    if stat.S_ISFIFO(found.st_mode):
        return
    if stat.S_ISCHR(found.st_mode) and found.st_rdev == os.stat(_DEV_NULL).st_rdev:
        return
    raise OSError(NOT_A_STREAM, "neither a FIFO nor /dev/null", os.fsdecode(path))


def _spawn(
    directory: str,
    cwd: bytes,
    args: list[bytes],
    env: dict[bytes, bytes],
    default_signals: tuple[int, ...],
    output: bytes = b"",
    error: bytes = b"",
) -> int:
    """Spawn ``args`` as subprocess.Popen would (PATH of ``env``), in a new session."""
    logs = [os.path.join(directory, name) for name in LOG_FILES]
    streams: list[tuple[object, ...]] = [
        (os.POSIX_SPAWN_OPEN, 1, logs[0], _LOG_FLAGS, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, logs[1], _LOG_FLAGS, 0o600),
    ]
    fifos: list[int] = []
    try:
        for given in (output, error) if error else (output,) if output else ():
            fifos.append(os.open(given, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC))
            _check_stream(fifos[-1], given)
            os.set_blocking(fifos[-1], True)  # the sandbox's writes wait on a full FIFO
    except BaseException:
        for fd in fifos:
            os.close(fd)
        raise
    if fifos:
        streams = [(os.POSIX_SPAWN_DUP2, fifos[0], 1), (os.POSIX_SPAWN_DUP2, fifos[-1], 2)]
    os.chdir(cwd)
    try:
        program = args[0]
        if b"/" in program:
            candidates = [program]
        else:
            path = env.get(b"PATH")
            found = os.get_exec_path({} if path is None else {"PATH": os.fsdecode(path)})
            candidates = [os.path.join(os.fsencode(d), program) for d in found]
        first: OSError | None = None  # the first error other than "not there", as Popen
        last: OSError | None = None
        for candidate in candidates:
            try:
                return os.posix_spawn(
                    candidate,
                    args,
                    env,
                    file_actions=[(os.POSIX_SPAWN_OPEN, 0, _DEV_NULL, os.O_RDONLY, 0), *streams],
                    setsid=True,
                    setsigdef=default_signals,
                )
            except OSError as exc:
                last = exc
                if first is None and exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    first = exc
        saved = first or last
        assert saved is not None
        saved.filename = os.fsdecode(program)
        raise saved
    finally:
        os.chdir("/")
        for fd in fifos:
            os.close(fd)


def _write_exit(path: str, status: int, pid: int, reason: str = "") -> None:
    import json

    record: dict[str, object] = {"exit_status": status, "exited_at_ns": time.time_ns(), "pid": pid}
    if reason:
        record["reason"] = reason
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp"
    try:  # noqa: SIM105  (contextlib would slow down the start)
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _descendants(root: int) -> list[int]:
    """Every process below ``root``, found through /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X"):
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _reap(block: bool) -> bool:
    """Reap what has exited (with ``block``, wait for one); False once no child is left."""
    try:
        while True:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
            if pid == 0:
                return True
            block = False
    except ChildProcessError:
        return False


def _kill_tree(*, reap: bool = True) -> None:
    """SIGKILL every process below this one until none is left alive; with ``reap``, reap
    them too (not in a signal handler: the main loop must still see its process's exit)."""
    me = os.getpid()
    for round_ in range(2000):
        victims = _descendants(me)
        if not victims:
            break
        if round_:
            time.sleep(0.0005)  # let them die, and their children come to this subreaper
        for victim in victims:
            try:  # noqa: SIM105
                os.kill(victim, _SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if reap:
            _reap(block=False)


def main(argv: list[str]) -> int:
    """Run the protocol described in the module docstring; the supervisor's exit status."""
    directory = argv[1]
    tied = len(argv) > 2 and argv[2] == "1"
    default_signals = tuple(int(signum) for signum in argv[3:])
    path = exit_file(directory, os.getpid())
    # Nothing of the sandboxer's (its sockets, whatever an event loop let through) may reach
    # the sandbox: only stdin, stdout and stderr stay open.
    os.closerange(3, 1 << 16)
    try:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        if tied:
            _prctl(_PR_SET_PDEATHSIG, KILL_TREE)
        cwd, args, env, output, error = _read_request(0)
    except (EOFError, ValueError, IndexError, OSError):
        return 2
    import signal

    signal.signal(KILL_TREE, lambda signum, frame: _kill_tree(reap=False))
    try:
        pid = _spawn(directory, cwd, args, env, default_signals, output, error)
    except OSError as exc:
        answer = [b"failed", str(exc.errno or 0).encode(), os.fsencode(exc.filename or "")]
        os.write(1, b"\0".join(answer) + ANSWER_END)
        return 1
    answer = [b"started", str(pid).encode(), str(start_ticks(pid) or 0).encode()]
    try:  # noqa: SIM105
        os.write(1, b"\0".join(answer) + ANSWER_END)
    except OSError:
        pass  # the sandboxer is gone: no "go" will come
    _blank(1, os.O_WRONLY)
    confirmation = b""
    try:
        while chunk := os.read(0, 64):
            confirmation += chunk
    except OSError:
        pass
    _blank(0, os.O_RDONLY)
    if confirmation != GO:
        _kill_tree()
        _write_exit(
            path,
            128 + _SIGKILL,
            pid,
            "the sandboxer went away or gave up before it recorded the start; "
            "the process was killed",
        )
        return 0

    import json  # noqa: F401  (for _write_exit, now, so that the exit is written at once)

    def forward(signum: int, frame: object) -> None:
        try:  # noqa: SIM105
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        # Orphans of the sandbox come to this subreaper: reap them too.
        reaped, wait_status = os.waitpid(-1, 0)
        if reaped == pid:
            break
    code = os.waitstatus_to_exitcode(wait_status)
    # The process is reaped; whatever it left behind goes too.
    _kill_tree()
    while _reap(block=True):
        pass
    _write_exit(path, 128 - code if code < 0 else code, pid)
    return 0


def _blank(fd: int, flags: int) -> None:
    """Point ``fd`` at /dev/null, so the pipe behind it is closed and the number stays taken."""
    null = os.open(_DEV_NULL, flags)
    os.dup2(null, fd)
    os.close(null)


def run() -> None:
    """Run :func:`main` on the command line and exit at once (there is nothing to flush or
    clean up, and the sandboxer hears of the exit that much sooner)."""
    os._exit(main(sys.argv))


if __name__ == "__main__":
    run()
