"""MACD(12, 26, 9) exactly as ``talib.MACD(close, 12, 26, 9)`` computes it, in O(1) per bar.

Definition, with ``EMA`` as in ``ema.py`` (k = 2/(N+1), SMA seed):

* slow line: ``EMA26(close)``, seeded on closes 1..26, first value at bar 26;
* fast line: an ``EMA12`` seeded on the 12 closes *ending at bar 26* (closes 15..26), not on the
  first 12 closes. TA-Lib's MACD starts both EMAs at the slow line's first output, so its fast
  EMA differs from ``talib.EMA(close, 12)``: ``macd`` therefore equals ``ema12 - ema26`` only
  as the difference of the seeds decays, by a factor 11/13 per bar;
* ``macd = fast - slow`` from bar 26 on;
* ``macd_signal = EMA9(macd)``, seeded on the first 9 MACD values (bars 26..34);
* ``macd_hist = macd - macd_signal``.

Warm-up: TA-Lib's lookback is ``(26 - 1) + (9 - 1) = 33``, so all three are ``None`` for the
first 33 bars and defined from the 34th bar on (0-based index 33), exactly where TA-Lib stops
returning NaN.
"""

from __future__ import annotations

from typing import Any

from torghut.ta.ema import Ema
from torghut.ta.packed_state import rebuild, restore_slots

__all__ = ["Macd"]


class Macd:
    """Incremental TA-Lib MACD; ``update`` returns ``(macd, signal, hist)`` or ``None``."""

    __slots__ = ("fast", "signal", "slow")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        if not 1 <= fast <= slow:
            raise ValueError(f"MACD needs 1 <= fast <= slow, got {fast}, {slow}")
        self.slow = Ema(slow)
        self.fast = Ema(fast, skip=slow - fast)
        self.signal = Ema(signal)

    def update(self, close: float) -> tuple[float, float, float] | None:
        """Fold one close in; ``None`` until the signal line is seeded."""
        slow = self.slow.update(close)
        fast = self.fast.update(close)
        if slow is None or fast is None:
            return None
        line = fast - slow
        signal = self.signal.update(line)
        if signal is None:
            return None
        return line, signal, line - signal

    def __getstate__(self) -> tuple[Any, Any, Any]:
        """The three EMAs' flat states (``packed_state.py``)."""
        return self.slow.__getstate__(), self.fast.__getstate__(), self.signal.__getstate__()

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        slow, fast, signal = state
        self.slow = rebuild(Ema, slow)
        self.fast = rebuild(Ema, fast)
        self.signal = rebuild(Ema, signal)

    def revise(self, close: float) -> tuple[float, float, float] | None:
        """Replace the latest close (a corrected bar) and return the new values."""
        slow = self.slow.revise(close)
        fast = self.fast.revise(close)
        if slow is None or fast is None:
            return None
        line = fast - slow
        signal = self.signal.revise(line)
        if signal is None:
            return None
        return line, signal, line - signal
