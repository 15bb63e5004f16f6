"""Strategies on crafted signal series: entries, filters, corrections, determinism, snapshots,
and the registry that builds them from settings."""

from __future__ import annotations

import pickle
from decimal import Decimal
from typing import Any

import pytest

from tests.trading.conftest import row
from torghut.config import TradingSettings
from trading.core.domain import Action, Decision, OrderType, SignalRow
from trading.core.strategies import (
    BollingerReversion,
    MacdRsi,
    Strategy,
    advance,
    build_strategies,
    initial_state,
)


def run(strategy: Strategy[Any], rows: list[SignalRow]) -> list[Decision | None]:
    state = initial_state(strategy)
    out: list[Decision | None] = []
    for r in rows:
        state, d = advance(strategy, state, r)
        out.append(d)
    return out


def actions(decisions: list[Decision | None]) -> list[str | None]:
    return [d.action.value if d else None for d in decisions]


def macd(i: int, diff: float | None, rsi: float | None = 50.0, close: float = 100.0) -> SignalRow:
    if diff is None:
        return row(i, close=close)
    return row(i, macd=1.0 + diff, macd_signal=1.0, rsi14=rsi, close=close)


def test_macd_rsi_buys_on_bullish_and_sells_on_bearish_cross() -> None:
    rows = [
        macd(0, None),
        macd(1, -0.2),
        macd(2, -0.1),
        macd(3, 0.1),
        macd(4, 0.3),
        macd(5, -0.05),
        macd(6, -0.2),
    ]
    decisions = run(MacdRsi.from_params({}), rows)
    assert actions(decisions) == [None, None, None, "buy", None, "sell", None]
    buy = decisions[3]
    assert buy is not None
    assert buy.symbol == "AAPL"
    assert buy.event_ts == rows[3].event_ts
    assert buy.signal_seq == 3
    assert buy.qty == Decimal(1)
    assert buy.order_type is OrderType.MARKET
    assert buy.reference_price == Decimal("100.0")
    assert "crossed above" in buy.rationale
    assert buy.params["window_size"] == "PT1S"


def test_macd_rsi_filters_crosses_by_rsi_thresholds() -> None:
    strategy = MacdRsi.from_params({"rsi_overbought": 65, "rsi_oversold": 35})
    rows = [
        macd(0, -0.1, rsi=70),
        macd(1, 0.1, rsi=70),  # overbought: no buy
        macd(2, -0.1, rsi=30),  # oversold: no sell
        macd(3, 0.1, rsi=64.9),  # buy
        macd(4, -0.1, rsi=35.1),
    ]  # sell
    assert actions(run(strategy, rows)) == [None, None, None, "buy", "sell"]


def test_macd_rsi_needs_a_previous_difference_and_complete_indicators() -> None:
    rows = [macd(0, 0.5), macd(1, None), macd(2, 0.5), macd(3, -0.5, rsi=None), macd(4, 0.5)]
    # Row 3 has no RSI (no decision) but still records the difference, so row 4 crosses up.
    assert actions(run(MacdRsi.from_params({}), rows)) == [None, None, None, None, "buy"]


def test_correction_is_decided_from_the_state_before_the_corrected_row() -> None:
    strategy = MacdRsi.from_params({})
    state = initial_state(strategy)
    state, _ = advance(strategy, state, macd(0, -0.1))
    state, first = advance(strategy, state, macd(1, 0.1))
    assert first is not None
    assert first.action is Action.BUY
    corrected = row(1, version=2, macd=0.95, macd_signal=1.0, rsi14=50.0, close=100.0)
    state, again = advance(strategy, state, corrected)
    assert again is None, "the corrected row no longer crosses"
    same = row(1, version=3, macd=1.2, macd_signal=1.0, rsi14=50.0, close=100.0)
    state, third = advance(strategy, state, same)
    assert third is not None
    assert third.decision_hash == first.decision_hash
    state, later = advance(strategy, state, macd(2, 0.3))
    assert later is None, "no second cross: the state chains from the corrected row"
    old_state = state
    state, stale = advance(strategy, state, macd(0, 0.9))
    assert stale is None
    assert state == old_state


def band(i: int, close: float) -> SignalRow:
    return row(i, close=close, boll_lower=95.0, boll_mid=100.0, boll_upper=105.0)


def test_bollinger_long_entry_below_lower_and_exit_at_mid() -> None:
    rows = [
        row(0, close=90.0),
        band(1, 99.0),
        band(2, 94.0),
        band(3, 93.0),
        band(4, 99.9),
        band(5, 100.0),
        band(6, 106.0),
    ]
    decisions = run(BollingerReversion.from_params({}), rows)
    assert actions(decisions) == [None, None, "buy", None, None, "sell", None]
    exit_ = decisions[5]
    assert exit_ is not None
    assert "middle band" in exit_.rationale


def test_bollinger_without_mid_exit_sells_above_upper() -> None:
    strategy = BollingerReversion.from_params({"exit_at_mid": False})
    rows = [band(0, 94.0), band(1, 101.0), band(2, 105.5), band(3, 106.0)]
    assert actions(run(strategy, rows)) == ["buy", None, "sell", None]


def test_bollinger_short_entries_are_opt_in() -> None:
    rows = [band(0, 106.0), band(1, 102.0), band(2, 100.0)]
    assert actions(run(BollingerReversion.from_params({}), rows)) == [None, None, None]
    strategy = BollingerReversion.from_params({"short_entries": True})
    assert actions(run(strategy, rows)) == ["sell", None, "buy"]


def test_limit_orders_are_priced_off_the_close() -> None:
    strategy = BollingerReversion.from_params(
        {"order_type": "limit", "limit_offset_bps": 10, "qty": "2.5", "short_entries": True}
    )
    buy, sell = run(strategy, [band(0, 94.0), band(1, 106.0)])
    assert buy is not None
    assert buy.limit_price == Decimal("94.09")
    assert buy.qty == Decimal("2.5")
    assert sell is not None
    assert sell.limit_price == Decimal("105.89")
    assert buy.order_type is OrderType.LIMIT


def test_strategies_are_deterministic_and_snapshot_able() -> None:
    strategy = MacdRsi.from_params({})
    diffs = [-0.3, -0.1, 0.2, 0.1, -0.2, -0.4, 0.3, 0.2, -0.1, 0.4]
    rows = [macd(i, d) for i, d in enumerate(diffs)]
    straight = run(strategy, rows)
    assert straight == run(MacdRsi.from_params({}), rows)

    state = initial_state(strategy)
    resumed: list[Decision | None] = []
    for i, r in enumerate(rows):
        if i == 5:  # what the flow does on a recovery snapshot
            state = pickle.loads(pickle.dumps(state))
        state, d = advance(strategy, state, r)
        resumed.append(d)
    assert resumed == straight
    assert actions(straight).count("buy") == 3


def test_registry_builds_enabled_strategies_with_params() -> None:
    params: dict[str, dict[str, str | int | float | bool]] = {
        "macd_rsi": {"rsi_overbought": 80, "qty": 3}
    }
    settings = TradingSettings(
        strategies=("bollinger_reversion", "macd_rsi"),
        order_qty=Decimal(5),
        strategy_params=params,
    )
    built = build_strategies(settings)
    assert list(built) == ["bollinger_reversion", "macd_rsi"]
    assert built["macd_rsi"].params["rsi_overbought"] == "80"
    assert built["macd_rsi"].params["qty"] == "3"
    assert built["bollinger_reversion"].params["qty"] == "5"
    assert built["macd_rsi"].version == "1"


@pytest.mark.parametrize(
    ("strategies", "params", "message"),
    [
        (("nope",), {}, "unknown strategy"),
        (("macd_rsi",), {"nope": {}}, "unknown strategy"),
        (("macd_rsi",), {"macd_rsi": {"rsi_overbougth": 80}}, "invalid parameters"),
        (("macd_rsi",), {"macd_rsi": {"rsi_oversold": 80}}, "rsi_oversold"),
    ],
)
def test_registry_refuses_unknown_ids_and_params(
    strategies: tuple[str, ...],
    params: dict[str, dict[str, str | int | float | bool]],
    message: str,
) -> None:
    settings = TradingSettings(strategies=strategies, strategy_params=params)
    with pytest.raises(ValueError, match=message):
        build_strategies(settings)
