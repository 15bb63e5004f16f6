"""MACD crossing its signal line, filtered by RSI.

Buy when MACD crosses above its signal line while RSI(14) is below ``rsi_overbought`` (do not buy
into an overbought market); sell when it crosses below while RSI(14) is above ``rsi_oversold``.
A cross needs a previous MACD−signal difference on the other side (or on zero), so the first
complete row after warm-up never trades.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from trading.core.domain import Action, Decision, ParamValue, SignalRow
from trading.core.strategies.base import OrderParams, make_decision

__all__ = ["MacdRsi", "MacdRsiParams", "MacdRsiState"]


class MacdRsiParams(OrderParams, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rsi_overbought: Decimal = Decimal(70)
    rsi_oversold: Decimal = Decimal(30)


class MacdRsiState(msgspec.Struct, frozen=True, gc=False):
    """MACD − signal at the previous row (``None`` until MACD is warm)."""

    prev_diff: float | None = None


class MacdRsi:
    id = "macd_rsi"
    version = "1"

    def __init__(self, params: MacdRsiParams) -> None:
        if params.rsi_oversold >= params.rsi_overbought:
            raise ValueError("macd_rsi: rsi_oversold must be below rsi_overbought")
        self._p = params
        self._overbought = float(params.rsi_overbought)
        self._oversold = float(params.rsi_oversold)
        self.params: Mapping[str, ParamValue] = msgspec.to_builtins(params)

    @classmethod
    def from_params(cls, raw: Mapping[str, Any]) -> MacdRsi:
        return cls(msgspec.convert(dict(raw), MacdRsiParams, strict=False))

    def initial(self) -> MacdRsiState:
        return MacdRsiState()

    def decide(self, row: SignalRow, state: MacdRsiState) -> tuple[MacdRsiState, Decision | None]:
        ind = row.indicators
        if ind.macd is None or ind.macd_signal is None:
            return MacdRsiState(), None
        diff = ind.macd - ind.macd_signal
        prev = state.prev_diff
        new_state = MacdRsiState(diff)
        if prev is None or ind.rsi14 is None or ind.close is None:
            return new_state, None
        rsi = ind.rsi14
        if prev <= 0 < diff and rsi < self._overbought:
            why = (
                f"macd crossed above signal ({prev:.6g} -> {diff:.6g}); "
                f"rsi14 {rsi:.2f} < {self._overbought:g}"
            )
            return new_state, make_decision(self, self._p, row, Action.BUY, ind.close, why)
        if prev >= 0 > diff and rsi > self._oversold:
            why = (
                f"macd crossed below signal ({prev:.6g} -> {diff:.6g}); "
                f"rsi14 {rsi:.2f} > {self._oversold:g}"
            )
            return new_state, make_decision(self, self._p, row, Action.SELL, ind.close, why)
        return new_state, None
