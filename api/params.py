"""Parse and validate query parameters into domain values, or raise :class:`InvalidQuery`.

Why not Litestar's type coercion alone: its messages say "expected int" but not what range or
format we accept. Pure functions, so every rule is unit-tested without a server.

Timestamps are ISO-8601 (``2026-03-02T15:00:00Z``, ``+00:00`` offsets; a value without an offset
is taken as UTC) or integer epoch milliseconds. Symbols are upper-cased and must look like a
ticker (``AAPL``, ``BRK.B``, ``BTC/USD``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from api.errors import InvalidQuery

__all__ = ["limit", "optional_symbol", "symbol", "time_range", "timestamp", "window"]

_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-/]{0,15}$")
_EPOCH_MS = re.compile(r"^-?\d{1,16}$")
_PLUS_AS_SPACE = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")
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
    try:
        if _EPOCH_MS.match(text):
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        parsed = datetime.fromisoformat(_PLUS_AS_SPACE.sub(r"\1+\2", text).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidQuery(
            name, f"{raw!r} is not an ISO-8601 timestamp or epoch milliseconds ({exc})"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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
    """``raw`` within ``1..maximum``; ``default`` (capped at ``maximum``) when absent."""
    if raw is None:
        return min(default, maximum)
    if not 1 <= raw <= maximum:
        raise InvalidQuery("limit", f"{raw} is out of range 1..{maximum}")
    return raw
