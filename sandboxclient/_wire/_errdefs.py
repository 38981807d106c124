"""containerd's errdefs over gRPC, both ways: one place for the whole project.

- Client side: :func:`map_error` turns a gRPC status, or a transport failure below it, into
  one class of :mod:`sandboxclient.errors`; :func:`raise_mapped` raises it chained from the
  original.
- Server side (the sandboxer and the stand-in): :func:`invalid_argument`, :func:`not_found`
  and the others build the ``GRPCError`` containerd would answer, message suffix included,
  and :func:`to_grpc` turns a library error back into the status it stands for.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import stat
from typing import NoReturn

from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from ..errors import (
    AbortedError,
    AlreadyExistsError,
    CanceledError,
    ConflictError,
    ContainerdError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    NotModifiedError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from ._grpcframe import StreamResetError, library_wire_error
from ._protowire import DecodeError

__all__ = (
    "already_exists",
    "failed_precondition",
    "go_quote",
    "invalid_argument",
    "map_error",
    "must_be_set",
    "not_found",
    "raise_mapped",
    "to_grpc",
    "unavailable",
)

_BY_STATUS: dict[Status, type[ContainerdError]] = {
    Status.NOT_FOUND: NotFoundError,
    Status.ALREADY_EXISTS: AlreadyExistsError,
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.FAILED_PRECONDITION: FailedPreconditionError,
    Status.UNAVAILABLE: UnavailableError,
    Status.DEADLINE_EXCEEDED: DeadlineExceededError,
    Status.UNIMPLEMENTED: UnimplementedError,
    Status.CANCELLED: CanceledError,
    Status.PERMISSION_DENIED: PermissionDeniedError,
    Status.UNAUTHENTICATED: UnauthenticatedError,
    Status.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    Status.ABORTED: AbortedError,
    Status.OUT_OF_RANGE: OutOfRangeError,
    Status.DATA_LOSS: DataLossError,
    Status.INTERNAL: InternalError,
    Status.UNKNOWN: UnknownError,
}

# grpc-go's table for a stream the peer reset (RST_STREAM's code to the call's status);
# the codes it does not name are INTERNAL.
_BY_RESET_CODE: dict[int, type[ContainerdError]] = {
    0x3: ResourceExhaustedError,  # FLOW_CONTROL_ERROR
    0x7: UnavailableError,  # REFUSED_STREAM: not processed, safe to retry
    0x8: CanceledError,  # CANCEL
    0xB: ResourceExhaustedError,  # ENHANCE_YOUR_CALM
    0xC: PermissionDeniedError,  # INADEQUATE_SECURITY
}

_CONNECT_ERRNOS = frozenset(
    {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)


# -- client side: gRPC and transport failures to the errors tree --------------------------------


def map_error(exc: BaseException, *, address: str | None = None) -> ContainerdError | None:
    """The library error for ``exc``, or None when ``exc`` is not a call failure.

    This is the one place where transport and gRPC failures become the ``errors`` tree.
    """
    if isinstance(exc, ContainerdError):
        return exc
    where = f" at {address}" if address else ""
    if isinstance(exc, GRPCError):
        message = exc.message or exc.status.name.lower().replace("_", " ")
        cls = _BY_STATUS.get(exc.status, UnknownError)
        if cls is FailedPreconditionError:
            if message.endswith("conflict"):
                cls = ConflictError
            elif message.endswith("not modified"):
                cls = NotModifiedError
        return cls(message, status=exc.status)
    if isinstance(exc, DecodeError):
        # What grpc-go, under containerd's own client, answers for an undecodable message.
        return InternalError(f"cannot decode the answer of containerd{where}: {exc}")
    if library_wire_error(exc):
        # Only without the framing hooks: grpclib's own reader on a malformed answer.
        return InternalError(f"malformed answer from containerd{where}: {exc!r}")
    if isinstance(exc, asyncio.TimeoutError):
        return DeadlineExceededError(f"deadline exceeded waiting for containerd{where}")
    if isinstance(exc, StreamResetError):
        cls = _BY_RESET_CODE.get(exc.error_code, InternalError)
        return cls(f"call to containerd{where} ended: {exc}")
    if isinstance(exc, StreamTerminatedError | ProtocolError):
        return UnavailableError(f"connection to containerd{where} lost: {exc}")
    if isinstance(exc, OSError) and exc.errno in _CONNECT_ERRNOS:
        return UnavailableError(f"cannot connect to containerd: {_socket_problem(address, exc)}")
    if isinstance(exc, ConnectionError | ssl.SSLError | EOFError | OSError):
        return UnavailableError(f"connection to containerd{where} failed: {exc}")
    return None


def raise_mapped(exc: BaseException, *, address: str | None = None) -> NoReturn:
    """Raise the library error for ``exc`` chained from it, or ``exc`` itself if it has none."""
    mapped = map_error(exc, address=address)
    if mapped is None or mapped is exc:
        raise exc
    raise mapped from exc


def _socket_problem(address: str | None, exc: OSError) -> str:
    """Say, naming the path, why a unix socket could not be connected to."""
    if not address:
        return exc.strerror or str(exc)
    try:
        mode = os.stat(address).st_mode
    except FileNotFoundError:
        return f"no socket at {address}"
    except OSError as err:
        return f"cannot reach {address}: {err.strerror}"
    if not stat.S_ISSOCK(mode):
        return f"{address} is not a socket"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {address}"
    if exc.errno == errno.ECONNREFUSED:
        return f"connection refused at {address} (is containerd running?)"
    return f"{address}: {exc.strerror or exc}"


# -- server side: the answers containerd gives ------------------------------------------------
#
# containerd's errdefs end the message with the error class, which is how clients that go
# through containerd's own error mapping recover the class on their side.


def invalid_argument(message: str) -> GRPCError:
    """INVALID_ARGUMENT with containerd's ``: invalid argument`` suffix."""
    return GRPCError(Status.INVALID_ARGUMENT, f"{message}: invalid argument")


def not_found(message: str) -> GRPCError:
    """NOT_FOUND with containerd's ``: not found`` suffix."""
    return GRPCError(Status.NOT_FOUND, f"{message}: not found")


def already_exists(message: str) -> GRPCError:
    """ALREADY_EXISTS with containerd's ``: already exists`` suffix."""
    return GRPCError(Status.ALREADY_EXISTS, f"{message}: already exists")


def failed_precondition(message: str) -> GRPCError:
    """FAILED_PRECONDITION with containerd's ``: failed precondition`` suffix."""
    return GRPCError(Status.FAILED_PRECONDITION, f"{message}: failed precondition")


def unavailable(message: str) -> GRPCError:
    """UNAVAILABLE with containerd's ``: unavailable`` suffix."""
    return GRPCError(Status.UNAVAILABLE, f"{message}: unavailable")


def must_be_set(field: str) -> GRPCError:
    """The refusal of a request that leaves a required message unset (``sandbox``, ...)."""
    return invalid_argument(f"{field} must be set")


def to_grpc(exc: ContainerdError) -> GRPCError:
    """The status a library error stands for, with its message, to answer a caller with."""
    status = exc.status if exc.status is not None else Status.UNAVAILABLE
    return GRPCError(status, exc.message)


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_quote(value: str) -> str:
    """``value`` in double quotes, as Go's ``%q`` writes it in containerd's messages.

    Printable characters stay as they are (Go's ``unicode.IsPrint`` and Python's
    ``str.isprintable`` draw the same line); the others are escaped as Go escapes them.
    """
    out = ['"']
    for ch in value:
        escaped = _GO_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch.isprintable():
            out.append(ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)
