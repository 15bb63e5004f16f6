"""Parse and validate query parameters into domain values, or raise :class:`InvalidQuery`.

Why not Litestar's type coercion alone: its messages say "expected int" but not what range or
format we accept. Pure functions, so every rule is unit-tested without a server.

Timestamps are ISO-8601 (``2026-03-02T15:00:00Z``, ``+00:00`` offsets; a value without an offset
is taken as UTC) or integer epoch milliseconds. A well-formed timestamp outside what the stores can
hold (ClickHouse ``DateTime64``: 1900-01-01 .. 2299-12-31) is clamped to that range instead of
reaching a driver: "from the year 1" means "from the beginning" and can match no other row.
Symbols are upper-cased and must look like a ticker (``AAPL``, ``BRK.B``, ``BTC/USD``).

The ``*_PATTERN`` constants are the same rules as regular expressions for the OpenAPI document
(:mod:`api.query`), so a client and a fuzzer see what the parser accepts.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from api.errors import InvalidQuery

__all__ = [
    "SYMBOL_PATTERN",
    "TIMESTAMP_PATTERN",
    "TS_MAX",
    "TS_MIN",
    "limit",
    "optional_symbol",
    "since",
    "symbol",
    "time_range",
    "timestamp",
    "window",
]

SYMBOL_PATTERN = r"^[A-Za-z][A-Za-z0-9.\-/]{0,15}$"
TIMESTAMP_PATTERN = (
    r"^(-?[0-9]{1,16}"
    r"|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,6})?)?"
    r"([Zz]|[+ -]([01][0-9]|2[0-3]):?[0-5][0-9])?)?)$"
)
TS_MIN = datetime(1900, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
_MARGIN = timedelta(days=2)
"""Offsets are under a day, so a local time this far inside the range converts without overflow."""

_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-/]{0,15}$")
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_EPOCH_MS = re.compile(r"^-?\d{1,16}$")
_PLUS_AS_SPACE = re.compile(r"([Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")
"""An unencoded ``+01:00`` offset arrives as a space in a query string."""


def symbol(raw: str | None) -> str:
    """The upper-cased ticker; required."""
    if raw is None or not raw.strip():
        raise InvalidQuery("symbol", "is required, e.g. ?symbol=AAPL")
    value = raw.strip().upper()
    if not _SYMBOL.match(value):
        raise InvalidQuery(
            "symbol", f"{raw!r} is not a ticker (letters, digits, '.', '-', '/', at most 16 chars)"
        )
    return value


def optional_symbol(raw: str | None) -> str | None:
    """Like :func:`symbol`, ``None`` when absent (no filter)."""
    return None if raw is None or not raw.strip() else symbol(raw)


def window(raw: str | None, accepted: Collection[str], default: str = "PT1S") -> str:
    """An accepted ISO-8601 window size (``PT1S``); the default when absent."""
    if raw is None or not raw.strip():
        return default
    value = raw.strip().upper()
    if value not in accepted:
        raise InvalidQuery("window", f"{raw!r} is not one of {', '.join(sorted(accepted))}")
    return value


def timestamp(raw: str | None, name: str) -> datetime | None:
    """An aware UTC datetime from ISO-8601 or epoch milliseconds; ``None`` when absent."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not _TIMESTAMP.match(text):
        raise InvalidQuery(name, f"{raw!r} is not an ISO-8601 timestamp or epoch milliseconds")
    if _EPOCH_MS.match(text):
        ms = int(text)
        if ms < _epoch_ms(TS_MIN):
            return TS_MIN
        if ms > _epoch_ms(TS_MAX):
            return TS_MAX
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    iso = _PLUS_AS_SPACE.sub(r"\1+\2", text).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError as exc:
        raise InvalidQuery(name, f"{raw!r} is not a valid ISO-8601 timestamp ({exc})") from exc
    local = parsed.replace(tzinfo=None)
    if local < TS_MIN.replace(tzinfo=None) + _MARGIN:
        return TS_MIN if parsed.tzinfo is None else max(TS_MIN, _utc(parsed, TS_MIN))
    if local > TS_MAX.replace(tzinfo=None) - _MARGIN:
        return TS_MAX if parsed.tzinfo is None else min(TS_MAX, _utc(parsed, TS_MAX))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _utc(parsed: datetime, fallback: datetime) -> datetime:
    """``parsed`` in UTC, or ``fallback`` when the conversion leaves ``datetime``'s range."""
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return fallback


def _epoch_ms(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def since(raw: str | None, now: datetime | None = None) -> datetime | None:
    """``since`` may not be in the future (a typo would silently return nothing)."""
    value = timestamp(raw, "since")
    current = now or datetime.now(UTC)
    if value is not None and value > current + timedelta(minutes=1):
        raise InvalidQuery("since", f"{value.isoformat()} is in the future")
    return value


def time_range(
    raw_from: str | None, raw_to: str | None, now: datetime, default_span: timedelta
) -> tuple[datetime, datetime]:
    """``[from, to)``: ``to`` defaults to ``now``, ``from`` to ``to - default_span``."""
    end = timestamp(raw_to, "to") or now
    start = timestamp(raw_from, "from") or end - default_span
    if start > end:
        raise InvalidQuery("from", f"{start.isoformat()} is after to={end.isoformat()}")
    return start, end


def limit(raw: int | None, maximum: int, default: int) -> int:
    """``raw`` capped at ``maximum`` (the deployment's ``API_MAX_ROWS``: a page holds at most that
    many rows, the ``count`` says how many came); ``default`` (capped too) when absent. The
    declared range (``1..`` :data:`api.query.LIMIT_MAX`) is enforced before this is called; a
    value below 1 is still refused here for callers outside the HTTP layer."""
    if raw is None:
        return min(default, maximum)
    if raw < 1:
        raise InvalidQuery("limit", f"{raw} is below 1")
    return min(raw, maximum)
