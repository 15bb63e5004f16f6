"""The trading pipeline counts the orders that may still fill: one open at the broker from an
earlier batch, and one approved earlier in the same batch (not sent yet) — on the in-memory
store and on the SQL stores (SQLite, real Postgres), against the paper book, which has no quote
to fill the market orders against, so they rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec

from tests.trading.conftest import MACD_RSI, T0, decision, row
from torghut.config import AlpacaSettings, RiskSettings
from torghut.sim.quotes import StaticQuotes
from trading.adapters.memory_store import MemoryStore
from trading.adapters.paper_book import PaperBookBroker
from trading.adapters.store import TradingStore
from trading.core.clock import SimulatedClock
from trading.core.decisions import DecisionStatus
from trading.core.executor import OrderExecutor
from trading.core.pipeline import Decided, TradingPipeline
from trading.core.ports import DecisionStore
from trading.core.risk import RiskCheck, RiskLimits


def test_resting_and_same_batch_orders_count_toward_the_limits(store: TradingStore) -> None:
    # the SQL store stamps orders with the database's clock: the simulated one starts there
    _run(store, SimulatedClock(datetime.now(UTC)))


def test_the_memory_store_counts_them_alike() -> None:
    clock = SimulatedClock(T0)
    _run(MemoryStore(clock), clock)


def _run(store: DecisionStore, clock: SimulatedClock) -> None:
    t0 = clock.now()
    limits = RiskLimits.from_settings(
        MACD_RSI,
        RiskSettings(
            symbol_cooldown_s=0,
            max_position_per_symbol=Decimal(1_500),
            max_gross_exposure=Decimal(2_500),
        ),
        AlpacaSettings(symbols=("AAPL", "MSFT", "NVDA")),
        read_delay=timedelta(0),
    )
    broker = PaperBookBroker(StaticQuotes({}), clock)
    executor = OrderExecutor(store, broker, clock, max_intent_age=limits.max_signal_staleness)
    pipeline = TradingPipeline(
        store, broker, executor, clock, limits=limits, review=None, cursor_source="working"
    )

    def at(i: int) -> datetime:
        return t0 + timedelta(seconds=i)

    def batch(i: int, *symbols: str) -> list[tuple[str, str | None]]:
        """Buy 10 at 100 of each symbol on row ``i``, one batch: per decision its symbol and
        what became of its order (``None``: no order)."""
        clock.set(at(i))
        items = [
            Decided(
                msgspec.structs.replace(row(i, s, close=100.0), event_ts=at(i)),
                (decision(symbol=s, event_ts=at(i)),),
            )
            for s in symbols
        ]
        return [(o.symbol, o.execution) for o in pipeline.process(items)]

    def rejected(i: int, symbol: str) -> list[tuple[RiskCheck, str]]:
        with store.unit_of_work() as uow:
            stored = uow.get_decision(decision(symbol=symbol, event_ts=at(i)).decision_hash)
        assert stored is not None
        assert stored.status is DecisionStatus.REJECTED
        return [(r.code, r.detail) for r in stored.risk_reasons]

    assert batch(0, "AAPL") == [("AAPL", "submitted")]
    assert len(broker.open_orders()) == 1, "no touch: the order rests"
    # 10 resting + 10 more = 2,000 of AAPL > 1,500, though nothing is held yet
    assert batch(1, "AAPL") == [("AAPL", None)]
    ((code, detail),) = rejected(1, "AAPL")
    assert code is RiskCheck.MAX_POSITION_PER_SYMBOL
    assert detail.endswith("(0 held, +10 working)")
    # one batch: MSFT takes gross to 2,000 with AAPL's resting order; NVDA would be 3,000
    assert batch(2, "MSFT", "NVDA") == [("MSFT", "submitted"), ("NVDA", None)]
    ((code, detail),) = rejected(2, "NVDA")
    assert code is RiskCheck.MAX_GROSS_EXPOSURE
    assert Decimal(detail.split()[2]) == 3000, detail  # AAPL's at its last close, 100
