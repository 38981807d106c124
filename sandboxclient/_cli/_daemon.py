"""``sandboxctl version``, ``sandboxers`` and ``events``: what the daemon says of itself."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from .._client import Client
from .._models import AnyValue, Mount
from ..events import Event, EventsLagged, EventsReconnected
from ._base import PROG, Outcome
from ._render import any_json, iso, printable, table

__all__ = ("cmd_events", "cmd_handlers", "cmd_sandboxers", "cmd_version", "event_json")


async def cmd_version(client: Client) -> Outcome:
    """The daemon's version and revision."""
    got = await client.version()
    data = {"version": got.version, "revision": got.revision}
    return Outcome(
        data,
        printable(f"containerd {got.version}" + (f" ({got.revision})" if got.revision else "")),
    )


async def cmd_sandboxers(client: Client) -> Outcome:
    """The sandbox controllers the daemon has."""
    found = await client.sandboxers()
    rows = [(s.name, s.type, "ok" if s.ready else "error", s.error or "-") for s in found]
    data = [
        {
            "name": s.name,
            "type": s.type,
            "ready": s.ready,
            "error": s.error,
            "platforms": [dataclasses.asdict(p) for p in s.platforms],
        }
        for s in found
    ]
    return Outcome(data, table(("NAME", "TYPE", "STATUS", "ERROR"), rows))


async def cmd_handlers(client: Client) -> Outcome:
    """The runtime handlers the client's sandboxer offers (asked of the sandboxer)."""
    found = await client.runtime_handlers()
    rows = [(h.name, h.kind, h.path or "(the shim's runc)", h.version or "-") for h in found]
    data = [dataclasses.asdict(h) for h in found]
    return Outcome(data, table(("NAME", "KIND", "PATH", "VERSION"), rows))


def _plain(value: Any) -> Any:
    if isinstance(value, AnyValue):
        return any_json(value)
    if isinstance(value, Mount):
        return dataclasses.asdict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "items"):
        return dict(value)
    return value


def event_json(item: Event | EventsLagged | EventsReconnected) -> dict[str, Any]:
    """One event (or marker) as a JSON object."""
    if isinstance(item, EventsLagged):
        return {"lagged": item.dropped}
    if isinstance(item, EventsReconnected):
        return {"reconnected": iso(item.at)}
    payload = item.payload
    return {
        "topic": item.topic,
        "namespace": item.namespace,
        "timestamp": iso(item.timestamp),
        "type": "any" if isinstance(payload, AnyValue) else type(payload).__name__,
        "event": _plain(payload),
    }


def _event_text(item: Event | EventsLagged | EventsReconnected) -> str:
    if isinstance(item, EventsLagged):
        return f"-- {item.dropped} events dropped: this reader fell behind"
    if isinstance(item, EventsReconnected):
        return f"-- reconnected at {iso(item.at)}: events may be missing"
    fields = _plain(item.payload)
    text = " ".join(f"{k}={_shown(v)}" for k, v in fields.items() if v not in ("", None, 0, [], {}))
    when = iso(item.timestamp) or "-"
    return f"{when} {printable(item.namespace)} {printable(item.topic)} {text}".rstrip()


def _shown(value: Any) -> str:
    # The daemon's strings may hold escape sequences; a container's repr escapes what is
    # not printable in its strings already.
    if isinstance(value, dict | list):
        return repr(value)
    return printable(str(value))


async def cmd_events(
    client: Client,
    filters: Sequence[str] = (),
    *,
    as_json: bool = False,
    all_namespaces: bool = False,
) -> Outcome:
    """Print events as they come (one line or JSON object each) until interrupted."""
    async with client.events(*filters, all_namespaces=all_namespaces) as events:
        print(f"{PROG}: listening for events (Ctrl-C to stop)", file=sys.stderr, flush=True)
        async for item in events:
            line = json.dumps(event_json(item), sort_keys=True) if as_json else _event_text(item)
            print(line, flush=True)
    return Outcome(None, "")
