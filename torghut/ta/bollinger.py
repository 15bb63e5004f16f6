"""Bollinger bands (20 bars, 2 population σ) as ``talib.BBANDS(close, 20, 2, 2, matype=0)``.

Definition:

* ``boll_mid = SMA20(close)``, the plain mean of the last 20 closes;
* ``σ = sqrt(Σ(close - mid)² / 20)``, the population standard deviation (ddof = 0);
* ``boll_upper = mid + 2σ``, ``boll_lower = mid - 2σ``.

Warm-up: ``None`` for the first 19 bars (TA-Lib's lookback 19); defined from the 20th bar.
The window statistics come from ``rolling.py``: error-bounded (σ within 5e-12 relative of
the exact value), no drift over long series, and a constant window has σ = 0 and bands equal
to the price.
"""

from __future__ import annotations

from typing import Any

from torghut.ta.packed_state import rebuild, restore_slots
from torghut.ta.rolling import RollingMoments

__all__ = ["Bollinger"]


class Bollinger:
    """Incremental Bollinger bands; ``update`` returns ``(mid, upper, lower)`` or ``None``."""

    __slots__ = ("_window", "width")

    def __init__(self, period: int = 20, width: float = 2.0) -> None:
        self._window = RollingMoments(period)
        self.width = width

    def update(self, close: float) -> tuple[float, float, float] | None:
        """Fold one close in; ``None`` until ``period`` closes have been seen."""
        stats = self._window.update(close)
        if stats is None:
            return None
        mid, std = stats
        spread = self.width * std
        return mid, mid + spread, mid - spread

    def __getstate__(self) -> tuple[float, Any]:
        """Flat, for cheap snapshots (``packed_state.py``)."""
        return self.width, self._window.__getstate__()

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        self.width, window = state
        self._window = rebuild(RollingMoments, window)

    def revise(self, close: float) -> tuple[float, float, float] | None:
        """Replace the latest close (a corrected bar) and return the new bands."""
        stats = self._window.revise(close)
        if stats is None:
            return None
        mid, std = stats
        spread = self.width * std
        return mid, mid + spread, mid - spread
