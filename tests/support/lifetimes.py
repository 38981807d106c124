"""Waiting for a sandbox that ends on its own: its exit event, then its record's deletion."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sandboxclient import Client, EventStream, NotFoundError
from sandboxclient._facts._clock import utcnow
from sandboxclient.events import Event, SandboxExit

__all__ = ("GONE_WITHIN", "exit_of", "record_gone")

GONE_WITHIN = 5.0
"""Seconds after its deadline by which a sandbox is gone, record included (documented in
``docs/sandboxer.md``)."""


async def exit_of(events: EventStream, sandbox_id: str) -> tuple[SandboxExit, datetime]:
    """The ``/sandboxes/exit`` event of ``sandbox_id`` on ``events``, and when it came."""
    async for item in events:
        payload = item.payload if isinstance(item, Event) else None
        if isinstance(payload, SandboxExit) and payload.sandbox_id == sandbox_id:
            return payload, utcnow()
    raise AssertionError("the event stream ended")


async def record_gone(client: Client, sandbox_id: str, timeout: float = GONE_WITHIN) -> None:
    """Return once the store no longer has the sandbox's record.

    Its deletion is the ending's last step and publishes no event: it comes a call or two
    after the exit event (or the container's deletion), so a short bounded look suffices.
    """
    async with asyncio.timeout(timeout):
        while True:
            try:
                await client.get_sandbox(sandbox_id)
            except NotFoundError:
                return
            await asyncio.sleep(0.05)
