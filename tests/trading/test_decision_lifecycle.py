"""The decision lifecycle belongs to the domain: the first status comes from the adjudication,
every later change goes through the transition table, and the stores (SQL and in memory) only
record what the domain decided — the reviewed quantity is never re-derived from the review."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import msgspec
import pytest

from tests.trading.conftest import T0, decision
from trading.adapters.memory_store import MemoryStore
from trading.adapters.store import TradingStore, create_engine
from trading.core.adjudicate import Adjudication
from trading.core.clock import SimulatedClock
from trading.core.decisions import (
    TERMINAL,
    TRANSITIONS,
    DecisionStatus,
    InvalidDecisionTransition,
    check_transition,
    initial_status,
)
from trading.core.llm import ReviewOutcome
from trading.core.llm.policy import EffectiveVerdict
from trading.core.orders import OrderStatus
from trading.core.ports import BrokerOrder, DecisionStore, StoreUnavailable
from trading.core.risk import RiskCheck, RiskReason, RiskVerdict

S = DecisionStatus
APPROVED = RiskVerdict(())
REJECTED = RiskVerdict((RiskReason(RiskCheck.MARKET_CLOSED, "market closed"),))


def _review(verdict: EffectiveVerdict, qty: Decimal) -> ReviewOutcome:
    return ReviewOutcome(
        model="m",
        prompt_version="v1",
        verdict=verdict,
        effective_verdict=verdict,
        confidence=0.9,
        adjusted_qty=qty if verdict == "adjust" else None,
        effective_qty=qty,
        shadow=False,
        fallback=False,
        latency_ms=5,
    )


@pytest.fixture(params=["sql", "memory"])
def any_store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[DecisionStore]:
    if request.param == "memory":
        yield MemoryStore(SimulatedClock(T0))
        return
    store = TradingStore.open(sqlite_url)
    yield store
    store.close()


def test_the_first_status_comes_from_the_adjudication() -> None:
    d = decision()
    assert initial_status(Adjudication.of(d, risk=APPROVED)) is S.PENDING_SUBMIT
    assert initial_status(Adjudication.of(d, risk=REJECTED)) is S.REJECTED
    veto = _review("veto", Decimal(0))
    assert initial_status(Adjudication.of(d, risk=None, review=veto)) is S.VETOED
    with pytest.raises(ValueError, match="risk must be evaluated"):
        initial_status(Adjudication.of(d, risk=None))


def test_only_an_intent_moves_and_only_to_submitted_or_failed() -> None:
    assert TRANSITIONS[S.PENDING_SUBMIT] == {S.SUBMITTED, S.SUBMIT_FAILED}
    assert frozenset(S) - {S.PENDING_SUBMIT} == TERMINAL
    for status_from in S:
        for status_to in S:
            if status_to in TRANSITIONS[status_from]:
                check_transition("h", status_from, status_to)
            else:
                with pytest.raises(InvalidDecisionTransition):
                    check_transition("h", status_from, status_to)


def test_the_store_records_the_adjudicated_quantity_and_status(any_store: DecisionStore) -> None:
    d = decision()
    shrunk = _review("adjust", Decimal(4))
    adjudicated = Adjudication.of(d, risk=APPROVED, review=shrunk)
    # Whatever the review says, the store keeps what adjudication concluded.
    concluded = msgspec.structs.replace(
        adjudicated, final=msgspec.structs.replace(d, qty=Decimal(3))
    )
    with any_store.unit_of_work() as uow:
        stored = uow.record_decision(concluded)
        uow.commit()
    assert (stored.status, stored.qty, stored.created) == (S.PENDING_SUBMIT, Decimal(3), True)


def test_a_change_outside_the_table_is_refused_by_either_store(any_store: DecisionStore) -> None:
    d = decision()
    with any_store.unit_of_work() as uow:
        uow.record_decision(Adjudication.of(d, risk=APPROVED))
        uow.record_submission(
            BrokerOrder(
                id="order-1",
                client_order_id=d.decision_hash,
                symbol="AAPL",
                side="buy",
                qty=Decimal(10),
                status=OrderStatus.NEW,
                filled_qty=Decimal(0),
                filled_avg_price=None,
                submitted_at=T0,
                updated_at=T0 + timedelta(seconds=1),
            )
        )
        uow.commit()
    with any_store.unit_of_work() as uow:
        stored = uow.get_decision(d.decision_hash)
        assert stored is not None
        assert stored.status is S.SUBMITTED
        with pytest.raises(InvalidDecisionTransition, match="submitted -> submit_failed"):
            uow.record_submit_failure(d.decision_hash, "too late: the broker has the order")
    rejected = decision(event_ts=T0 + timedelta(seconds=1))
    with any_store.unit_of_work() as uow:
        uow.record_decision(Adjudication.of(rejected, risk=REJECTED))
        uow.commit()
    with (
        any_store.unit_of_work() as uow,
        pytest.raises(InvalidDecisionTransition, match="rejected -> submit_failed"),
    ):
        uow.record_submit_failure(rejected.decision_hash, "never an order")


def test_a_store_that_cannot_be_reached_raises_the_ports_error() -> None:
    """SQLAlchemy's errors never leave the adapter: the core sees ``StoreUnavailable``."""
    unreachable = TradingStore(
        create_engine("postgresql+psycopg://u:p@127.0.0.1:1/none?connect_timeout=2")
    )
    try:
        with (
            pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"),
            unreachable.unit_of_work() as uow,
        ):
            uow.get_decision("h")
        with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
            unreachable.controls.state()
    finally:
        unreachable.close()
