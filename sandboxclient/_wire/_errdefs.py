"""containerd's errdefs over gRPC, the client's half: :func:`map_error` turns a gRPC status,
or a transport failure below it, into one class of :mod:`sandboxclient.errors`;
:func:`raise_mapped` raises it chained from the original.

The servers' half, the ``GRPCError`` containerd answers with, is ``_serve/_refusals``.
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

__all__ = ("map_error", "raise_mapped")

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
