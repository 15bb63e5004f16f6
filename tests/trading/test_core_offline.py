"""The trading core runs with no network and no database: the live pipeline (decide → risk →
record → submit → reconcile) on simulated time, the in-memory store and the paper matching
engine in process — what a backtest drives.

Why an audit hook and not a mock: Python reports every socket connect/bind and SQLite open as
an audit event; the test records them while the pipeline runs and asserts there were none, so
nothing is replaced and a stray connection anywhere below would fail it.
"""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.trading.conftest import MACD_RSI, T0, aapl_limits, decision, row
from torghut.sim.quotes import StaticQuotes, Touch
from trading.adapters.memory_store import MemoryStore
from trading.adapters.paper_book import PaperBookBroker
from trading.core.adjudicate import Adjudication
from trading.core.clock import SimulatedClock
from trading.core.decisions import DecisionStatus
from trading.core.executor import OrderExecutor
from trading.core.orders import OrderStatus
from trading.core.pipeline import Decider, DeciderState, DecisionOutcome, TradingPipeline
from trading.core.reconcile import Reconciler
from trading.core.risk import RiskCheck, RiskReason, RiskVerdict
from trading.core.strategies import build_strategies

_WATCHING = threading.Event()
_SEEN: list[tuple[str, str]] = []
_OUTSIDE = {"socket.connect", "socket.bind", "socket.getaddrinfo", "sqlite3.connect"}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _WATCHING.is_set() and event in _OUTSIDE:
        _SEEN.append((event, repr(args)[:200]))


sys.addaudithook(_audit)


def replay(seconds: int) -> tuple[MemoryStore, list[DecisionOutcome], PaperBookBroker]:
    """MACD crosses on every row after the first (buy, sell, buy, ...) for AAPL at ~100."""
    limits = aapl_limits()
    clock = SimulatedClock(T0)
    quotes = StaticQuotes({})
    store = MemoryStore(clock)
    broker = PaperBookBroker(quotes, clock)
    executor = OrderExecutor(store, broker, clock, max_intent_age=limits.max_signal_staleness)
    pipeline = TradingPipeline(
        store, broker, executor, clock, limits=limits, review=None, cursor_source="replay"
    )
    reconciler = Reconciler(store, broker, executor, clock, interval_s=60, halt_on_drift=True)
    decider = Decider(build_strategies(MACD_RSI))
    state: DeciderState | None = None
    outcomes: list[DecisionOutcome] = []
    for i in range(seconds):
        close = 100.0 + i * 0.01
        signal = row(i, macd=1.5 if i % 2 else 0.5, macd_signal=1.0, rsi14=50.0, close=close)
        clock.set(signal.event_ts)
        quotes.set("AAPL", Touch(close - 0.005, 1000, close + 0.005, 1000, signal.event_ts))
        broker.book.on_quote("AAPL")
        state, decided = decider.decide(state, signal)
        outcomes.extend(pipeline.process([decided]))
    clock.advance(timedelta(seconds=1))
    report = reconciler.reconcile_once()
    assert report.in_sync, report
    return store, outcomes, broker


@pytest.fixture
def no_outside_world() -> Any:
    _SEEN.clear()
    _WATCHING.set()
    yield _SEEN
    _WATCHING.clear()


def test_the_pipeline_trades_and_reconciles_with_no_network_and_no_database(
    no_outside_world: list[tuple[str, str]],
) -> None:
    store, outcomes, broker = replay(9)
    assert no_outside_world == []
    decisions = store.decisions()
    assert [d.side for d in decisions] == ["buy", "sell"] * 4
    assert {d.status for d in decisions} == {DecisionStatus.SUBMITTED}
    assert [o.execution for o in outcomes] == ["submitted"] * 8
    executions = store.executions()
    assert {e.status for e in executions} == {OrderStatus.FILLED}
    assert all(e.reconciled_at == T0 + timedelta(seconds=9) for e in executions)
    # Market orders fill at the touch: buys at the ask, sells at the bid.
    first_buy, first_sell = executions[0], executions[1]
    assert first_buy.filled_avg_price == Decimal("100.015")
    assert first_sell.filled_avg_price == Decimal("100.015")
    assert broker.positions() == []
    with store.unit_of_work() as uow:
        cursor = uow.load_cursor("replay")
    assert cursor is not None
    assert cursor.event_ts == T0 + timedelta(seconds=8)


def test_the_same_replay_stores_the_same_records() -> None:
    """Simulated time, derived ids and a seeded book: two replays are equal record for record
    (what makes a backtest reproducible)."""
    first, first_outcomes, _ = replay(7)
    second, second_outcomes, _ = replay(7)
    assert first.decisions() == second.decisions()
    assert first.executions() == second.executions()
    assert first_outcomes == second_outcomes
    order_id = first.executions()[0].alpaca_order_id
    assert first.order_events(order_id) == second.order_events(order_id)


def test_the_memory_store_is_transactional_and_finds_recent_orders_newest_first() -> None:
    clock = SimulatedClock(T0)
    store = MemoryStore(clock)
    approved, rejected = RiskVerdict(()), RiskVerdict((RiskReason(RiskCheck.KILL_SWITCH, "on"),))
    made = []
    for i, risk in enumerate((approved, approved, rejected, approved)):
        clock.set(T0 + timedelta(seconds=10 * i))
        d = decision(event_ts=T0 + timedelta(seconds=i), symbol=f"S{i}")
        with store.unit_of_work() as uow:
            uow.record_decision(Adjudication.of(d, risk=risk))
            uow.commit()
        made.append(d)
    with store.unit_of_work() as uow:
        uow.record_submit_failure(made[3].decision_hash, "blocked: kill switch")
        # Seen inside the unit of work at once ...
        recent = uow.recent_orders(T0 + timedelta(seconds=5))
        assert [r.symbol for r in recent] == ["S1"]
        late = decision(event_ts=T0 + timedelta(seconds=9), symbol="S9")
        clock.set(T0 + timedelta(seconds=40))
        uow.record_decision(Adjudication.of(late, risk=approved))
        assert [r.symbol for r in uow.recent_orders(T0)] == ["S9", "S1", "S0"]
    # ... and gone when it ends without a commit.
    with store.unit_of_work() as uow:
        assert [r.symbol for r in uow.recent_orders(T0)] == ["S3", "S1", "S0"]
        assert uow.get_decision(late.decision_hash) is None
    assert [d.symbol for d in store.decisions()] == ["S0", "S1", "S2", "S3"]
