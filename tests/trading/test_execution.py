"""The executor against the paper broker through alpaca-py, on real Postgres: retries that meet
"client_order_id must be unique", errors after acceptance, refusals, and intent resolution."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from prometheus_client import REGISTRY

from tests.helpers import wait_until
from tests.trading.conftest import decision
from tests.trading.flow_fixtures import paper_broker
from torghut.config import AlpacaSettings
from torghut.sim.broker import BrokerSimulator
from trading.adapters.alpaca_broker import (
    AlpacaBroker,
    ClientTarget,
    build_trading_client,
    stream_url_for,
)
from trading.adapters.store import TradingStore
from trading.adapters.system_clock import SystemClock
from trading.core.adjudicate import Adjudication
from trading.core.decisions import DecisionStatus
from trading.core.executor import OrderExecutor, Outcome
from trading.core.orders import OrderStatus
from trading.core.ports import OrderRequest
from trading.core.records import StoredDecision
from trading.core.risk import RiskVerdict

__all__ = ["paper_broker"]

FRESH = timedelta(hours=1)
CLOCK = SystemClock()


@pytest.fixture
def store(pg_url: str) -> Iterator[TradingStore]:
    s = TradingStore.open(pg_url)
    yield s
    s.close()


@pytest.fixture
def broker(paper_broker: BrokerSimulator) -> AlpacaBroker:
    target = ClientTarget(paper=True, url=paper_broker.base_url)
    return AlpacaBroker(build_trading_client(target, AlpacaSettings()))


def _intent(store: TradingStore, *, age: timedelta = timedelta(0), qty: int = 3) -> StoredDecision:
    d = decision(event_ts=datetime.now(UTC) - age, qty=Decimal(qty))
    stored = store.record_decision(Adjudication.of(d, risk=RiskVerdict(())))
    assert stored.status is DecisionStatus.PENDING_SUBMIT
    return stored


def _status(store: TradingStore, h: str) -> DecisionStatus:
    with store.unit_of_work() as uow:
        d = uow.get_decision(h)
    assert d is not None
    return d.status


def test_a_retry_meeting_a_duplicate_id_fetches_the_existing_order(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    intent = _intent(store)
    paper_broker.faults.fail_next_submits(1, status=504, after_accept=True)
    result = OrderExecutor(store, broker, CLOCK, max_intent_age=FRESH).submit(intent)
    assert result.outcome is Outcome.SUBMITTED
    assert result.order is not None
    at_broker = [o for o in paper_broker.orders() if o.client_order_id == intent.decision_hash]
    assert len(at_broker) == 1
    assert result.order.id == str(at_broker[0].id)
    assert _status(store, intent.decision_hash) is DecisionStatus.SUBMITTED
    with store.unit_of_work() as uow:
        assert uow.get_execution(result.order.id) is not None


def test_an_error_after_acceptance_leaves_the_intent_then_resolve_adopts_it(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    intent = _intent(store)
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=FRESH)
    paper_broker.faults.fail_next_submits(1, status=500, after_accept=True)
    assert executor.submit(intent).outcome is Outcome.UNRESOLVED
    assert _status(store, intent.decision_hash) is DecisionStatus.PENDING_SUBMIT
    resolved = executor.resolve_pending()
    assert [r.outcome for r in resolved] == [Outcome.ADOPTED]
    assert len(paper_broker.orders()) == 1
    assert _status(store, intent.decision_hash) is DecisionStatus.SUBMITTED


def test_an_intent_the_broker_never_got_is_submitted_while_fresh(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    intent = _intent(store)
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=FRESH)
    paper_broker.faults.fail_next_submits(1, status=500, after_accept=False)
    assert executor.submit(intent).outcome is Outcome.UNRESOLVED
    assert paper_broker.orders() == []
    assert [r.outcome for r in executor.resolve_pending()] == [Outcome.SUBMITTED]
    assert [o.client_order_id for o in paper_broker.orders()] == [intent.decision_hash]
    assert executor.resolve_pending() == []


def test_a_stale_intent_the_broker_never_got_expires(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    intent = _intent(store, age=timedelta(hours=2))
    result = OrderExecutor(store, broker, CLOCK, max_intent_age=FRESH).resolve(intent)
    assert result.outcome is Outcome.EXPIRED
    assert paper_broker.orders() == []
    with store.unit_of_work() as uow:
        stored = uow.get_decision(intent.decision_hash)
    assert stored is not None
    assert stored.status is DecisionStatus.SUBMIT_FAILED
    assert (stored.status_detail or "").startswith("expired")


def test_a_definitive_refusal_is_recorded_as_submit_failed(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    intent = _intent(store, qty=1_000_000)
    result = OrderExecutor(store, broker, CLOCK, max_intent_age=FRESH).submit(intent)
    assert result.outcome is Outcome.REJECTED
    assert "403" in result.detail
    assert _status(store, intent.decision_hash) is DecisionStatus.SUBMIT_FAILED
    assert paper_broker.orders() == []


def test_adapter_reads_account_clock_and_signed_positions(
    broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    broker.submit(OrderRequest("short-1", "MSFT", "sell", Decimal(2), decision().order_type))
    wait_until(lambda: broker.positions(), timeout=5, message="no position")
    (position,) = broker.positions()
    assert position.symbol == "MSFT"
    assert position.qty == Decimal(-2)
    assert broker.account().equity > 0
    assert broker.clock().is_open
    assert broker.get_order_by_client_id("missing") is None
    assert stream_url_for(paper_broker.base_url) == paper_broker.stream_url
    assert (
        stream_url_for("https://paper-api.alpaca.markets")
        == "wss://paper-api.alpaca.markets/stream"
    )


def test_a_stale_observation_after_a_newer_one_writes_nothing(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    intent = _intent(store)
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=FRESH)
    accepted = executor.submit(intent).order
    assert accepted is not None
    wait_until(
        lambda: broker.get_order(accepted.id).status is OrderStatus.FILLED,
        timeout=5,
        message="fill",
    )
    filled = broker.get_order(accepted.id)
    assert executor.record(filled, event_type="poll")
    invalid_before = _invalid_transitions()
    stale = msgspec.structs.replace(
        filled,
        status=OrderStatus.NEW,
        filled_qty=Decimal(0),
        updated_at=filled.updated_at - timedelta(seconds=1),
    )
    assert not executor.record(stale, event_type="new")
    with store.unit_of_work() as uow:
        execution = uow.get_execution(accepted.id)
        events = uow.order_events(accepted.id)
    assert execution is not None
    assert execution.status is OrderStatus.FILLED
    assert [e.status_to for e in events][-1] is OrderStatus.FILLED
    assert _invalid_transitions() == invalid_before


def test_the_earlier_of_two_states_of_one_instant_is_stale_not_invalid(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    """The broker moves an order pending_new -> new at one timestamp; the submit response
    (pending_new) may be recorded after the stream's ``new``: skipped, no invalid transition."""
    intent = _intent(store)
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=FRESH)
    accepted = executor.submit(intent).order
    assert accepted is not None
    new = msgspec.structs.replace(
        accepted, status=OrderStatus.NEW, filled_qty=Decimal(0), filled_avg_price=None
    )
    executor.record(new, event_type="new")
    invalid_before = _invalid_transitions()
    earlier = msgspec.structs.replace(new, status=OrderStatus.PENDING_NEW)
    assert not executor.record(earlier, event_type="poll")
    assert _invalid_transitions() == invalid_before
    with store.unit_of_work() as uow:
        execution = uow.get_execution(accepted.id)
    assert execution is not None
    assert execution.status is not OrderStatus.PENDING_NEW


def _invalid_transitions() -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "torghut_order_invalid_transitions"
        for s in m.samples
        if s.name.endswith("_total")
    )
