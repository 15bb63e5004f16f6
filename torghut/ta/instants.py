"""Event times as integer microseconds since the Unix epoch, exactly and cheaply.

Why integers: quote ages, session boundaries and the 5-minute window compare instants, and a
boundary case (a quote exactly ``max_age`` old, a bar ending exactly at 09:30) must be decided
exactly, which float seconds cannot promise. Why not ``(ts - EPOCH) // timedelta(1 µs)``: it is
three times slower, and this runs for every bar and quote.
"""

from __future__ import annotations

import math
from datetime import datetime

__all__ = ["epoch_micros"]


def epoch_micros(ts: datetime) -> int:
    """Microseconds since 1970-01-01T00:00Z of a timezone-aware ``ts``.

    ``ts.timestamp()`` is the correctly rounded float of the exact seconds; until the year
    2242 its rounding error (< 0.25 µs) cannot carry it across a whole second, so its floor is
    the exact whole seconds, and ``ts.microsecond`` supplies the rest (UTC offsets are whole
    seconds in every real time zone).
    """
    if ts.tzinfo is None:
        raise ValueError(f"timestamp must be timezone-aware, got {ts!r}")
    return math.floor(ts.timestamp()) * 1_000_000 + ts.microsecond
