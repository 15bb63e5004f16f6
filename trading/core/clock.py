"""The clock port: the only way the trading core learns the time or waits.

Why a port: live, the wall clock decides *when* to act (staleness, cooldowns, reconciliation
age, retry pauses); in a backtest the same code must run on simulated time, where "now" is the
event time being replayed and a pause costs nothing. So nothing in :mod:`trading.core` calls
``datetime.now``/``time.time``/``time.monotonic``/``time.sleep``: it asks a :class:`Clock`.
:class:`~trading.adapters.system_clock.SystemClock` is the wall clock; :class:`SimulatedClock`
is driven by whoever replays (the backtester, tests).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "SimulatedClock"]


class Clock(Protocol):
    """Time as the core sees it. ``now`` is timezone-aware UTC; ``monotonic`` only ever grows
    (for durations); ``sleep`` waits (or, simulated, moves time on)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SimulatedClock:
    """A clock that moves only when told to: :meth:`set` (to an event time) or :meth:`advance`.

    ``sleep`` advances it, so a retry pause in the core takes no wall time in a replay; time
    never goes backwards (a :meth:`set` to an earlier instant is refused).
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"naive start {start!r}: the clock keeps aware UTC time")
        self._start = start
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return (self._now - self._start).total_seconds()

    def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=max(seconds, 0.0)))

    def set(self, at: datetime) -> None:
        """Move to ``at`` (the event time being replayed); never backwards."""
        with self._lock:
            if at < self._now:
                raise ValueError(f"simulated time cannot go back from {self._now} to {at}")
            self._now = at

    def advance(self, by: timedelta) -> None:
        with self._lock:
            self._now += by
