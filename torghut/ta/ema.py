"""Exponential moving average seeded the TA-Lib way, updated in O(1) per value.

Definition (``talib.EMA(x, N)``, TA-Lib's default "classic" compatibility):

* smoothing factor ``k = 2 / (N + 1)``;
* warm-up: no value for the first ``N - 1`` inputs (TA-Lib returns NaN there);
* seed: at the ``N``-th input the EMA is the simple mean of the first ``N`` inputs, summed in
  arrival order and divided by ``N``;
* afterwards ``ema = (x - ema) * k + ema`` (TA-Lib's operation order, so results agree to the
  last bit rather than merely within rounding).

``skip`` discards that many leading inputs before seeding: TA-Lib's MACD seeds its fast EMA
on the inputs just before its first slow value, not on the first inputs (see ``macd.py``).

Every indicator here can ``revise`` its latest input: a corrected bar replaces the bar it
corrects instead of being counted twice. One undo record (the state before the latest update)
is all that requires.
"""

from __future__ import annotations

from typing import Any

from torghut.ta.packed_state import restore_slots

__all__ = ["Ema"]


class Ema:
    """Incremental EMA(``period``); ``update`` returns ``None`` while warming up."""

    __slots__ = ("_k", "_prev", "_seed_sum", "_seen", "_skip", "_undo_sum", "period", "value")

    def __init__(self, period: int, skip: int = 0) -> None:
        if period < 1 or skip < 0:
            raise ValueError(f"EMA needs period >= 1 and skip >= 0, got {period}, {skip}")
        self.period = period
        self._skip = skip
        self._k = 2.0 / (period + 1)
        self._seen = 0
        self._seed_sum = 0.0
        self._undo_sum = 0.0
        self.value: float | None = None
        self._prev: float | None = None

    def update(self, x: float) -> float | None:
        """Fold one input in; return the EMA, or ``None`` before the seed is complete."""
        value = self.value
        self._prev = value
        if value is not None:
            value = (x - value) * self._k + value
            self.value = value
            return value
        self._seen = seen = self._seen + 1
        self._undo_sum = self._seed_sum
        taken = seen - self._skip
        if taken <= 0:
            return None
        self._seed_sum += x
        if taken < self.period:
            return None
        value = self._seed_sum / self.period
        self.value = value
        return value

    def __getstate__(
        self,
    ) -> tuple[int, int, int, float, float, float | None, float | None]:
        """Flat, for cheap snapshots (``packed_state.py``); ``_k`` follows from the period."""
        return (
            self.period,
            self._skip,
            self._seen,
            self._seed_sum,
            self._undo_sum,
            self.value,
            self._prev,
        )

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        (
            self.period,
            self._skip,
            self._seen,
            self._seed_sum,
            self._undo_sum,
            self.value,
            self._prev,
        ) = state
        self._k = 2.0 / (self.period + 1)

    def revise(self, x: float) -> float | None:
        """Replace the latest input by ``x`` (a corrected bar) and return the new EMA."""
        value = self._prev
        if value is not None:
            value = (x - value) * self._k + value
            self.value = value
            return value
        self.value = None
        self._seen -= 1
        self._seed_sum = self._undo_sum
        return self.update(x)
