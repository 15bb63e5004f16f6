"""The trading pipeline reads the broker's market clock again only when it may have changed:
at its next open or close, or after a minute — never a stale ``is_open`` across a close."""

from __future__ import annotations

from datetime import timedelta

from tests.trading.conftest import MACD_RSI, T0, aapl_limits, row
from torghut.sim.quotes import StaticQuotes, Touch
from trading.adapters.memory_store import MemoryStore
from trading.adapters.paper_book import PaperBookBroker
from trading.core.clock import SimulatedClock
from trading.core.executor import OrderExecutor
from trading.core.pipeline import Decider, DeciderState, DecisionOutcome, TradingPipeline
from trading.core.ports import ClockSnapshot
from trading.core.records import StoredDecision
from trading.core.risk import RiskCheck
from trading.core.strategies import build_strategies

CLOSE = T0 + timedelta(minutes=10)


class CountingBroker(PaperBookBroker):
    """The paper book with a market that closes at :data:`CLOSE`, counting the clock reads."""

    reads = 0

    def __init__(self, quotes: StaticQuotes, clock: SimulatedClock) -> None:
        super().__init__(quotes, clock)
        self._now = clock.now

    def clock(self) -> ClockSnapshot:
        self.reads += 1
        now = self._now()
        if now < CLOSE:
            return ClockSnapshot(now, True, CLOSE + timedelta(hours=17), CLOSE)
        return ClockSnapshot(now, False, CLOSE + timedelta(hours=17), CLOSE + timedelta(days=1))


def run(start_offset: timedelta, seconds: int) -> tuple[CountingBroker, list[StoredDecision]]:
    """A MACD cross every second for AAPL, one batch per second, from ``T0 + start_offset``."""
    limits = aapl_limits()
    clock = SimulatedClock(T0 + start_offset)
    quotes = StaticQuotes({})
    store = MemoryStore(clock)
    broker = CountingBroker(quotes, clock)
    executor = OrderExecutor(store, broker, clock, max_intent_age=limits.max_signal_staleness)
    pipeline = TradingPipeline(
        store, broker, executor, clock, limits=limits, review=None, cursor_source="clock"
    )
    decider = Decider(build_strategies(MACD_RSI))
    state: DeciderState | None = None
    outcomes: list[DecisionOutcome] = []
    first = int(start_offset.total_seconds())
    for i in range(first, first + seconds):
        signal = row(i, macd=1.5 if i % 2 else 0.5, macd_signal=1.0, rsi14=50.0, close=100.0)
        clock.set(signal.event_ts)
        quotes.set("AAPL", Touch(99.995, 1000, 100.005, 1000, signal.event_ts))
        state, decided = decider.decide(state, signal)
        outcomes.extend(pipeline.process([decided]))
    assert len(outcomes) == seconds - 1, "a cross every second after the first"
    return broker, store.decisions()


def test_one_clock_read_a_minute_while_nothing_changes() -> None:
    broker, decisions = run(timedelta(0), 150)
    assert len(decisions) == 149, "each needed the broker's view"
    assert broker.reads == 3, "read at 0 s, 60 s and 120 s"


def test_the_close_is_seen_at_once() -> None:
    close = CLOSE
    broker, decisions = run(close - T0 - timedelta(seconds=5), 10)
    before = [d for d in decisions if d.event_ts < close]
    after = [d for d in decisions if d.event_ts >= close]
    assert before
    assert after
    assert all(RiskCheck.MARKET_CLOSED not in _codes(o) for o in before)
    assert all(RiskCheck.MARKET_CLOSED in _codes(o) for o in after)
    assert broker.reads == 2, "the reading before the close, and one at the close"


def _codes(decision: StoredDecision) -> set[RiskCheck]:
    return {r.code for r in decision.risk_reasons}
