"""Time as the records carry it: tz-aware, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ("to_utc", "utcnow")


def utcnow() -> datetime:
    """The current time, tz-aware in UTC."""
    return datetime.now(UTC)


def to_utc(value: datetime | None) -> datetime | None:
    """``value`` as tz-aware UTC; naive datetimes are taken to be UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
