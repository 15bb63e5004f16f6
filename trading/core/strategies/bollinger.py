"""Bollinger-band mean reversion.

Flat: buy when the close falls below the lower band (and, with ``short_entries``, sell short when
it rises above the upper band). Long: sell when the close rises above the upper band, or back to
the middle band when ``exit_at_mid``. Short: the mirror image. The state is the position this
strategy *intends* (flat/long/short), so one excursion beyond a band yields one order, not one
per bar; the broker's real position is the risk engine's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from trading.core.domain import Action, Decision, ParamValue, SignalRow
from trading.core.strategies.base import OrderParams, make_decision

__all__ = ["BollingerParams", "BollingerReversion", "BollingerState"]


class BollingerParams(OrderParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    exit_at_mid: bool = True
    short_entries: bool = False


class BollingerState(msgspec.Struct, frozen=True, gc=False):
    position: Literal["flat", "long", "short"] = "flat"


_FLAT = BollingerState("flat")
_LONG = BollingerState("long")
_SHORT = BollingerState("short")


class BollingerReversion:
    id = "bollinger_reversion"
    version = "1"

    def __init__(self, params: BollingerParams) -> None:
        self._p = params
        self.params: Mapping[str, ParamValue] = msgspec.to_builtins(params)

    @classmethod
    def from_params(cls, raw: Mapping[str, Any]) -> BollingerReversion:
        return cls(msgspec.convert(dict(raw), BollingerParams, strict=False))

    def initial(self) -> BollingerState:
        return _FLAT

    def decide(
        self, row: SignalRow, state: BollingerState
    ) -> tuple[BollingerState, Decision | None]:
        ind = row.indicators
        close, lower, mid, upper = ind.close, ind.boll_lower, ind.boll_mid, ind.boll_upper
        if close is None or lower is None or mid is None or upper is None:
            return state, None
        step = self._step(state, close, lower, mid, upper)
        if step is None:
            return state, None
        new_state, action, why = step
        bands = f"close {close:.6g}, bands {lower:.6g}/{mid:.6g}/{upper:.6g}"
        return new_state, make_decision(self, self._p, row, action, close, f"{why}: {bands}")

    def _step(
        self, state: BollingerState, close: float, lower: float, mid: float, upper: float
    ) -> tuple[BollingerState, Action, str] | None:
        if state.position == "flat":
            if close < lower:
                return _LONG, Action.BUY, "entry long below lower band"
            if close > upper and self._p.short_entries:
                return _SHORT, Action.SELL, "entry short above upper band"
            return None
        if state.position == "long":
            if close > upper:
                return _FLAT, Action.SELL, "exit long above upper band"
            if self._p.exit_at_mid and close >= mid:
                return _FLAT, Action.SELL, "exit long at middle band"
            return None
        if close < lower:
            return _FLAT, Action.BUY, "exit short below lower band"
        if self._p.exit_at_mid and close <= mid:
            return _FLAT, Action.BUY, "exit short at middle band"
        return None
