"""How ``sandboxctl`` shows records: JSON documents and aligned text."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .._models import AnyValue, SandboxInfo, SandboxStatus, StartResult

__all__ = (
    "any_json",
    "exit_code",
    "fields_text",
    "info_json",
    "iso",
    "labels_text",
    "printable",
    "start_json",
    "status_json",
    "table",
    "when",
)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601, or None."""
    return None if moment is None else moment.isoformat()


def when(moment: datetime | None) -> str:
    """A table cell for a time: UTC to the second, or ``-``."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def any_json(value: AnyValue | None) -> dict[str, str] | None:
    """A payload as JSON: its type URL and its bytes in base64."""
    if value is None:
        return None
    return {"type_url": value.type_url, "value": base64.b64encode(value.value).decode()}


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` safe to put on a terminal: what is not printable (control characters, the
    escape of an escape sequence, bidirectional overrides) as a backslash escape, and a
    backslash doubled, so that what is shown reads back unambiguously."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped(char) for char in text)


def labels_text(labels: Mapping[str, str]) -> str:
    """``k=v,k2=v2`` sorted by key, or ``-``."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, separated by three spaces; each cell
    :func:`printable`, as a daemon's strings may carry anything."""
    all_rows = [list(headers), *([printable(cell) for cell in r] for r in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in all_rows
    )


def fields_text(pairs: Iterable[tuple[str, str]], *, raw: Collection[str] = ()) -> str:
    """``NAME:  value`` lines with the values aligned, each :func:`printable` but for the
    fields named in ``raw`` (made safe already, JSON say)."""
    items = list(pairs)
    width = max(len(name) for name, _ in items) + 1
    return "\n".join(
        f"{name + ':':<{width}}  {value if name in raw else printable(value)}"
        for name, value in items
    )


def info_json(info: SandboxInfo) -> dict[str, Any]:
    """A sandbox record as JSON."""
    return {
        "id": info.id,
        "sandboxer": info.sandboxer,
        "runtime": {"name": info.runtime.name, "options": any_json(info.runtime.options)},
        "labels": dict(info.labels),
        "deadline": iso(info.deadline),
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "spec": None if info.spec is None else json.loads(json.dumps(dict(info.spec))),
        "spec_any": any_json(info.spec_any) if info.spec is None else None,
        "extensions": {k: any_json(v) for k, v in info.extensions.items()},
    }


def start_json(sandbox_id: str, started: StartResult) -> dict[str, Any]:
    """What a start reported, as JSON."""
    return {
        "id": sandbox_id,
        "pid": started.pid,
        "address": started.address,
        "version": started.version,
        "created_at": iso(started.created_at),
        "labels": dict(started.labels),
    }


def status_json(status: SandboxStatus) -> dict[str, Any]:
    """A sandbox's status as JSON."""
    return {
        "id": status.id,
        "state": str(status.state),
        "pid": status.pid,
        "created_at": iso(status.created_at),
        "exited_at": iso(status.exited_at),
        "address": status.address,
        "version": status.version,
        "info": dict(status.info),
        "extra": any_json(status.extra),
    }


def exit_code(code: int) -> int:
    """A sandbox's exit code as a process exit status (0-255)."""
    return code if 0 <= code <= 255 else 255
