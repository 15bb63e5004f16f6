"""Synthetic signal rows whose trades are easy to work out by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from torghut.events import Signal
from trading.backtest.config import BacktestConfig, FillConfig
from trading.core.domain import SignalRow

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
BANDS = {"boll_lower": 95.0, "boll_mid": 100.0, "boll_upper": 105.0}


def band_rows(
    closes: Sequence[float],
    symbol: str = "AAA",
    quotes: Sequence[tuple[float, float]] | None = None,
    start: datetime = T0,
) -> list[SignalRow]:
    """One row a second; fixed Bollinger bands 95/100/105 (entry below 95, exit at 100)."""
    rows = []
    for i, close in enumerate(closes):
        extra: dict[str, Any] = {}
        if quotes is not None:
            extra = {"imbalance_bid_px": quotes[i][0], "imbalance_ask_px": quotes[i][1]}
        rows.append(
            SignalRow(
                symbol,
                start + timedelta(seconds=i),
                i,
                "PT1S",
                1,
                Signal(close=close, **BANDS, **extra),
            )
        )
    return rows


def band_config(**overrides: Any) -> BacktestConfig:
    values: dict[str, Any] = {
        "start": T0,
        "end": T0 + timedelta(minutes=10),
        "symbols": ("AAA",),
        "strategies": ("bollinger_reversion",),
        "order_qty": Decimal(10),
        "fill": FillConfig(
            slippage_bps=Decimal(10), fee_per_share=Decimal("0.01"), fee_bps=Decimal(1)
        ),
        "risk": {"symbol_cooldown_s": 0},
        "curve_period_s": 1,
    }
    values.update(overrides)
    return BacktestConfig(**values)
