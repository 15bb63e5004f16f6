"""The risk engine: each rule trips alone (every other rule passing), every failing rule is
reported, and the limits are read from settings as documented."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from tests.trading.conftest import T0, decision
from torghut.config import (
    AlpacaSettings,
    ClickHouseSettings,
    RiskSettings,
    TaSettings,
    TradingSettings,
)
from trading.core.domain import Action
from trading.core.ports import AccountSnapshot, ClockSnapshot, PositionSnapshot
from trading.core.risk import (
    LagChange,
    PipelineLag,
    RecentOrder,
    RiskCheck,
    RiskContext,
    RiskLimits,
    evaluate,
)
from trading.core.signals import signal_read_delay

NOW = T0 + timedelta(seconds=1)

LIMITS = RiskLimits(
    trading_enabled=True,
    kill_switch=False,
    mode="paper",
    live_enabled=False,
    live_endpoint_configured=False,
    enabled_strategies=frozenset({"macd_rsi"}),
    symbol_allowlist=frozenset({"AAPL", "MSFT"}),
    require_market_open=True,
    max_signal_staleness=timedelta(seconds=120),
    max_pipeline_lag=timedelta(seconds=120),
    max_notional_per_order=Decimal(10_000),
    max_position_per_symbol=Decimal(25_000),
    max_gross_exposure=Decimal(100_000),
    allow_shorting=False,
    max_orders_per_minute=30,
    symbol_cooldown=timedelta(seconds=60),
    daily_loss_limit=Decimal(2_000),
    max_drawdown_pct=Decimal(10),
)

ACCOUNT = AccountSnapshot(
    equity=Decimal(100_000),
    last_equity=Decimal(100_000),
    buying_power=Decimal(200_000),
    cash=Decimal(100_000),
)

CTX = RiskContext(
    now=NOW,
    account=ACCOUNT,
    positions=(),
    clock=ClockSnapshot(timestamp=NOW, is_open=True),
    recent_orders=(),
    equity_peak=Decimal(100_000),
)


def acct(**changes: Any) -> AccountSnapshot:
    return msgspec.structs.replace(ACCOUNT, **changes)


def pos(symbol: str, qty: int) -> PositionSnapshot:
    return PositionSnapshot(symbol=symbol, qty=Decimal(qty), market_value=Decimal(qty * 100))


ALONE: list[tuple[RiskCheck, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    # (expected, limit changes, context changes, decision changes)
    (RiskCheck.INVALID_ORDER, {}, {}, {"qty": Decimal(0)}),
    (RiskCheck.TRADING_DISABLED, {"trading_enabled": False}, {}, {}),
    (RiskCheck.KILL_SWITCH, {"kill_switch": True}, {}, {}),
    (RiskCheck.TRADING_HALTED, {}, {"halted_reason": "reconciliation running"}, {}),
    (RiskCheck.LIVE_GATES, {"mode": "live", "live_endpoint_configured": True}, {}, {}),
    (RiskCheck.LIVE_GATES, {"mode": "live", "live_enabled": True}, {}, {}),
    (
        RiskCheck.NOT_PROMOTED,
        {
            "mode": "live",
            "live_enabled": True,
            "live_endpoint_configured": True,
            "not_promoted": "no passing promotion verdict",
        },
        {},
        {},
    ),
    (
        RiskCheck.STRATEGY_DISABLED,
        {"enabled_strategies": frozenset({"bollinger_reversion"})},
        {},
        {},
    ),
    (RiskCheck.SYMBOL_NOT_ALLOWED, {}, {}, {"symbol": "TSLA"}),
    (RiskCheck.MARKET_CLOSED, {}, {"clock": ClockSnapshot(timestamp=NOW, is_open=False)}, {}),
    (RiskCheck.SIGNAL_STALE, {}, {"now": T0 + timedelta(seconds=121)}, {}),
    (RiskCheck.MAX_NOTIONAL_PER_ORDER, {"max_notional_per_order": Decimal(999)}, {}, {}),
    (RiskCheck.MAX_POSITION_PER_SYMBOL, {}, {"positions": (pos("AAPL", 245),)}, {}),
    (RiskCheck.MAX_GROSS_EXPOSURE, {}, {"positions": (pos("MSFT", 995),)}, {}),
    (RiskCheck.BUYING_POWER, {}, {"account": acct(buying_power=Decimal(999))}, {}),
    (RiskCheck.SHORTING_DISABLED, {}, {}, {"action": Action.SELL}),
    (
        RiskCheck.MAX_ORDERS_PER_MINUTE,
        {},
        {
            "recent_orders": tuple(
                RecentOrder("MSFT", NOW - timedelta(seconds=59)) for _ in range(30)
            )
        },
        {},
    ),
    (
        RiskCheck.SYMBOL_COOLDOWN,
        {},
        {"recent_orders": (RecentOrder("AAPL", NOW - timedelta(seconds=30)),)},
        {},
    ),
    (RiskCheck.DAILY_LOSS_STOP, {}, {"account": acct(equity=Decimal(98_000))}, {}),
    (
        RiskCheck.DRAWDOWN_STOP,
        {},
        {"account": acct(equity=Decimal(89_000), last_equity=Decimal(89_000))},
        {},
    ),
]


def test_baseline_passes_every_rule() -> None:
    verdict = evaluate(decision(), LIMITS, CTX)
    assert verdict.approved
    assert verdict.reasons == ()


def test_every_rule_has_a_trip_alone_case() -> None:
    assert {case[0] for case in ALONE} == set(RiskCheck)


@pytest.mark.parametrize(
    ("expected", "limit_changes", "ctx_changes", "decision_changes"),
    ALONE,
    ids=[f"{c[0].value}-{i}" for i, c in enumerate(ALONE)],
)
def test_each_rule_trips_alone(
    expected: RiskCheck,
    limit_changes: dict[str, Any],
    ctx_changes: dict[str, Any],
    decision_changes: dict[str, Any],
) -> None:
    limits = dataclasses.replace(LIMITS, **limit_changes)
    ctx = dataclasses.replace(CTX, **ctx_changes)
    verdict = evaluate(decision(**decision_changes), limits, ctx)
    assert not verdict.approved
    assert [r.code for r in verdict.reasons] == [expected], verdict.reasons
    assert verdict.reasons[0].detail


def test_all_failing_rules_are_reported() -> None:
    limits = dataclasses.replace(LIMITS, trading_enabled=False, kill_switch=True)
    ctx = dataclasses.replace(
        CTX,
        now=T0 + timedelta(minutes=10),
        clock=ClockSnapshot(timestamp=NOW, is_open=False),
        account=acct(buying_power=Decimal(1), equity=Decimal(80_000), last_equity=Decimal(80_000)),
    )
    verdict = evaluate(decision(symbol="TSLA"), limits, ctx)
    assert verdict.codes == {
        RiskCheck.TRADING_DISABLED,
        RiskCheck.KILL_SWITCH,
        RiskCheck.SYMBOL_NOT_ALLOWED,
        RiskCheck.MARKET_CLOSED,
        RiskCheck.SIGNAL_STALE,
        RiskCheck.BUYING_POWER,
        RiskCheck.DRAWDOWN_STOP,
    }


def test_live_mode_passes_only_with_every_gate() -> None:
    for enabled in (False, True):
        for endpoint in (False, True):
            limits = dataclasses.replace(
                LIMITS, mode="live", live_enabled=enabled, live_endpoint_configured=endpoint
            )
            verdict = evaluate(decision(), limits, CTX)
            assert verdict.approved is (enabled and endpoint)


def test_reducing_orders_pass_position_and_exposure_limits() -> None:
    """Selling part of an over-limit long reduces risk, so only growing exposure is refused."""
    ctx = dataclasses.replace(CTX, positions=(pos("AAPL", 300), pos("MSFT", 990)))
    assert evaluate(decision(action=Action.SELL), LIMITS, ctx).approved
    assert evaluate(decision(), LIMITS, ctx).codes == {
        RiskCheck.MAX_POSITION_PER_SYMBOL,
        RiskCheck.MAX_GROSS_EXPOSURE,
    }


def test_limit_price_is_the_notional_price_and_a_missing_price_is_invalid() -> None:
    limits = dataclasses.replace(LIMITS, max_notional_per_order=Decimal(1_500))
    assert evaluate(decision(limit_price=Decimal(149)), limits, CTX).approved
    assert evaluate(decision(limit_price=Decimal(151)), limits, CTX).codes == {
        RiskCheck.MAX_NOTIONAL_PER_ORDER
    }
    assert evaluate(decision(reference_price=None), LIMITS, CTX).codes == {RiskCheck.INVALID_ORDER}


def test_orders_older_than_a_minute_do_not_count() -> None:
    ctx = dataclasses.replace(
        CTX,
        recent_orders=tuple(RecentOrder("MSFT", NOW - timedelta(seconds=61)) for _ in range(50)),
    )
    assert evaluate(decision(), LIMITS, ctx).approved
    zero = dataclasses.replace(LIMITS, max_orders_per_minute=0)
    assert evaluate(decision(), zero, CTX).codes == {RiskCheck.MAX_ORDERS_PER_MINUTE}


def test_limits_from_settings() -> None:
    limits = RiskLimits.from_settings(
        TradingSettings(enabled=True, mode="live", live_enabled=True),
        RiskSettings(max_signal_staleness_s=30),
        AlpacaSettings(symbols=("AAPL", "NVDA"), live_base_url="https://api.alpaca.markets"),
        read_delay=timedelta(seconds=9.5),
    )
    assert limits.symbol_allowlist == {"AAPL", "NVDA"}, "empty allowlist = subscribed symbols"
    assert limits.live_endpoint_configured
    assert limits.live_enabled
    assert limits.mode == "live"
    assert limits.max_signal_staleness == timedelta(seconds=30)
    assert limits.enabled_strategies == {"macd_rsi", "bollinger_reversion"}
    explicit = RiskLimits.from_settings(
        TradingSettings(),
        RiskSettings(symbol_allowlist=("SPY",)),
        AlpacaSettings(),
        read_delay=timedelta(seconds=9.5),
    )
    assert explicit.symbol_allowlist == {"SPY"}
    assert not explicit.trading_enabled
    assert not explicit.live_endpoint_configured


def test_default_staleness_follows_the_bar_and_lag_defaults_to_it() -> None:
    """Seconds for 1-second bars (read delay + one poll + 3 bars), minutes for 1-minute bars; an
    explicit RISK_MAX_SIGNAL_STALENESS_S / RISK_MAX_PIPELINE_LAG_S wins."""
    read_delay = timedelta(seconds=9.5)  # e.g. 2 s lateness + 1 s batch + a 6.5 s settle
    one_second = RiskLimits.from_settings(
        TradingSettings(signal_window_size="PT1S", poll_interval_s=1.0),
        RiskSettings(),
        AlpacaSettings(),
        read_delay=read_delay,
    )
    assert one_second.max_signal_staleness == timedelta(seconds=13.5)
    assert one_second.max_pipeline_lag == one_second.max_signal_staleness
    one_minute = RiskLimits.from_settings(
        TradingSettings(signal_window_size="PT1M", poll_interval_s=1.0),
        RiskSettings(),
        AlpacaSettings(),
        read_delay=read_delay,
    )
    assert one_minute.max_signal_staleness == timedelta(seconds=9.5 + 1 + 180)
    explicit = RiskLimits.from_settings(
        TradingSettings(),
        RiskSettings(max_signal_staleness_s=4, max_pipeline_lag_s=2.5),
        AlpacaSettings(),
        read_delay=read_delay,
    )
    assert explicit.max_signal_staleness == timedelta(seconds=4)
    assert explicit.max_pipeline_lag == timedelta(seconds=2.5)


def test_a_signal_older_than_the_derived_bound_is_rejected_as_stale() -> None:
    limits = dataclasses.replace(LIMITS, max_signal_staleness=timedelta(seconds=10.5))
    fresh = dataclasses.replace(CTX, now=T0 + timedelta(seconds=10))
    stale = dataclasses.replace(CTX, now=T0 + timedelta(seconds=11))
    assert RiskCheck.SIGNAL_STALE not in evaluate(decision(), limits, fresh).codes
    assert evaluate(decision(), limits, stale).codes == {RiskCheck.SIGNAL_STALE}


def test_runtime_kill_switch_rejects_with_its_reason() -> None:
    ctx = dataclasses.replace(CTX, kill_switch_reason="kill switch engaged (api): incident 42")
    verdict = evaluate(decision(), LIMITS, ctx)
    assert verdict.codes == {RiskCheck.KILL_SWITCH}
    assert "incident 42" in verdict.reasons[0].detail


def test_pipeline_lag_halts_past_its_bound_and_clears_under_80_percent_of_it() -> None:
    lag = PipelineLag(timedelta(seconds=2))
    ages = (0.5, 2.0, 2.5, 7.0, 1.9, 1.6, 0.1, 3.0)
    seen = [lag.observe(T0 + timedelta(seconds=s), T0) for s in ages]
    assert seen == [None, None, LagChange.HALT, None, None, LagChange.CLEAR, None, LagChange.HALT]
    assert lag.detail() == "lag 3.000s > 2s"


def test_the_read_delay_is_ta_lateness_plus_insert_batch_plus_settle() -> None:
    ta, ch = TaSettings(), ClickHouseSettings(dsn="chdb:///unused")
    # final rows are read at once by default (no settle horizon) ...
    assert signal_read_delay(TradingSettings(), ta, ch) == timedelta(seconds=2 + 1)
    # ... and a configured settle horizon adds to it
    settled = TradingSettings(signal_settle_s=4)
    assert signal_read_delay(settled, ta, ch) == timedelta(seconds=2 + 1 + 4)
