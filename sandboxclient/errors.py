"""Errors raised by sandboxclient.

The rule for a bad argument: what the client refuses before it makes any call is Python's own
``ValueError`` (a malformed or empty id, namespace or label, an empty ``sandboxer``, a
``rootfs`` that is no directory, a stop grace containerd cannot carry...) or ``TypeError`` (a
value of the wrong type, an unknown keyword), raised at once with nothing sent; what the daemon
refuses is a :class:`ContainerdError`. :class:`InvalidArgumentError` is the daemon's refusal
(a filter or a field path it cannot parse, say) and also a ``ValueError``, so
``except ValueError`` catches a bad argument whichever side found it. An image in containerd's
store that the client cannot use (no config, no layers, content that is not JSON) is an
``InvalidArgumentError`` too: what is refused is what the daemon holds, not an argument.

Every failure of a call to containerd surfaces as one class of this tree, chosen from the gRPC
status the daemon sent (containerd's ``errdefs`` mapping) or from what went wrong on the way::

    ContainerdError
     ├── NotFoundError                (also LookupError)
     │    └── PathNotFoundError       (also FileNotFoundError: a sandbox's path)
     ├── AlreadyExistsError
     │    └── PathExistsError         (also FileExistsError)
     ├── InvalidArgumentError         (also ValueError)
     ├── FailedPreconditionError
     │    ├── ConflictError
     │    ├── NotModifiedError
     │    ├── IsADirectoryPathError   (also IsADirectoryError)
     │    ├── NotADirectoryPathError  (also NotADirectoryError)
     │    ├── FileOperationError      (a file operation in a sandbox failed otherwise)
     │    └── MissingToolError        (the sandbox lacks sh, tar or another tool needed)
     ├── UnavailableError             (also ConnectionError: daemon down or socket missing)
     ├── DeadlineExceededError        (also TimeoutError)
     │    └── CommandTimeoutError     (run()'s command did not end within its timeout)
     ├── UnimplementedError           (also NotImplementedError)
     ├── CanceledError
     ├── PermissionDeniedError
     │    └── PathPermissionError     (also PermissionError)
     ├── UnauthenticatedError
     ├── ResourceExhaustedError
     ├── AbortedError
     ├── OutOfRangeError
     ├── DataLossError
     ├── InternalError
     │    └── UnsafeArchiveError      (a download's archive would escape or is malformed)
     ├── UnknownError
     └── ClientClosedError            (also RuntimeError: the Client was closed)

One failure is no call's: :class:`WarmUpError` (a ``RuntimeError``), a pool's ``warm_up``
command that exited non-zero in a new sandbox, which was shut down.

The daemon's message is kept as ``message`` and in ``str(error)``; the original exception is
chained as ``__cause__``.

A deadline the caller gave to a whole piece of work, not to one call, is the work's own: a
``run()`` whose command did not end in time raises :class:`CommandTimeoutError`, whose message
names the command and the cause (it did not exit, or it exited but a process it left behind
held its output open), never the daemon.

A broken or hostile peer's answer gets the class containerd's own Go client (grpc-go) would
report for it, never another exception:

- ``ResourceExhaustedError``: a message whose length prefix says more than the Client's
  ``max_message_size`` (16 MiB by default), refused before any of it is read (the message
  names the size and the limit); a stream reset with ENHANCE_YOUR_CALM or FLOW_CONTROL_ERROR.
- ``InternalError``: a message that does not decode (a wrong wire type, a length past the
  end, invalid UTF-8, a time out of range), one cut short by the end of the stream, the
  compressed flag or an unknown one, a unary answer with no message or with bytes after it,
  a stream that ends without trailers, headers that do not parse (no ``:status``, bad
  binary metadata, a ``grpc-status`` that is no number), a stream reset with another code.
- ``CanceledError``: a stream reset with CANCEL.
- ``UnavailableError``: the connection closed (mid-message too), a stream reset with
  REFUSED_STREAM, HTTP 429/502/503/504, garbage below HTTP/2 (the connection is closed), and
  a peer gone silent: with a call in flight and nothing from it for ``keepalive_time`` (10 s)
  the connection sends a PING and, when nothing answers within ``keepalive_timeout``
  (10 s), closes; its calls fail, even those without a deadline.
- ``UnsafeArchiveError`` (an ``InternalError``): an archive a sandbox sent for a download
  that holds an absolute or ``..`` path, a link out of the destination, a device node, or that
  is not a tar archive; ``ResourceExhaustedError``: one past the download's size or entry
  bound, or a read past its ``max_bytes``.
- ``UnknownError``: a status outside gRPC's table, no ``grpc-status``, an HTTP 200 whose
  content-type is not gRPC.
"""

from __future__ import annotations

from grpclib.const import Status

__all__ = (
    "AbortedError",
    "AlreadyExistsError",
    "CanceledError",
    "ClientClosedError",
    "CommandTimeoutError",
    "ConflictError",
    "ContainerdError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FileOperationError",
    "InternalError",
    "InvalidArgumentError",
    "IsADirectoryPathError",
    "MissingToolError",
    "NotADirectoryPathError",
    "NotFoundError",
    "NotModifiedError",
    "OutOfRangeError",
    "PathExistsError",
    "PathNotFoundError",
    "PathPermissionError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "UnsafeArchiveError",
    "WarmUpError",
)


class ContainerdError(Exception):
    """Base of every error this library raises for a failed call.

    ``status`` is the gRPC status this error stands for: the one the daemon answered with, or
    the class's own when the failure happened before any answer (a missing socket, a dropped
    connection, a client-side deadline).
    """

    status: Status | None = Status.UNKNOWN

    def __init__(self, message: str, *, status: Status | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class NotFoundError(ContainerdError, LookupError):
    """The sandbox, container, namespace or controller does not exist."""

    status = Status.NOT_FOUND


class AlreadyExistsError(ContainerdError):
    """Something with that id exists already."""

    status = Status.ALREADY_EXISTS


class InvalidArgumentError(ContainerdError, ValueError):
    """The daemon rejected the request as malformed: a filter, field path or value it refuses.

    What the client refuses before calling is a plain ``ValueError`` (see the module's rule).
    """

    status = Status.INVALID_ARGUMENT


class FailedPreconditionError(ContainerdError):
    """The system is not in a state that allows the operation."""

    status = Status.FAILED_PRECONDITION


class ConflictError(FailedPreconditionError):
    """The operation conflicts with the current state (containerd's ``ErrConflict``)."""


class NotModifiedError(FailedPreconditionError):
    """Nothing was changed (containerd's ``ErrNotModified``)."""


class UnavailableError(ContainerdError, ConnectionError):
    """The daemon or the sandbox controller could not be reached."""

    status = Status.UNAVAILABLE


class DeadlineExceededError(ContainerdError, TimeoutError):
    """The call did not finish before its deadline."""

    status = Status.DEADLINE_EXCEEDED


class CommandTimeoutError(DeadlineExceededError):
    """A command given to ``run()`` did not end within its ``timeout``; it was killed.

    As ``subprocess.TimeoutExpired``, it carries what is known: ``command`` (the args),
    ``timeout`` (seconds), and ``stdout`` and ``stderr``, what the command wrote before the
    deadline (each kept up to ``run()``'s ``max_output``). ``returncode`` is None when the
    command had not exited; an int when it had exited but its output stayed open, held by a
    process it left running in the background (``sh -c "daemon &"``): ``run()`` reads the
    output to its end, as ``communicate()`` does, so such a child must be detached from it.
    """

    def __init__(
        self,
        message: str,
        *,
        command: tuple[str, ...] = (),
        timeout: float | None = None,
        returncode: int | None = None,
        stdout: bytes = b"",
        stderr: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.command = command
        self.timeout = timeout
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class UnimplementedError(ContainerdError, NotImplementedError):
    """The daemon or the sandbox controller does not implement the call."""

    status = Status.UNIMPLEMENTED


class CanceledError(ContainerdError):
    """The call was cancelled by the server."""

    status = Status.CANCELLED


class PermissionDeniedError(ContainerdError):
    """The caller may not do this."""

    status = Status.PERMISSION_DENIED


class UnauthenticatedError(ContainerdError):
    """The caller is not authenticated."""

    status = Status.UNAUTHENTICATED


class ResourceExhaustedError(ContainerdError):
    """A quota or a limit was hit."""

    status = Status.RESOURCE_EXHAUSTED


class AbortedError(ContainerdError):
    """The operation was aborted, typically by a concurrent change."""

    status = Status.ABORTED


class OutOfRangeError(ContainerdError):
    """A value was outside its valid range."""

    status = Status.OUT_OF_RANGE


class DataLossError(ContainerdError):
    """Unrecoverable data loss or corruption."""

    status = Status.DATA_LOSS


class InternalError(ContainerdError):
    """The daemon reported an internal error."""

    status = Status.INTERNAL


class UnknownError(ContainerdError):
    """An error containerd did not classify."""

    status = Status.UNKNOWN


class ClientClosedError(ContainerdError, RuntimeError):
    """The Client was closed: no call can be made and pending waits were ended."""

    status = None


class WarmUpError(RuntimeError):
    """A :class:`~sandboxclient.SandboxPool`'s ``warm_up`` command exited non-zero in a new
    sandbox, which was shut down rather than offered. It carries ``command`` (the args),
    ``returncode``, ``sandbox_id``, and ``stdout`` and ``stderr`` (what was kept of each:
    the first few KiB)."""

    def __init__(
        self,
        message: str,
        *,
        command: tuple[str, ...],
        returncode: int,
        sandbox_id: str,
        stdout: bytes = b"",
        stderr: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.sandbox_id = sandbox_id
        self.stdout = stdout
        self.stderr = stderr


# -- files in a sandbox (``sb.files``) ----------------------------------------------------------


class PathNotFoundError(NotFoundError, FileNotFoundError):
    """A path in the sandbox does not exist (or a component of it is not a directory);
    ``path`` names it."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class PathExistsError(AlreadyExistsError, FileExistsError):
    """A path in the sandbox exists where the operation needs none; ``path`` names it."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class IsADirectoryPathError(FailedPreconditionError, IsADirectoryError):
    """A path in the sandbox is a directory where a file is expected; ``path`` names it."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class NotADirectoryPathError(FailedPreconditionError, NotADirectoryError):
    """A path in the sandbox is not a directory where one is expected; ``path`` names it."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class PathPermissionError(PermissionDeniedError, PermissionError):
    """The sandbox's user (or the ``user=`` given) may not do this to the path (or its file
    system is read-only); ``path`` names it."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class FileOperationError(FailedPreconditionError):
    """A file operation in a sandbox failed for a reason none of the other classes names;
    the message carries the command's exit code and the start of what it wrote to stderr."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class MissingToolError(FailedPreconditionError):
    """The sandbox lacks a program a file operation runs in it (``sh``, ``tar``, ...):
    ``tool`` names it."""

    def __init__(self, message: str, *, tool: str = "") -> None:
        super().__init__(message)
        self.tool = tool


class UnsafeArchiveError(InternalError):
    """A download's archive, made in the sandbox, was refused before anything of it was kept:
    ``member`` names the entry (an absolute or ``..`` path, a link out of the destination, a
    device node...), or is "" when the stream is no tar archive at all."""

    def __init__(self, message: str, *, member: str = "") -> None:
        super().__init__(message)
        self.member = member
