"""RSI(14) with Wilder smoothing, exactly as ``talib.RSI(close, 14)`` computes it (O(1)/bar).

Definition (TA-Lib, classic compatibility, unstable period 0 — the TA-Lib default):

* ``d_i = close_i - close_{i-1}``; gain ``max(d, 0)``, loss ``max(-d, 0)``;
* seed: average gain and loss are the plain means of the first ``N`` differences
  (closes 1..N+1);
* then Wilder's smoothing ``avg = (avg * (N - 1) + x) / N`` — in TA-Lib's operation order;
* ``rsi = 100 * avg_gain / (avg_gain + avg_loss)``; when both averages are zero (a constant
  series) TA-Lib defines RSI as ``0``, and so do we.

Warm-up: ``None`` for the first ``N`` bars (TA-Lib's lookback is ``N``); the first value is at
the ``N + 1``-th bar. Because TA-Lib's unstable period is 0 its output depends on where the
series starts; ours starts at the first bar this engine sees, as TA-Lib's starts at index 0.
"""

from __future__ import annotations

from typing import Any

from torghut.ta.packed_state import restore_slots

__all__ = ["Rsi"]


class Rsi:
    """Incremental Wilder RSI(``period``); ``update`` returns ``None`` while warming up."""

    __slots__ = ("_gain", "_loss", "_prev", "_seen", "_undo", "period")

    def __init__(self, period: int = 14) -> None:
        if period < 1:
            raise ValueError(f"RSI needs period >= 1, got {period}")
        self.period = period
        self._seen = 0
        self._prev = 0.0
        self._gain = 0.0
        self._loss = 0.0
        self._undo: tuple[int, float, float, float] = (0, 0.0, 0.0, 0.0)

    def update(self, close: float) -> float | None:
        """Fold one close in; return RSI or ``None`` during the first ``period`` bars."""
        seen = self._seen
        gain = self._gain
        loss = self._loss
        prev = self._prev
        self._undo = (seen, prev, gain, loss)
        self._prev = close
        period = self.period
        diff = close - prev
        if seen > period:
            gain *= period - 1
            loss *= period - 1
            if diff < 0:
                loss -= diff
            else:
                gain += diff
            gain /= period
            loss /= period
        else:
            self._seen = seen = seen + 1
            if seen == 1:
                return None
            if diff < 0:
                loss -= diff
            else:
                gain += diff
            if seen <= period:
                self._gain = gain
                self._loss = loss
                return None
            gain /= period
            loss /= period
        self._gain = gain
        self._loss = loss
        total = gain + loss
        return 100.0 * (gain / total) if total != 0.0 else 0.0

    def __getstate__(self) -> tuple[int, int, float, float, float, tuple[int, float, float, float]]:
        """Flat, for cheap snapshots (``packed_state.py``)."""
        return self.period, self._seen, self._prev, self._gain, self._loss, self._undo

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        self.period, self._seen, self._prev, self._gain, self._loss, self._undo = state

    def revise(self, close: float) -> float | None:
        """Replace the latest close (a corrected bar) and return the new RSI."""
        self._seen, self._prev, self._gain, self._loss = self._undo
        return self.update(close)
