"""The one mapping from gRPC and transport failures to the errors tree."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from sandboxclient import Client, errors
from sandboxclient._wire._errdefs import map_error, raise_mapped

GRPC_TABLE = [
    (Status.NOT_FOUND, 'bucket "nope" not found: not found', errors.NotFoundError),
    (
        Status.ALREADY_EXISTS,
        'write error: sandbox bucket "dup1" already exists: already exists',
        errors.AlreadyExistsError,
    ),
    (Status.INVALID_ARGUMENT, "invalid sandbox ID: invalid argument", errors.InvalidArgumentError),
    (
        Status.FAILED_PRECONDITION,
        "namespace is required: failed precondition",
        errors.FailedPreconditionError,
    ),
    (Status.FAILED_PRECONDITION, "update failed: conflict", errors.ConflictError),
    (Status.FAILED_PRECONDITION, "image: not modified", errors.NotModifiedError),
    (Status.UNAVAILABLE, "connection refused", errors.UnavailableError),
    (Status.DEADLINE_EXCEEDED, "deadline", errors.DeadlineExceededError),
    (
        Status.UNIMPLEMENTED,
        "service containerd.runtime.sandbox.v1.Sandbox",
        errors.UnimplementedError,
    ),
    (Status.CANCELLED, "cancelled", errors.CanceledError),
    (Status.PERMISSION_DENIED, "denied", errors.PermissionDeniedError),
    (Status.UNAUTHENTICATED, "who", errors.UnauthenticatedError),
    (Status.RESOURCE_EXHAUSTED, "full", errors.ResourceExhaustedError),
    (Status.ABORTED, "aborted", errors.AbortedError),
    (Status.OUT_OF_RANGE, "range", errors.OutOfRangeError),
    (Status.DATA_LOSS, "lost", errors.DataLossError),
    (Status.INTERNAL, "boom", errors.InternalError),
    (Status.UNKNOWN, "what", errors.UnknownError),
]


@pytest.mark.parametrize(("status", "message", "expected"), GRPC_TABLE)
def test_grpc_status_maps_to_class_and_keeps_message(
    status: Status, message: str, expected: type[errors.ContainerdError]
) -> None:
    original = GRPCError(status, message)
    with pytest.raises(expected) as info:
        raise_mapped(original)
    assert type(info.value) is expected
    assert info.value.message == message
    assert str(info.value) == message
    assert info.value.status is status
    assert info.value.__cause__ is original


def test_every_grpc_status_but_ok_has_a_class() -> None:
    for status in Status:
        if status is Status.OK:
            continue
        mapped = map_error(GRPCError(status, "x"))
        assert isinstance(mapped, errors.ContainerdError)
        assert mapped.status is status


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.NotFoundError, LookupError),
        (errors.DeadlineExceededError, TimeoutError),
        (errors.InvalidArgumentError, ValueError),
        (errors.UnavailableError, ConnectionError),
        (errors.UnimplementedError, NotImplementedError),
        (errors.ClientClosedError, RuntimeError),
        (errors.ConflictError, errors.FailedPreconditionError),
        (errors.NotModifiedError, errors.FailedPreconditionError),
    ],
)
def test_classes_are_also_the_builtin_they_mean(cls: type[Exception], builtin: type) -> None:
    assert issubclass(cls, builtin)
    assert issubclass(cls, errors.ContainerdError)


@pytest.mark.parametrize(
    ("exc", "expected", "fragment"),
    [
        (StreamTerminatedError("reset"), errors.UnavailableError, "lost"),
        (TimeoutError(), errors.DeadlineExceededError, "deadline"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), errors.UnavailableError, "/x.sock"),
    ],
)
def test_transport_failures_map(
    exc: BaseException, expected: type[errors.ContainerdError], fragment: str
) -> None:
    with pytest.raises(expected) as info:
        raise_mapped(exc, address="/x.sock")
    assert fragment in str(info.value)
    assert info.value.__cause__ is exc
    assert info.value.status is expected.status


def _plain_file(tmp: Path) -> str:
    path = tmp / "file.sock"
    path.write_text("")
    return str(path)


def _dead_socket(tmp: Path) -> str:
    path = str(tmp / "dead.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)
    return path


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make_path", "fragment"),
    [
        (lambda tmp: str(tmp / "missing.sock"), "no socket at"),
        (_plain_file, "is not a socket"),
        (_dead_socket, "connection refused"),
    ],
)
async def test_unreachable_socket_fails_at_once_naming_the_path(
    tmp_path: Path, make_path: Callable[[Path], str], fragment: str
) -> None:
    path = make_path(tmp_path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with Client(path, timeout=30) as client:
        with pytest.raises(errors.UnavailableError) as info:
            await client.list_sandboxes()
    assert fragment in str(info.value)
    assert path in str(info.value)
    assert loop.time() - started < 2


def test_unrelated_exceptions_pass_through() -> None:
    original = KeyError("k")
    assert map_error(original) is None
    with pytest.raises(KeyError) as info:
        raise_mapped(original)
    assert info.value is original


def test_tree_is_drawn_in_the_module_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        if name.endswith("Error"):
            assert name in doc, name
