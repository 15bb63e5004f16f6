"""Market sessions and time for the paper broker.

The broker never reads the wall clock directly: it is given a ``now`` callable and a
:class:`Schedule`, so tests drive it with a :class:`VirtualClock` across opens, closes and
holidays deterministically, and demos run it on :func:`wall_clock` with :class:`AlwaysOpen`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")

Now = Callable[[], datetime]


class Schedule(Protocol):
    """When the regular session is open; all datetimes are timezone-aware."""

    def is_open(self, at: datetime) -> bool: ...

    def next_open(self, at: datetime) -> datetime: ...

    def next_close(self, at: datetime) -> datetime: ...


def wall_clock() -> datetime:
    """The real time in UTC."""
    return datetime.now(UTC)


class VirtualClock:
    """A clock that moves only when told to; safe to read and move from several threads."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start time")
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("VirtualClock needs timezone-aware times")
        with self._lock:
            if at < self._now:
                raise ValueError("time only moves forward")
            self._now = at


class AlwaysOpen:
    """A market that never closes, for demos and tests that do not care about sessions.

    Alpaca's clock object needs a next open and a next close; both are reported one day ahead,
    so a day order lives for 24 hours.
    """

    def is_open(self, at: datetime) -> bool:
        return True

    def next_open(self, at: datetime) -> datetime:
        return at + timedelta(days=1)

    def next_close(self, at: datetime) -> datetime:
        return at + timedelta(days=1)


# NYSE full-day closures and 13:00 early closes (published exchange calendars).
NYSE_HOLIDAYS: frozenset[date] = frozenset(
    date.fromisoformat(d)
    for d in (
        "2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26",
        "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25",
        "2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19",
        "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25",
        "2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26", "2027-05-31", "2027-06-18",
        "2027-07-05", "2027-09-06", "2027-11-25", "2027-12-24",
    )
)  # fmt: skip
NYSE_EARLY_CLOSES: frozenset[date] = frozenset(
    date.fromisoformat(d)
    for d in ("2025-07-03", "2025-11-28", "2025-12-24", "2026-11-27", "2026-12-24", "2027-11-26")
)

_OPEN = time(9, 30)
_CLOSE = time(16, 0)
_EARLY_CLOSE = time(13, 0)
_MAX_DAYS_AHEAD = 30


class NyseSchedule:
    """NYSE regular hours (09:30-16:00 New York time, Monday-Friday) minus holidays.

    Holidays and early closes default to the published 2025-2027 calendars; pass your own sets
    for other years.
    """

    def __init__(
        self,
        holidays: Iterable[date] = NYSE_HOLIDAYS,
        early_closes: Iterable[date] = NYSE_EARLY_CLOSES,
    ) -> None:
        self._holidays = frozenset(holidays)
        self._early_closes = frozenset(early_closes)

    def session(self, day: date) -> tuple[datetime, datetime] | None:
        """The (open, close) of ``day`` in New York time, or ``None`` when the market is shut."""
        if day.weekday() >= 5 or day in self._holidays:
            return None
        close = _EARLY_CLOSE if day in self._early_closes else _CLOSE
        return (
            datetime.combine(day, _OPEN, tzinfo=NEW_YORK),
            datetime.combine(day, close, tzinfo=NEW_YORK),
        )

    def is_open(self, at: datetime) -> bool:
        session = self.session(at.astimezone(NEW_YORK).date())
        return session is not None and session[0] <= at < session[1]

    def next_open(self, at: datetime) -> datetime:
        for start, _ in self._sessions_from(at):
            if start > at:
                return start
        raise ValueError(f"no NYSE session within {_MAX_DAYS_AHEAD} days of {at.isoformat()}")

    def next_close(self, at: datetime) -> datetime:
        for _, end in self._sessions_from(at):
            if end > at:
                return end
        raise ValueError(f"no NYSE session within {_MAX_DAYS_AHEAD} days of {at.isoformat()}")

    def _sessions_from(self, at: datetime) -> Iterable[tuple[datetime, datetime]]:
        day = at.astimezone(NEW_YORK).date()
        for offset in range(_MAX_DAYS_AHEAD):
            session = self.session(day + timedelta(days=offset))
            if session is not None:
                yield session
