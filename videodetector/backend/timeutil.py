"""Timestamps: ISO 8601 in, naive-UTC ISO 8601 out (as in the reference's examples)."""

from __future__ import annotations

from datetime import UTC, datetime

from videodetector.backend.errors import bad_param


def parse_time(name: str, value: object) -> datetime:
    """An aware UTC datetime from ISO 8601 text (a naive time is taken as UTC) or epoch secs,
    in years 1..9999 once converted to UTC; BAD_PARAM naming ``name`` otherwise."""
    try:
        return _parse_time(name, value)
    except (ValueError, OverflowError, OSError):
        raise bad_param(name, f"{name} must be an ISO 8601 timestamp (e.g. "
                        "2016-06-13T11:06:42.075754) or epoch seconds within years 1..9999",
                        value) from None


def _parse_time(name: str, value: object) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise ValueError(value)
    text = value.strip()
    if " " in text and "T" not in text:
        text = text.replace(" ", "T", 1)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    dt.timestamp()  # raises OverflowError near the ends of the range
    return dt


def iso(dt: datetime) -> str:
    """``2016-06-13T11:06:42.075754`` (UTC, no offset)."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def now() -> datetime:
    return datetime.now(UTC)
