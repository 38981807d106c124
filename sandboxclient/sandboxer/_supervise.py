"""The supervisor of one sandbox process: ``python -I -S _supervise.py DIR [SIGNUM...]``.

A :class:`~sandboxclient.sandboxer.ProcessSandboxer` with a state directory starts one of these
per sandbox, in a session of its own, so the sandbox and a record of how it ended both outlive
the sandboxer. It runs as a top-level module (or by path) with only the standard library:
nothing of the package is imported, not even :mod:`signal` before the start is confirmed,
which keeps its start-up close to a bare interpreter's. It talks over its stdin and stdout:

1. stdin carries the request: ``<length>\\n`` then NUL-separated fields: ``cwd``, the number
   of arguments, the arguments, then the ``KEY=VALUE`` environment entries.
2. It spawns the process in a new session (so its own process group), with stdio on
   /dev/null and the SIGNUMs (SIGPIPE, SIGXFSZ: what Python ignores) back to their default
   action, and answers on stdout ``started\\0PID\\0START`` (START is the process's start
   time in clock ticks since boot, from /proc) or ``failed\\0ERRNO\\0FILENAME``; then stdout
   is closed.
3. It reads stdin to its end: ``go`` confirms the start. Anything else (the sandboxer died or
   gave up before recording the pid) kills the process group, as nobody would know of it.
4. It waits for the process, kills whatever is left in its process group (as when a
   container's init dies), and writes ``DIR/exit.<its own pid>`` atomically (temporary file
   and rename), as JSON: ``exit_status`` (128 + N for signal N), ``exited_at_ns`` (Unix time),
   ``pid``, and ``reason`` when the status is not the process's own.

SIGTERM, SIGINT and SIGHUP sent to the supervisor are passed on to the process group.
"""

from __future__ import annotations

import errno
import os
import sys
import time

__all__ = ("EXIT_PREFIX", "GO", "exit_file", "main", "run", "start_ticks")

EXIT_PREFIX = "exit."
"""The exit file is ``EXIT_PREFIX`` + the supervisor's pid, in the sandbox's directory."""

GO = b"go"
"""What the sandboxer writes to the supervisor's stdin once it has recorded the start."""

_SIGKILL = 9
_DEV_NULL = "/dev/null"


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


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_request(fd: int) -> tuple[bytes, list[bytes], dict[bytes, bytes]]:
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError("no request")
        header += byte
    fields = _read_exactly(fd, int(header)).split(b"\0")
    cwd, count = fields[0], int(fields[1])
    args = fields[2 : 2 + count]
    env = dict(item.split(b"=", 1) for item in fields[2 + count :])
    return cwd, args, env


def _spawn(
    cwd: bytes, args: list[bytes], env: dict[bytes, bytes], default_signals: tuple[int, ...]
) -> int:
    """Spawn ``args`` as subprocess.Popen would (PATH of ``env``), in a new session."""
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
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, _DEV_NULL, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_OPEN, 1, _DEV_NULL, os.O_WRONLY, 0),
                        (os.POSIX_SPAWN_DUP2, 1, 2),
                    ],
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


def _write_exit(path: str, status: int, pid: int, reason: str = "") -> None:
    import json

    record: dict[str, object] = {"exit_status": status, "exited_at_ns": time.time_ns(), "pid": pid}
    if reason:
        record["reason"] = reason
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)


# try/except rather than contextlib.suppress here: importing contextlib would slow down the
# start of every sandbox.
def _kill_group(pgid: int) -> None:
    try:  # noqa: SIM105
        os.killpg(pgid, _SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _blank(fd: int, flags: int) -> None:
    """Point ``fd`` at /dev/null, so the pipe behind it is closed and the number stays taken."""
    null = os.open(_DEV_NULL, flags)
    os.dup2(null, fd)
    os.close(null)


def main(argv: list[str]) -> int:
    """Run the protocol described in the module docstring; the supervisor's exit status."""
    directory = argv[1]
    default_signals = tuple(int(signum) for signum in argv[2:])
    path = exit_file(directory, os.getpid())
    try:
        cwd, args, env = _read_request(0)
    except (EOFError, ValueError, IndexError, OSError):
        return 2
    try:
        pid = _spawn(cwd, args, env, default_signals)
    except OSError as exc:
        answer = [b"failed", str(exc.errno or 0).encode(), os.fsencode(exc.filename or "")]
        os.write(1, b"\0".join(answer))
        return 1
    answer = [b"started", str(pid).encode(), str(start_ticks(pid) or 0).encode()]
    try:  # noqa: SIM105
        os.write(1, b"\0".join(answer))
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
        _kill_group(pid)
        os.waitpid(pid, 0)
        _write_exit(
            path,
            128 + _SIGKILL,
            pid,
            "the sandboxer went away or gave up before it recorded the start; "
            "the process was killed",
        )
        return 0

    # Imported now, while the process runs, so that its exit is written down without delay.
    import json  # noqa: F401  (for _write_exit)
    import signal

    def forward(signum: int, frame: object) -> None:
        try:  # noqa: SIM105
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    # The process is reaped, but its pid stays taken while its group has members.
    _kill_group(pid)
    _write_exit(path, 128 - code if code < 0 else code, pid)
    return 0


def run() -> None:
    """Run :func:`main` on the command line and exit at once (there is nothing to flush or
    clean up, and the sandboxer hears of the exit that much sooner)."""
    os._exit(main(sys.argv))


if __name__ == "__main__":
    run()
