"""The ``GRPCError``s containerd answers a call with, for the sandboxer and the stand-in.

containerd's errdefs end the message with the error class, which is how clients that go
through containerd's own error mapping recover the class on their side; each builder here
adds that suffix. :func:`to_grpc` turns a library error back into the status it stands for.
The client's half of the mapping, a status to the errors tree, is ``_wire/_errdefs``.
"""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from ..errors import ContainerdError

__all__ = (
    "already_exists",
    "failed_precondition",
    "invalid_argument",
    "must_be_set",
    "not_found",
    "to_grpc",
    "unavailable",
)


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
