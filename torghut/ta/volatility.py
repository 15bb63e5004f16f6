"""Realised volatility: population σ of the last 60 log returns of close.

Definition (``vol_realized_w60s``):

* ``r_i = ln(close_i / close_{i-1})`` — one return per bar after the first;
* ``σ = sqrt(Σ(r - mean(r))² / 60)`` over the last 60 returns (ddof = 0), i.e.
  ``talib.STDDEV(r, 60, 1)`` or polars ``rolling_std(60, ddof=0)`` over the returns;
* not annualised, not scaled to the bar length: it is per bar, for the 1 s and the 1 min lane
  alike (the name keeps the design document's column).

Warm-up: 60 returns need 61 closes, so ``None`` for the first 60 bars; defined from the 61st
(0-based index 60, where ``talib.STDDEV`` on the returns first gives a number). The window
statistics come from ``rolling.py``: error-bounded, no drift, and a constant price gives
σ = 0 exactly.
"""

from __future__ import annotations

import math
from typing import Any

from torghut.ta.packed_state import rebuild, restore_slots
from torghut.ta.rolling import RollingMoments

__all__ = ["RealizedVolatility"]


class RealizedVolatility:
    """Incremental σ of log returns; ``update`` returns ``None`` while warming up."""

    __slots__ = ("_prev", "_undo", "_window")

    def __init__(self, returns: int = 60) -> None:
        self._window = RollingMoments(returns)
        self._prev: float | None = None
        self._undo: float | None = None

    def update(self, close: float) -> float | None:
        """Fold one close (> 0) in; return σ once ``returns`` returns are in the window."""
        prev = self._prev
        self._undo = prev
        self._prev = close
        if prev is None:
            return None
        stats = self._window.update(math.log(close / prev))
        return None if stats is None else stats[1]

    def __getstate__(self) -> tuple[float | None, float | None, Any]:
        """Flat, for cheap snapshots (``packed_state.py``)."""
        return self._prev, self._undo, self._window.__getstate__()

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        self._prev, self._undo, window = state
        self._window = rebuild(RollingMoments, window)

    def revise(self, close: float) -> float | None:
        """Replace the latest close (a corrected bar) and return the new σ."""
        prev = self._undo
        self._prev = close
        if prev is None:
            return None
        stats = self._window.revise(math.log(close / prev))
        return None if stats is None else stats[1]
