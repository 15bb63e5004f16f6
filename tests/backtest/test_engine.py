"""The replay on synthetic price paths whose trades, fees and PnL are worked out by hand."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import msgspec
import pytest

from tests.backtest.helpers import T0, band_config, band_rows
from trading.backtest.config import FillConfig
from trading.backtest.engine import Backtest
from trading.backtest.report import encode_report, report_of
from trading.backtest.review import RecordedVerdict, offline_review
from trading.core.clock import SimulatedClock

# close 100 (flat) → 94 (< lower band: buy) → 96 → 101 (≥ middle band: sell) → 102
CLOSES = [100.0, 94.0, 96.0, 101.0, 102.0]


def test_next_bar_fills_with_slippage_and_fees_by_hand() -> None:
    replay = Backtest(band_config()).run(band_rows(CLOSES))
    buy, sell = replay.ledger.trades
    # The buy decided at 94 reaches the book with the next bar: 96 + 10 bps = 96.096.
    assert (buy.ts, buy.side, buy.qty, buy.price) == (
        T0 + timedelta(seconds=2),
        "buy",
        Decimal(10),
        Decimal("96.096"),
    )
    # fee: 10 × 0.01 + 960.96 × 1 bp = 0.196096 → 0.20
    assert buy.fee == Decimal("0.20")
    assert buy.profit is None
    # The sell decided at 101 fills at the next close 102 − 10 bps = 101.898; fee 0.20.
    assert (sell.ts, sell.side, sell.price, sell.fee) == (
        T0 + timedelta(seconds=4),
        "sell",
        Decimal("101.898"),
        Decimal("0.20"),
    )
    # (101.898 − 96.096) × 10 − 0.20 − 0.20 = 57.62
    assert sell.profit == Decimal("57.620")
    assert replay.ledger.equity[-1] == Decimal("100057.620")
    assert replay.fees == Decimal("0.40")
    assert [d.status for d in replay.decisions] == ["approved", "approved"]
    report = report_of(replay, code_version="test")
    overall = report["metrics"]["overall"]
    assert overall.trades == 1
    assert overall.win_rate == 1.0
    assert overall.pnl == pytest.approx(57.62)
    assert overall.total_return == pytest.approx(57.62 / 100_000)
    # marked at the close: after the buy at t2, 10 × 96 − 960.96 − 0.20 = −1.16
    assert replay.ledger.equity[3] == Decimal("99998.840")
    assert overall.max_drawdown == pytest.approx(-1.16 / 100_000)


def test_touch_fills_at_the_quote_with_slippage_and_fees_by_hand() -> None:
    quotes = [(99.9, 100.1), (93.9, 94.1), (95.9, 96.1), (100.9, 101.1), (101.9, 102.1)]
    config = band_config(
        fill=FillConfig(
            model="touch",
            slippage_bps=Decimal(10),
            fee_per_share=Decimal("0.01"),
            fee_bps=Decimal(1),
        )
    )
    replay = Backtest(config).run(band_rows(CLOSES, quotes=quotes))
    buy, sell = replay.ledger.trades
    # buy at once at the ask 94.1 + 10 bps = 94.1941; fee 0.10 + 0.0941941 → 0.19
    assert (buy.ts, buy.price, buy.fee) == (
        T0 + timedelta(seconds=1),
        Decimal("94.1941"),
        Decimal("0.19"),
    )
    # sell at the bid 100.9 − 10 bps = 100.7991; fee 0.10 + 0.1007991 → 0.20
    assert (sell.ts, sell.price, sell.fee) == (
        T0 + timedelta(seconds=3),
        Decimal("100.7991"),
        Decimal("0.20"),
    )
    # (100.7991 − 94.1941) × 10 − 0.19 − 0.20 = 65.66
    assert sell.profit == Decimal("65.660")
    assert replay.ledger.equity[-1] == Decimal("100065.660")


def test_risk_rejections_are_counted_by_reason() -> None:
    # One order a minute: the sell 2 s after the buy is refused (the position stays open).
    config = band_config(risk={"symbol_cooldown_s": 0, "max_orders_per_minute": 1})
    replay = Backtest(config).run(band_rows(CLOSES))
    assert [d.status for d in replay.decisions] == ["approved", "rejected"]
    assert replay.decisions[1].reasons == ("max_orders_per_minute",)
    assert replay.rejections == {"max_orders_per_minute": 1}
    assert replay.rejections_by_symbol == {"AAA": {"max_orders_per_minute": 1}}
    assert len(replay.ledger.trades) == 1
    # the cooldown (60 s by default) refuses it too, both reasons counted
    both = Backtest(band_config(risk={"max_orders_per_minute": 1})).run(band_rows(CLOSES))
    assert both.rejections == {"max_orders_per_minute": 1, "symbol_cooldown": 1}


def test_the_same_rows_give_byte_identical_reports() -> None:
    rows = band_rows([100.0, 94.0, 96.0, 101.0, 102.0, 93.0, 92.0, 100.5, 99.0] * 20)
    config = band_config(risk={"symbol_cooldown_s": 0}, curve_period_s=5)
    first = encode_report(report_of(Backtest(config).run(rows), code_version="abc"))
    second = encode_report(report_of(Backtest(config).run(rows), code_version="abc"))
    assert first == second
    doc = msgspec.json.decode(first)
    assert doc["inputs"]["config_digest"] == config.digest()
    assert doc["inputs"]["strategies"]["bollinger_reversion"]["version"] == "1"
    assert doc["inputs"]["code_version"] == "abc"
    assert doc["summary"]["decisions"] > 10


def test_recorded_verdicts_replay_through_the_live_policy() -> None:
    """A recorded veto vetoes (not in shadow mode); a decision without a recorded verdict gets
    the fallback; a decision risk rejects is never reviewed; the shadow evaluation scores the
    model's answers against the price path."""
    closes = [*CLOSES, 93.0, 92.0, 100.5, 101.0]
    config = band_config(review="recorded")
    probe = Backtest(band_config()).run(band_rows(closes))
    buy1, sell1, buy2, sell2 = (d.decision_hash for d in probe.decisions)
    veto = '{"verdict":"veto","confidence":0.9,"reason":"falling knife"}'
    recorded = {buy1: RecordedVerdict("m1", veto, None)}
    clock = SimulatedClock(config.start)
    review, model = offline_review(
        config, recorded, clock, llm={"shadow": False, "fallback": "pass"}
    )
    replay = Backtest(config, review=review, review_model=model, clock=clock).run(band_rows(closes))
    assert model == "m1"
    statuses = {d.decision_hash: (d.status, d.verdict) for d in replay.decisions}
    assert statuses[buy1] == ("vetoed", "veto")
    # no buy happened, so the strategy's exit sell would go short: refused before review
    assert statuses[sell1] == ("rejected", None)
    assert statuses[buy2] == ("approved", None)  # no verdict stored: fallback "pass"
    assert statuses[sell2] == ("approved", None)
    assert [t.side for t in replay.ledger.trades] == ["buy", "sell"]
    shadow = replay.shadow.summary()
    assert shadow.reviewed == 3
    assert shadow.veto_rate == pytest.approx(1 / 3)
    assert shadow.failed_rate == pytest.approx(2 / 3)
    # the vetoed buy at 94 would have gained (last close 101): the veto missed; the sell at
    # 100.5 lost 0.5 a share by the end, and the model (no answer) did not veto it
    assert shadow.losing == 1
    assert shadow.veto_precision == 0.0
    assert shadow.veto_recall == 0.0


def test_a_backtest_review_mode_needs_its_reviewer() -> None:
    with pytest.raises(ValueError, match="needs a matching reviewer"):
        Backtest(band_config(review="approve"))


def test_record_limit_bounds_the_lists_not_the_counts() -> None:
    full = Backtest(band_config()).run(band_rows(CLOSES))
    capped = Backtest(band_config(record_limit=1)).run(band_rows(CLOSES))
    assert len(capped.decisions) == 1
    assert len(capped.ledger.trades) == 1
    assert capped.statuses == full.statuses == {"approved": 2}
    assert capped.decision_digest == full.decision_digest
    assert capped.ledger.equity == full.ledger.equity


def test_the_environment_never_changes_a_backtest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings classes read ``RISK_*``/``TRADING_*``/``LLM_*`` variables; a backtest's
    configuration must be all it depends on."""
    before = encode_report(
        report_of(Backtest(band_config()).run(band_rows(CLOSES)), code_version="v")
    )
    monkeypatch.setenv("RISK_MAX_ORDERS_PER_MINUTE", "0")
    monkeypatch.setenv("TRADING_ORDER_QTY", "7")
    monkeypatch.setenv("TRADING_STRATEGIES", "macd_rsi")
    after = encode_report(
        report_of(Backtest(band_config()).run(band_rows(CLOSES)), code_version="v")
    )
    assert after == before


def test_a_limit_order_rests_until_a_touch_crosses_it() -> None:
    """A buy limit at the close (94.00) does not fill against the 94.10 ask; it rests in the
    book and fills at the first touch that crosses it (ask 93.90), two rows later."""
    quotes = [(99.9, 100.1), (93.9, 94.1), (94.5, 94.7), (93.8, 93.9), (94.0, 94.2)]
    config = band_config(
        fill=FillConfig(model="touch"),
        strategy_params={"bollinger_reversion": {"order_type": "limit"}},
    )
    replay = Backtest(config).run(band_rows([100.0, 94.0, 94.6, 93.85, 94.1], quotes=quotes))
    (buy,) = replay.ledger.trades
    assert (buy.ts, buy.side, buy.price) == (T0 + timedelta(seconds=3), "buy", Decimal("93.9"))
    assert [d.status for d in replay.decisions] == ["approved"]


def test_orders_waiting_for_their_next_bar_count_toward_the_limits() -> None:
    """AAA and BBB both fall below the band at t1: the AAA buy (940) waits for AAA's next row,
    and BBB's (940) would take gross exposure to 1,880 > 1,500 if both fill — refused, as the
    live pipeline refuses a second order approved in the same batch."""
    rows = sorted(
        band_rows(CLOSES) + band_rows(CLOSES, symbol="BBB"), key=lambda r: (r.event_ts, r.symbol)
    )
    config = band_config(
        symbols=("AAA", "BBB"), risk={"symbol_cooldown_s": 0, "max_gross_exposure": 1500}
    )
    replay = Backtest(config).run(rows)
    first = [(d.symbol, d.status, d.reasons) for d in replay.decisions[:2]]
    assert first == [("AAA", "approved", ()), ("BBB", "rejected", ("max_gross_exposure",))]
    assert [(t.symbol, t.side) for t in replay.ledger.trades] == [("AAA", "buy"), ("AAA", "sell")]
