"""The client's own leases: one made to keep what a step writes (a snapshot being prepared,
a transfer's streams and content) from containerd's collector until the step is done, and
deleted then. Each expires (``containerd.io/gc.expire``), so one a dead client could not
delete goes by itself."""

from __future__ import annotations

import contextlib
import secrets
from datetime import timedelta

from .._facts._clock import utcnow
from .._plumbing._connection import Connection, Timeout
from .._wire._pb import leases_pb
from ..errors import ContainerdError

__all__ = ("delete_lease", "expiring_lease")


async def expiring_lease(
    connection: Connection, prefix: str, expiry: timedelta, timeout: Timeout
) -> str:
    """A new lease, named ``prefix-<random>``, that expires after ``expiry``: its id."""
    expires = (utcnow() + expiry).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = await connection.call(
        connection.stub(leases_pb.LeasesStub).create,
        leases_pb.CreateRequest(
            id=f"{prefix}-{secrets.token_hex(8)}",
            labels={"containerd.io/gc.expire": expires},
        ),
        timeout,
    )
    assert answer.lease is not None
    return answer.lease.id


async def delete_lease(connection: Connection, lease: str) -> None:
    """Delete ``lease``; a failure is let be (an expiring lease goes by itself)."""
    with contextlib.suppress(ContainerdError):
        await connection.call(
            connection.stub(leases_pb.LeasesStub).delete,
            leases_pb.DeleteRequest(id=lease),
            10.0,
        )
