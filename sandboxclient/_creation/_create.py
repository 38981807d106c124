"""Creating a sandbox so that a failure leaves nothing behind.

A sandbox is a store record plus whatever its controller made of it. If the controller
refuses it, or the caller is cancelled or times out midway, what was made is undone: the
controller is told to shut the sandbox down and the record is deleted, as clean-up work that
runs to its end even if the caller is cancelled again, within ``ROLLBACK_TIMEOUT`` in all. A
Store.Create that got no answer is undone only if the record is provably ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from types import MappingProxyType

from .._controller import Controller
from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._facts._lifetime import enforced_limits
from .._models import Mount, RuntimeInfo, SandboxInfo
from .._plumbing._connection import CONNECTION_LOST, Connection, Timeout
from .._plumbing._options import SandboxDraft
from .._plumbing._sandbox_store import SandboxStore
from ..errors import (
    ClientClosedError,
    ContainerdError,
    DeadlineExceededError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)

__all__ = ("ROLLBACK_TIMEOUT", "create_sandbox", "may_have_landed")

ROLLBACK_TIMEOUT = 10.0
"""How long undoing a half-made sandbox may take in all, in seconds."""

_log = logging.getLogger("sandboxclient")


async def create_sandbox(
    connection: Connection,
    store: SandboxStore,
    controller: Controller,
    draft: SandboxDraft,
    timeout: Timeout,
    *,
    rootfs: Sequence[Mount] = (),
) -> SandboxInfo:
    """Store ``draft`` and have ``controller`` create it (on ``rootfs``, its root's mounts,
    when given); undo it all on failure."""
    now = utcnow()
    record = SandboxInfo(
        id=draft.id,
        runtime=RuntimeInfo(draft.runtime_name, draft.runtime_options),
        sandboxer=controller.name,
        created_at=now,
        updated_at=now,
        labels=MappingProxyType(dict(draft.labels)),
        extensions=MappingProxyType(dict(draft.extensions)),
        spec_any=draft.spec,
    )
    undo = _Undo(connection, store, controller, draft.id)
    try:
        info = await store.create(record, timeout=timeout)
    except BaseException as exc:
        if may_have_landed(exc):
            # The daemon may have written the record without our hearing back.
            await connection.run_shielded(undo.unanswered(record, now))
        raise
    try:
        await controller.create(info, rootfs=rootfs, timeout=timeout)
    except UnimplementedError as exc:
        await connection.run_shielded(undo.everything())
        if _SHIM_SANDBOX_SERVICE not in exc.message:
            raise
        raise UnimplementedError(
            f"{exc.message} (the {go_quote(controller.name)} sandboxer needs a runtime shim with a "
            "sandbox service, which runc's has not: use a sandboxer that can start "
            "sandboxes here, see Client.sandboxers(); containerd 2.1 leaves the shim it "
            f"started for this sandbox running, a containerd-shim process with '-id "
            f"{info.id}' on its command line, which only the daemon's host can kill)",
            status=exc.status,
        ) from exc
    except BaseException:
        await connection.run_shielded(undo.everything())
        raise
    if draft.limits:  # a sandboxer that does not enforce them must not look as if it did
        try:
            status = await controller.status(info.id, timeout=timeout)
            enforced_limits(info.id, status.info, draft.limits, controller.name)
        except BaseException:
            await connection.run_shielded(undo.everything())
            raise
    return info


_SHIM_SANDBOX_SERVICE = "containerd.runtime.sandbox.v1.Sandbox"


def may_have_landed(exc: BaseException) -> bool:
    """Whether a call that failed with ``exc`` may still have been carried out by the daemon."""
    if isinstance(exc, asyncio.CancelledError | DeadlineExceededError | ClientClosedError):
        return True
    # A lost connection, unlike one that was never made, may have carried the request.
    return isinstance(exc, UnavailableError) and isinstance(exc.__cause__, CONNECTION_LOST)


class _Undo:
    """The roll-back of one sandbox's creation."""

    def __init__(
        self, connection: Connection, store: SandboxStore, controller: Controller, sandbox_id: str
    ) -> None:
        self._connection = connection
        self._store = store
        self._controller = controller
        self._id = sandbox_id

    async def unanswered(self, record: SandboxInfo, sent_at: datetime) -> None:
        """Delete the record of a Store.Create that got no answer, if it is provably ours.

        The daemon stamps its own creation time, so a record made after the request was sent,
        for the same sandboxer and runtime, is ours; one that was there before (the answer
        would have been AlreadyExists) belongs to someone else and is left alone.
        """
        try:
            found = await self._store.get(self._id, timeout=ROLLBACK_TIMEOUT / 2)
        except NotFoundError:
            return
        except ContainerdError as exc:
            _log.warning("could not check sandbox %s for roll-back: %s", self._id, exc)
            return
        if (
            found.created_at is None
            or found.created_at < sent_at
            or found.sandboxer != record.sandboxer
            or found.runtime.name != record.runtime.name
        ):
            return
        await self._delete_record(ROLLBACK_TIMEOUT / 2)

    async def everything(self) -> None:
        """Undo what the controller made, then the record, each step with its share of time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROLLBACK_TIMEOUT
        try:
            await self._controller.shutdown(self._id, timeout=ROLLBACK_TIMEOUT / 2)
        except NotFoundError:
            pass
        except ContainerdError as exc:
            _log.warning("rolling back sandbox %s: %s", self._id, exc)
        # A slow first step cannot starve the record's deletion.
        await self._delete_record(max(deadline - loop.time(), 0.05))

    async def _delete_record(self, timeout: float) -> None:
        try:
            await self._store.delete(self._id, timeout=timeout)
        except NotFoundError:
            pass
        except ContainerdError as exc:
            _log.warning("rolling back sandbox %s: %s", self._id, exc)
