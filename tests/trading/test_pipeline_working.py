"""The trading pipeline counts the orders that may still fill: one open at the broker from an
earlier batch, and one approved earlier in the same batch (not sent yet) — on the in-memory
store and on the SQL stores (SQLite, real Postgres), against the paper book, which has no quote
to fill the market orders against, so they rest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec

from tests.helpers import wait_until
from tests.trading.conftest import MACD_RSI, T0, decision, row
from torghut.config import AlpacaSettings, LlmSettings, RiskSettings
from torghut.sim.quotes import StaticQuotes
from trading.adapters.memory_store import MemoryStore
from trading.adapters.paper_book import PaperBookBroker
from trading.adapters.store import TradingStore
from trading.core.clock import SimulatedClock
from trading.core.decisions import DecisionStatus
from trading.core.executor import OrderExecutor
from trading.core.llm import DecisionReview
from trading.core.pipeline import Decided, TradingPipeline
from trading.core.ports import BrokerOrder, DecisionStore, ProviderReply, ReviewRequest
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


class _AnswersFromBeforeALaneSent(PaperBookBroker):
    """Lists the open orders, then runs ``during_read`` (once, on the worker's thread) before
    answering: a review lane sends an order while the worker's read is on its way back."""

    def __init__(self, clock: SimulatedClock) -> None:
        super().__init__(StaticQuotes({}), clock)
        self.during_read: Callable[[], None] | None = None
        self._worker = threading.get_ident()

    def open_orders(self) -> Sequence[BrokerOrder]:
        listed = super().open_orders()
        hook = self.during_read
        if hook is not None and threading.get_ident() == self._worker:
            self.during_read = None
            hook()
        return listed


class _GatedReviewer:
    """Approves each symbol's decisions once that symbol's gate is opened."""

    model = "test/gated"

    def __init__(self) -> None:
        self.gates = {s: threading.Event() for s in ("AAPL", "MSFT", "NVDA")}

    def review(self, request: ReviewRequest) -> ProviderReply:
        assert self.gates[request.symbol].wait(30), "gate never opened"
        return ProviderReply(self.model, '{"verdict":"approve","confidence":1,"reason":"ok"}', 0)


def test_an_order_a_review_lane_sent_during_the_workers_read_counts_toward_its_limits() -> None:
    """The worker reads the broker before taking the reconciler's lock; a lane that approves
    and sends an order in between is missing from that read. The worker must read again, or a
    decision it concludes itself (here one refused by the full lanes, which the paper fallback
    passes) is checked without that order: two buys of 1,000 under a 1,500 limit both sent."""
    clock = SimulatedClock(T0)
    store = MemoryStore(clock)
    limits = RiskLimits.from_settings(
        MACD_RSI,
        RiskSettings(symbol_cooldown_s=0, max_position_per_symbol=Decimal(1_500)),
        AlpacaSettings(symbols=("AAPL", "MSFT", "NVDA")),
        read_delay=timedelta(0),
    )
    broker = _AnswersFromBeforeALaneSent(clock)
    reviewer = _GatedReviewer()
    llm = LlmSettings(enabled=True, shadow=False, fallback="pass", max_concurrency=1, max_pending=2)
    pipeline = TradingPipeline(
        store,
        broker,
        OrderExecutor(store, broker, clock, max_intent_age=limits.max_signal_staleness),
        clock,
        limits=limits,
        review=DecisionReview(reviewer, llm, live=False, clock=clock),
        cursor_source="lane-race",
    )

    def decided(i: int, symbol: str) -> Decided:
        ts = T0 + timedelta(seconds=i)
        row_i = msgspec.structs.replace(row(i, symbol, close=100.0), event_ts=ts)
        return Decided(row_i, (decision(symbol=symbol, event_ts=ts),))

    def aapl_sent_meanwhile() -> None:
        reviewer.gates["AAPL"].set()
        wait_until(
            lambda: [o.symbol for o in PaperBookBroker.open_orders(broker)] == ["AAPL"],
            timeout=10,
            message="the lane never sent AAPL's first order",
        )

    try:
        # AAPL's first buy waits for its review on the only lane; NVDA's waits behind it
        assert pipeline.process([decided(0, "AAPL"), decided(0, "NVDA")]) == []
        broker.during_read = aapl_sent_meanwhile
        clock.set(T0 + timedelta(seconds=1))
        # MSFT takes the last place in the lanes (or finds them full); AAPL's second buy finds
        # them full: the paper fallback passes it, and the worker concludes it with its view
        outcomes = pipeline.process([decided(1, "MSFT"), decided(1, "AAPL")])
        assert broker.during_read is None, "the worker read the broker's open orders"
        second = [o for o in outcomes if o.symbol == "AAPL"]
        assert [o.execution for o in second] == [None], "not sent"
        with store.unit_of_work() as uow:
            stored = uow.get_decision(
                decision(symbol="AAPL", event_ts=T0 + timedelta(seconds=1)).decision_hash
            )
        assert stored is not None
        assert stored.status is DecisionStatus.REJECTED
        (reason,) = stored.risk_reasons
        assert reason.code is RiskCheck.MAX_POSITION_PER_SYMBOL
        assert reason.detail.endswith("(0 held, +10 working)"), reason.detail
    finally:
        for gate in reviewer.gates.values():
            gate.set()
        assert pipeline.drain(10)
        pipeline.close()
    assert [o.symbol for o in broker.open_orders()].count("AAPL") == 1
