"""Volume-weighted average prices over bars: per trading session and over the last 5 minutes.

Both weight each bar's own VWAP by its volume: ``Σ(vwap_i · v_i) / Σ v_i`` (a bar without a
VWAP contributes its close; a bar without volume contributes nothing). ``None`` while the
volume in scope is 0.

* ``vwap_session``: the bars of the current session. A session starts every calendar day at
  ``session_start`` wall-clock time in ``session_timezone`` (09:30 America/New_York by default),
  DST-aware through zoneinfo. A bar belongs to the session with the latest start strictly
  before its end: bars are ``[start, end)``, so the bar ending exactly at 09:30:00 (covering
  09:29:59-09:30:00) closes the previous session and the bar ending 09:30:01 opens the new
  one. Pre-market bars therefore still belong to the previous day's session.
* ``vwap_w5m``: the bars whose end lies in ``(t - 5 min, t]``, ``t`` the latest bar's end —
  event time, not bar count, so it covers 300 one-second bars or 5 one-minute bars.

Accuracy: the session sums only grow (all terms are ≥ 0), so plain float sums stay within
``n·u`` relative of exact. The 5-minute sums also subtract, so they carry a running bound of
their rounding error and are re-summed exactly-rounded (``math.fsum``) once it could exceed
1e-12 of the sum — a huge bar leaving the window leaves no residue behind.

The 5-minute window's bars live in three flat arrays (ends, price × volume, volume) read from
a head index, so a snapshot copies three byte strings instead of pickling up to 300 tuples.
"""

from __future__ import annotations

import math
from array import array
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from torghut.ta.instants import epoch_micros
from torghut.ta.packed_state import rebuild, restore_slots

__all__ = ["SessionClock", "SessionVwap", "WindowVwap"]

_U = 2.0**-53
_TOLERANCE = 1e-12


class SessionClock:
    """Maps a bar end to the start of its session (µs since the epoch), cached per session."""

    __slots__ = ("_next", "_start", "_tz", "start_time")

    def __init__(self, start_time: time, tz: ZoneInfo) -> None:
        self.start_time = start_time
        self._tz = tz
        self._start = 0
        self._next = 0

    def session_of(self, end: datetime, end_us: int) -> int:
        """Start of the session the bar ending at ``end`` (``end_us`` µs) belongs to."""
        if self._start < end_us <= self._next:
            return self._start
        local = end.astimezone(self._tz)
        day = local.date()
        if local.time() <= self.start_time:
            day -= timedelta(days=1)
        self._start = self._instant(day)
        self._next = self._instant(day + timedelta(days=1))
        return self._start

    def __getstate__(self) -> tuple[str, str, int, int]:
        """Flat, for cheap snapshots (``packed_state.py``): the start time and the time zone
        as text, which pickles in a fraction of the objects' time."""
        return self.start_time.isoformat(), self._tz.key, self._start, self._next

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        start_time, tz, self._start, self._next = state
        self.start_time = time.fromisoformat(start_time)
        self._tz = ZoneInfo(tz)

    def _instant(self, day: date) -> int:
        return epoch_micros(datetime.combine(day, self.start_time, tzinfo=self._tz))


class SessionVwap:
    """Cumulative VWAP of the current session's bars."""

    __slots__ = ("_clock", "_last_pv", "_last_v", "_pv", "_session", "_v")

    def __init__(self, clock: SessionClock) -> None:
        self._clock = clock
        self._session = -1
        self._pv = 0.0
        self._v = 0.0
        self._last_pv = 0.0
        self._last_v = 0.0

    def update(self, end: datetime, end_us: int, price: float, volume: float) -> float | None:
        """Add one bar (its VWAP ``price`` and ``volume``); return the session VWAP."""
        session = self._clock.session_of(end, end_us)
        if session != self._session:
            self._session = session
            self._pv = 0.0
            self._v = 0.0
        pv = price * volume
        self._last_pv = pv
        self._last_v = volume
        self._pv += pv
        self._v += volume
        return self._pv / self._v if self._v > 0.0 else None

    def __getstate__(self) -> tuple[Any, int, float, float, float, float]:
        """Flat, for cheap snapshots (``packed_state.py``); the clock's state nested."""
        clock = self._clock.__getstate__()
        return clock, self._session, self._pv, self._v, self._last_pv, self._last_v

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        clock, self._session, self._pv, self._v, self._last_pv, self._last_v = state
        self._clock = rebuild(SessionClock, clock)

    def revise(self, price: float, volume: float) -> float | None:
        """Replace the latest bar's contribution (a corrected bar of the same end)."""
        pv = price * volume
        self._pv += pv - self._last_pv
        self._v += volume - self._last_v
        self._last_pv = pv
        self._last_v = volume
        return self._pv / self._v if self._v > 0.0 else None


class WindowVwap:
    """VWAP of the bars ending within the last ``span_us`` µs (right-closed window).

    The bars are ``_ends[i]``, ``_pvs[i]``, ``_vols[i]`` for ``i >= _head``; bars that left
    the window stay before ``_head`` until they are the larger part, then are cut off in one
    move (amortised O(1) per bar, at most about twice the window held).
    """

    __slots__ = ("_ends", "_err_pv", "_err_v", "_head", "_pv", "_pvs", "_v", "_vols", "span_us")

    def __init__(self, span_us: int = 300_000_000) -> None:
        self.span_us = span_us
        self._ends = array("q")
        self._pvs = array("d")
        self._vols = array("d")
        self._head = 0
        self._pv = 0.0
        self._v = 0.0
        self._err_pv = 0.0
        self._err_v = 0.0

    def update(self, end_us: int, price: float, volume: float) -> float | None:
        """Add one bar ending at ``end_us``; drop bars ending at or before ``end - span``."""
        pv = price * volume
        ends = self._ends
        pvs = self._pvs
        vols = self._vols
        ends.append(end_us)
        pvs.append(pv)
        vols.append(volume)
        total_pv = self._pv + pv
        total_v = self._v + volume
        err_pv = self._err_pv + _U * total_pv
        err_v = self._err_v + _U * total_v
        horizon = end_us - self.span_us
        head = self._head
        while ends[head] <= horizon:  # stops at the new bar at the latest: span_us > 0
            old_pv = pvs[head]
            old_v = vols[head]
            head += 1
            total_pv -= old_pv
            total_v -= old_v
            err_pv += _U * (old_pv + abs(total_pv))
            err_v += _U * (old_v + abs(total_v))
        if head >= 64 and 2 * head >= len(ends):
            del ends[:head], pvs[:head], vols[:head]
            head = 0
        self._head = head
        self._pv = total_pv
        self._v = total_v
        self._err_pv = err_pv
        self._err_v = err_v
        if err_pv > _TOLERANCE * total_pv or err_v > _TOLERANCE * total_v:
            return self._value()
        return total_pv / total_v if total_v > 0.0 else None

    def __getstate__(self) -> tuple[int, bytes, bytes, bytes, float, float, float, float]:
        """The window's three arrays as bytes (``packed_state.py``): copies, not a tuple per
        bar. The same form as the snapshots of the deque this replaced, which restore."""
        head = self._head
        return (
            self.span_us,
            self._ends[head:].tobytes(),
            self._pvs[head:].tobytes(),
            self._vols[head:].tobytes(),
            self._pv,
            self._v,
            self._err_pv,
            self._err_v,
        )

    def __setstate__(self, state: Any) -> None:
        self._ends, self._pvs, self._vols = array("q"), array("d"), array("d")
        self._head = 0
        if isinstance(state, tuple) and len(state) == 2:  # the default form: a deque of bars
            slots = dict(state[1])
            for end_us, pv, volume in slots.pop("_bars"):
                self._ends.append(end_us)
                self._pvs.append(pv)
                self._vols.append(volume)
            restore_slots(self, (None, slots))
            return
        span, ends, pvs, vols, self._pv, self._v, self._err_pv, self._err_v = state
        self.span_us = span
        self._ends.frombytes(ends)
        self._pvs.frombytes(pvs)
        self._vols.frombytes(vols)

    def revise(self, price: float, volume: float) -> float | None:
        """Replace the latest bar's contribution (a corrected bar of the same end)."""
        old_pv = self._pvs[-1]
        old_v = self._vols[-1]
        pv = price * volume
        self._pvs[-1] = pv
        self._vols[-1] = volume
        self._pv += pv - old_pv
        self._v += volume - old_v
        self._err_pv += _U * (pv + old_pv + abs(self._pv))
        self._err_v += _U * (volume + old_v + abs(self._v))
        return self._value()

    def _value(self) -> float | None:
        if self._err_pv > _TOLERANCE * self._pv or self._err_v > _TOLERANCE * self._v:
            head = self._head
            self._pv = math.fsum(self._pvs[head:])
            self._v = math.fsum(self._vols[head:])
            self._err_pv = _U * self._pv
            self._err_v = _U * self._v
        return self._pv / self._v if self._v > 0.0 else None
