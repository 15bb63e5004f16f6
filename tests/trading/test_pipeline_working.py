"""The trading pipeline counts the orders that may still fill: one open at the broker from an
earlier batch, and one approved earlier in the same batch (not sent yet) — on the in-memory
store and on the SQL stores (SQLite, real Postgres), against the paper book, which has no quote
to fill the market orders against, so they rest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

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
from trading.core.ports import (
    BrokerOrder,
    BrokerRejected,
    BrokerUnavailable,
    DecisionStore,
    ProviderReply,
    ReviewRequest,
)
from trading.core.risk import RiskCheck, RiskLimits, RiskReason


def _pipeline(
    store: DecisionStore,
    broker: PaperBookBroker,
    clock: SimulatedClock,
    *,
    review: DecisionReview | None = None,
    **risk: Any,
) -> TradingPipeline:
    """The pipeline over ``broker`` and ``store``: AAPL, MSFT and NVDA at most 1,500 each
    (one buy of 10 at 100 is 1,000), no cooldown nor read delay; ``risk`` overrides."""
    limits = RiskLimits.from_settings(
        MACD_RSI,
        RiskSettings(**{"symbol_cooldown_s": 0, "max_position_per_symbol": Decimal(1_500), **risk}),
        AlpacaSettings(symbols=("AAPL", "MSFT", "NVDA")),
        read_delay=timedelta(0),
    )
    executor = OrderExecutor(store, broker, clock, max_intent_age=limits.max_signal_staleness)
    return TradingPipeline(
        store, broker, executor, clock, limits=limits, review=review, cursor_source="working"
    )


def _decided(at: datetime, i: int, symbol: str) -> Decided:
    """Row ``i`` of ``symbol`` at ``at`` (close 100) with its buy of 10."""
    row_i = msgspec.structs.replace(row(i, symbol, close=100.0), event_ts=at)
    return Decided(row_i, (decision(symbol=symbol, event_ts=at),))


def _reasons(store: DecisionStore, at: datetime, symbol: str) -> list[RiskReason]:
    """Why ``symbol``'s buy at ``at`` was rejected (it must have been)."""
    with store.unit_of_work() as uow:
        stored = uow.get_decision(decision(symbol=symbol, event_ts=at).decision_hash)
    assert stored is not None
    assert stored.status is DecisionStatus.REJECTED
    return list(stored.risk_reasons)


def test_resting_and_same_batch_orders_count_toward_the_limits(store: TradingStore) -> None:
    # the SQL store stamps orders with the database's clock: the simulated one starts there
    _run(store, SimulatedClock(datetime.now(UTC)))


def test_the_memory_store_counts_them_alike() -> None:
    clock = SimulatedClock(T0)
    _run(MemoryStore(clock), clock)


def _run(store: DecisionStore, clock: SimulatedClock) -> None:
    t0 = clock.now()
    broker = PaperBookBroker(StaticQuotes({}), clock)
    pipeline = _pipeline(store, broker, clock, max_gross_exposure=Decimal(2_500))

    def at(i: int) -> datetime:
        return t0 + timedelta(seconds=i)

    def batch(i: int, *symbols: str) -> list[tuple[str, str | None]]:
        """Buy 10 at 100 of each symbol on row ``i``, one batch: per decision its symbol and
        what became of its order (``None``: no order)."""
        clock.set(at(i))
        items = [_decided(at(i), i, s) for s in symbols]
        return [(o.symbol, o.execution) for o in pipeline.process(items)]

    def rejected(i: int, symbol: str) -> list[tuple[RiskCheck, str]]:
        return [(r.code, r.detail) for r in _reasons(store, at(i), symbol)]

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
    broker = _AnswersFromBeforeALaneSent(clock)
    reviewer = _GatedReviewer()
    llm = LlmSettings(enabled=True, shadow=False, fallback="pass", max_concurrency=1, max_pending=2)
    review = DecisionReview(reviewer, llm, live=False, clock=clock)
    pipeline = _pipeline(store, broker, clock, review=review)

    def decided(i: int, symbol: str) -> Decided:
        return _decided(T0 + timedelta(seconds=i), i, symbol)

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
        (reason,) = _reasons(store, T0 + timedelta(seconds=1), "AAPL")
        assert reason.code is RiskCheck.MAX_POSITION_PER_SYMBOL
        assert reason.detail.endswith("(0 held, +10 working)"), reason.detail
    finally:
        for gate in reviewer.gates.values():
            gate.set()
        assert pipeline.drain(10)
        pipeline.close()
    assert [o.symbol for o in broker.open_orders()].count("AAPL") == 1


class _FailingOpenOrders(PaperBookBroker):
    """Its open-orders read fails the next ``failures`` times, with ``error``."""

    def __init__(self, clock: SimulatedClock) -> None:
        super().__init__(StaticQuotes({}), clock)
        self.failures = 0
        self.error: Exception = BrokerUnavailable("timed out")

    def open_orders(self) -> Sequence[BrokerOrder]:
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().open_orders()


def test_an_open_orders_read_that_times_out_is_retried_and_still_counts_the_orders() -> None:
    """The open orders are read with the account and positions, all again after a brief pause
    when the broker cannot be reached (the pauses on the pipeline's clock): after two timeouts
    the decision still sees the order resting from the batch before."""
    clock = SimulatedClock(T0)
    store = MemoryStore(clock)
    broker = _FailingOpenOrders(clock)
    pipeline = _pipeline(store, broker, clock)
    assert [o.execution for o in pipeline.process([_decided(T0, 0, "AAPL")])] == ["submitted"]
    at = T0 + timedelta(seconds=1)
    clock.set(at)
    broker.failures = 2
    assert [o.execution for o in pipeline.process([_decided(at, 1, "AAPL")])] == [None]
    assert broker.failures == 0
    assert clock.now() - at == timedelta(seconds=1.5), "paused 0.5 s, then 1 s"
    ((code, detail),) = [(r.code, r.detail) for r in _reasons(store, at, "AAPL")]
    assert code is RiskCheck.MAX_POSITION_PER_SYMBOL
    assert detail.endswith("(0 held, +10 working)"), detail
    assert len(broker.open_orders()) == 1


def test_a_broker_refusing_the_open_orders_read_rejects_new_decisions_and_sends_nothing() -> None:
    """A refusal (a 401 after a key rotation) is not retried: every new decision of the batch
    is rejected as halted, saying which reads were refused, and nothing is sent."""
    clock = SimulatedClock(T0)
    store = MemoryStore(clock)
    broker = _FailingOpenOrders(clock)
    pipeline = _pipeline(store, broker, clock)
    broker.error = BrokerRejected("401: request is not authorized", status=401)
    broker.failures = 1
    outcomes = pipeline.process([_decided(T0, 0, "AAPL"), _decided(T0, 0, "MSFT")])
    assert [(o.symbol, o.execution) for o in outcomes] == [("AAPL", None), ("MSFT", None)]
    for symbol in ("AAPL", "MSFT"):
        ((code, detail),) = [(r.code, r.detail) for r in _reasons(store, T0, symbol)]
        assert code is RiskCheck.TRADING_HALTED
        assert "(open orders, account, positions, clock)" in detail, detail
        assert "401" in detail, detail
    assert broker.open_orders() == []
    # the next batch reads the broker again: trading goes on once it answers
    at = T0 + timedelta(seconds=1)
    clock.set(at)
    assert [o.execution for o in pipeline.process([_decided(at, 1, "AAPL")])] == ["submitted"]
