"""Orders in the store: submission, state transitions appended as events through the state
machine, adoption after a crash, refusal of invalid transitions, the signal cursor and position
drift — on real Postgres and on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import msgspec
import pytest

from tests.trading.conftest import T0, decision
from trading.adapters.memory_store import MemoryStore
from trading.adapters.store import TradingStore, UnitOfWork
from trading.core.adjudicate import Adjudication
from trading.core.clock import SimulatedClock
from trading.core.decisions import DecisionStatus
from trading.core.orders import (
    INVALID_TRANSITIONS,
    InvalidOrderTransition,
    OrderStatus,
    Transition,
)
from trading.core.ports import BrokerOrder, DecisionStore, PositionSnapshot, SignalCursor
from trading.core.risk import RiskVerdict

S = OrderStatus
T = TypeVar("T")


def broker_order(client_order_id: str, **changes: object) -> BrokerOrder:
    base = BrokerOrder(
        id="0d8f3f1e-6a5b-4c1d-9b7e-3f2a1c0e9d11",
        client_order_id=client_order_id,
        symbol="AAPL",
        side="buy",
        qty=Decimal(10),
        status=S.PENDING_NEW,
        filled_qty=Decimal(0),
        filled_avg_price=None,
        submitted_at=T0 + timedelta(seconds=1),
        updated_at=T0 + timedelta(seconds=1),
    )
    return msgspec.structs.replace(base, **changes)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_submission_then_fills_append_one_event_per_transition(store: TradingStore) -> None:
    d = store.record_decision(Adjudication.of(decision(), risk=RiskVerdict(())))
    order = broker_order(d.decision_hash)
    execution = store.record_submission(order)
    assert execution.decision_id == d.id
    assert execution.status is S.PENDING_NEW
    assert store.record_submission(order).id == execution.id, "idempotent"

    steps = [
        (msgspec.structs.replace(order, status=S.NEW), "new"),
        (msgspec.structs.replace(order, status=S.NEW), "poll"),  # repeat: no event
        (
            msgspec.structs.replace(
                order,
                status=S.PARTIALLY_FILLED,
                filled_qty=Decimal(4),
                filled_avg_price=Decimal("187.43"),
            ),
            "partial_fill",
        ),
        (
            msgspec.structs.replace(
                order,
                status=S.PARTIALLY_FILLED,
                filled_qty=Decimal(7),
                filled_avg_price=Decimal("187.45"),
            ),
            "partial_fill",
        ),
        (
            msgspec.structs.replace(
                order, status=S.FILLED, filled_qty=Decimal(10), filled_avg_price=Decimal("187.46")
            ),
            "fill",
        ),
        (
            msgspec.structs.replace(
                order, status=S.FILLED, filled_qty=Decimal(10), filled_avg_price=Decimal("187.46")
            ),
            "poll",
        ),
    ]
    results = [
        store.apply_order_update(o, event_type=e, at=at(2 + i), payload={"event": e})
        for i, (o, e) in enumerate(steps)
    ]
    A, SAME = Transition.ADVANCE, Transition.SAME
    assert results == [A, SAME, A, A, A, SAME]
    with store.unit_of_work() as uow:
        events = uow.order_events(order.id)
        assert [(e.status_from, e.status_to) for e in events] == [
            (S.INTENT, S.PENDING_NEW),
            (S.PENDING_NEW, S.NEW),
            (S.NEW, S.PARTIALLY_FILLED),
            (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
            (S.PARTIALLY_FILLED, S.FILLED),
        ]
        assert [e.filled_qty for e in events] == [0, 0, 4, 7, 10]
        assert events[2].payload == {"event": "partial_fill"}
        final = uow.get_execution(order.id)
        assert final is not None
        assert final.status is S.FILLED
        assert final.filled_avg_price == Decimal("187.46")
        assert [e.status for e in uow.executions_to_reconcile()] == [S.FILLED]
        decided = uow.get_decision(d.decision_hash)
        assert decided is not None
        assert decided.status is DecisionStatus.SUBMITTED
        assert decided.executed_at == order.submitted_at
        assert uow.pending_submissions() == []
        assert uow.local_positions() == {"AAPL": Decimal(10)}


def test_invalid_transition_raises_and_changes_nothing(store: TradingStore) -> None:
    d = store.record_decision(Adjudication.of(decision(), risk=RiskVerdict(())))
    order = broker_order(d.decision_hash, status=S.NEW)
    store.record_submission(order)
    filled = msgspec.structs.replace(order, status=S.FILLED, filled_qty=Decimal(10))
    store.apply_order_update(filled, event_type="fill", at=at(3))
    # newer observations the table refuses: anomalies, raised (and logged, counted)
    with pytest.raises(InvalidOrderTransition):
        store.apply_order_update(
            msgspec.structs.replace(order, status=S.CANCELED, updated_at=at(4)),
            event_type="canceled",
            at=at(4),
        )
    with pytest.raises(InvalidOrderTransition):
        store.apply_order_update(
            msgspec.structs.replace(filled, filled_qty=Decimal(9), updated_at=at(5)),
            event_type="poll",
            at=at(5),
        )
    with store.unit_of_work() as uow:
        final = uow.get_execution(order.id)
        assert final is not None
        assert final.status is S.FILLED
        assert final.filled_qty == 10
        assert len(uow.order_events(order.id)) == 2


def test_observations_older_than_the_recorded_state_are_stale_and_change_nothing(
    store: TradingStore,
) -> None:
    """The submit response, the stream and the poll are recorded by different threads: an
    earlier state recorded last is stale, decided against the row as the store holds it."""
    order_id = _stale_observations(store)
    with store.unit_of_work() as uow:
        assert [e.status_to for e in uow.order_events(order_id)] == [S.NEW, S.PARTIALLY_FILLED]


def test_the_memory_store_decides_staleness_alike() -> None:
    _stale_observations(MemoryStore(SimulatedClock(T0)))


def _stale_observations(store: DecisionStore) -> str:
    """Apply stale and fresh observations through the port; returns the order's id."""
    with store.unit_of_work() as uow:
        d = uow.record_decision(Adjudication.of(decision(), risk=RiskVerdict(())))
        order = broker_order(d.decision_hash, status=S.NEW)  # updated_at = at(1)
        uow.record_submission(order)
        uow.commit()
    refused_before = _invalid_transitions()
    stale = [
        msgspec.structs.replace(order, status=S.PENDING_NEW),  # same instant, the earlier state
        msgspec.structs.replace(order, status=S.PENDING_NEW, updated_at=at(0.5)),  # older
    ]
    partial = msgspec.structs.replace(
        order, status=S.PARTIALLY_FILLED, filled_qty=Decimal(4), updated_at=at(2)
    )
    later_stale = [
        msgspec.structs.replace(order, updated_at=at(1.5)),  # a poll answered before the fill
        msgspec.structs.replace(partial, filled_qty=Decimal(3)),  # same instant, less filled
    ]
    results = []
    for observed in [*stale, partial, *later_stale]:
        with store.unit_of_work() as uow:
            results.append(uow.apply_order_update(observed, event_type="poll", at=at(3)))
            uow.commit()
    assert results == [Transition.STALE] * 2 + [Transition.ADVANCE] + [Transition.STALE] * 2
    assert _invalid_transitions() == refused_before  # not an anomaly: nothing logged or counted
    with store.unit_of_work() as uow:
        current = uow.get_execution(order.id)
    assert current is not None
    assert (current.status, current.filled_qty) == (S.PARTIALLY_FILLED, Decimal(4))
    assert current.last_update_at == at(2)
    return order.id


def _invalid_transitions() -> float:
    (metric,) = INVALID_TRANSITIONS.collect()
    return float(sum(s.value for s in metric.samples if s.name.endswith("_total")))


def test_an_order_acknowledged_before_a_crash_is_adopted_by_its_decision(
    store: TradingStore,
) -> None:
    """Submit happened, the process died before record_submission: the stream or the poll
    finds the order, and its client_order_id leads back to the decision."""
    d = store.record_decision(Adjudication.of(decision(), risk=RiskVerdict(())))
    with store.unit_of_work() as uow:
        assert [p.id for p in uow.pending_submissions()] == [d.id]
    order = broker_order(
        d.decision_hash, status=S.FILLED, filled_qty=Decimal(10), filled_avg_price=Decimal(101)
    )
    assert store.apply_order_update(order, event_type="poll", at=at(9)) is Transition.ADVANCE
    with store.unit_of_work() as uow:
        execution = uow.get_execution(order.id)
        assert execution is not None
        assert execution.decision_id == d.id
        assert uow.pending_submissions() == []
        assert [e.event_type for e in uow.order_events(order.id)] == ["poll"]


def test_an_order_placed_outside_the_loop_is_recorded_without_a_decision(
    store: TradingStore,
) -> None:
    order = broker_order("manual-1", status=S.NEW)
    store.apply_order_update(order, event_type="new", at=at(1))
    with store.unit_of_work() as uow:
        execution = uow.get_execution(order.id)
        assert execution is not None
        assert execution.decision_id is None
        assert [e.id for e in uow.executions_to_reconcile()] == [execution.id]
        uow.mark_reconciled([order.id], at(2))
        uow.commit()
    with store.unit_of_work() as uow:
        execution = uow.get_execution(order.id)
        assert execution is not None
        assert execution.reconciled_at == at(2)
        # Still open: reconciled or not, the reconciler keeps polling it.
        assert [e.id for e in uow.executions_to_reconcile()] == [execution.id]
        assert len(uow.executions(symbol="AAPL")) == 1
        assert uow.executions(symbol="MSFT") == []


def committed(store: TradingStore, step: Callable[[UnitOfWork], T]) -> T:
    """``step`` in a unit of work of its own, committed."""
    with store.unit_of_work() as uow:
        result = step(uow)
        uow.commit()
        return result


def test_submit_failure_is_recorded(store: TradingStore) -> None:
    d = store.record_decision(Adjudication.of(decision(), risk=RiskVerdict(())))
    committed(store, lambda u: u.record_submit_failure(d.decision_hash, "403 insufficient funds"))
    with store.unit_of_work() as uow:
        failed = uow.get_decision(d.decision_hash)
        assert failed is not None
        assert failed.status is DecisionStatus.SUBMIT_FAILED
        assert failed.status_detail == "403 insufficient funds"
        assert uow.pending_submissions() == []
    with pytest.raises(LookupError):
        committed(store, lambda u: u.record_submit_failure("0" * 64, "x"))
    with pytest.raises(LookupError):
        store.record_submission(broker_order("0" * 64))


def test_signal_cursor_is_saved_per_source(store: TradingStore) -> None:
    first = SignalCursor("PT1S", T0, "AAPL", 7)
    later = SignalCursor("PT1S", T0 + timedelta(milliseconds=1), "AAPL", 8)
    committed(store, lambda u: u.save_cursor("ta_signals", first))
    committed(store, lambda u: u.save_cursor("ta_signals", later))
    committed(store, lambda u: u.save_cursor("replay", first))
    with store.unit_of_work() as uow:
        assert uow.load_cursor("ta_signals") == later
        assert uow.load_cursor("replay") == first
        assert uow.load_cursor("nothing") is None
    assert first < later < SignalCursor("PT1S", later.event_ts, "MSFT", 0)


def test_position_drift_against_the_broker(store: TradingStore) -> None:
    d = store.record_decision(Adjudication.of(decision(), risk=RiskVerdict(())))
    store.record_submission(broker_order(d.decision_hash, status=S.FILLED, filled_qty=Decimal(10)))
    broker = [
        PositionSnapshot("AAPL", Decimal(10), Decimal(1000)),
        PositionSnapshot("MSFT", Decimal(-3), Decimal(-300)),
    ]
    drifts = committed(store, lambda u: u.record_positions(T0, broker))
    assert [(x.symbol, x.broker_qty, x.local_qty, x.drift) for x in drifts] == [
        ("AAPL", Decimal(10), Decimal(10), Decimal(0)),
        ("MSFT", Decimal(-3), Decimal(0), Decimal(-3)),
    ]
