"""Reconciliation against the paper broker on real Postgres: the trade_updates stream, the
periodic pass as safety net, position drift halting trading until reconciled and resumed, and
passes that fail (401 after a key rotation, an order the broker forgot) never going blind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alpaca.trading.stream import TradingStream

from tests.helpers import wait_until
from tests.trading.conftest import aapl_limits, decision
from tests.trading.flow_fixtures import paper_broker
from torghut.config import AlpacaSettings
from torghut.events import Signal
from torghut.sim.broker import BrokerSimulator
from trading.adapters.alpaca_broker import AlpacaBroker, ClientTarget, build_trading_client
from trading.adapters.store import Origin, TradingStore
from trading.adapters.system_clock import SystemClock
from trading.adapters.trade_updates import TradeUpdates
from trading.core.adjudicate import Adjudication
from trading.core.decisions import DecisionStatus
from trading.core.domain import OrderType, SignalRow
from trading.core.executor import OrderExecutor
from trading.core.orders import OrderStatus
from trading.core.pipeline import Decided, TradingPipeline
from trading.core.ports import OrderRequest
from trading.core.reconcile import Reconciler
from trading.core.risk import RiskVerdict

__all__ = ["paper_broker"]

_HOUR = timedelta(hours=1)
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


def _reconciler(store: TradingStore, broker: AlpacaBroker) -> Reconciler:
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=_HOUR)
    return Reconciler(store, broker, executor, CLOCK, interval_s=3600, halt_on_drift=True)


def _halted(reconciler: Reconciler) -> str | None:
    return reconciler.halted_reason


def _execution_status(store: TradingStore, order_id: str) -> OrderStatus | None:
    with store.unit_of_work() as uow:
        e = uow.get_execution(order_id)
    return None if e is None else e.status


def test_the_stream_records_each_transition_as_it_happens(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=_HOUR)
    reconciler = Reconciler(store, broker, executor, CLOCK, interval_s=3600, halt_on_drift=True)

    def stream() -> TradingStream:
        url = paper_broker.stream_url
        return TradingStream("sim-key", "sim-secret", paper=True, url_override=url)

    updates = TradeUpdates(executor, stream)
    reconciler.start()
    updates.start()
    try:
        wait_until(lambda: paper_broker.stream_clients() == 1, timeout=10, message="no stream")
        wait_until(lambda: reconciler.halted_reason is None, timeout=10, message="still halted")
        intent = store.record_decision(
            Adjudication.of(decision(event_ts=datetime.now(UTC)), risk=RiskVerdict(()))
        )
        # The order reaches the broker but its answer is never recorded by the submitter.
        order = broker.submit(intent.order_request())
        wait_until(
            lambda: _execution_status(store, order.id) is OrderStatus.FILLED,
            timeout=10,
            message="the stream never recorded the fill",
        )
        with store.unit_of_work() as uow:
            events = uow.order_events(order.id)
            stored = uow.get_decision(intent.decision_hash)
        assert stored is not None
        assert stored.status is DecisionStatus.SUBMITTED
        assert events[-1].status_to is OrderStatus.FILLED
        assert events[-1].event_type == "fill"
        assert all(e.event_type != "poll" for e in events)
    finally:
        updates.stop()
        reconciler.stop()
        paper_broker.disconnect_streams()


def test_the_periodic_pass_resolves_intents_and_catches_up_without_a_stream(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    reconciler = _reconciler(store, broker)
    intent = store.record_decision(
        Adjudication.of(decision(event_ts=datetime.now(UTC)), risk=RiskVerdict(()))
    )
    order = broker.submit(intent.order_request())
    wait_until(
        lambda: all(o.status == "filled" for o in paper_broker.orders()), timeout=5, message="fill"
    )
    report = reconciler.reconcile_once()
    assert report.intents_resolved == 1
    assert report.in_sync
    assert reconciler.halted_reason is None
    assert _execution_status(store, order.id) is OrderStatus.FILLED
    assert len(paper_broker.orders()) == 1


def test_a_pass_stamps_reconciled_at_on_executions_it_confirmed_and_polls_them_no_more(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    """``reconciled_at`` is what the API shows as "reconciled": written by the pass that found
    the stored execution equal to the broker's order, also for a fill recorded by the stream
    (terminal before any poll); a confirmed terminal execution is not polled again."""
    reconciler = _reconciler(store, broker)
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=_HOUR)
    intent = store.record_decision(
        Adjudication.of(decision(event_ts=datetime.now(UTC)), risk=RiskVerdict(()))
    )
    sent = executor.submit(intent)
    assert sent.order is not None
    order_id = sent.order.id
    wait_until(
        lambda: all(o.status == "filled" for o in paper_broker.orders()), timeout=5, message="fill"
    )
    # The fill reaches the store before any pass, as the stream would record it.
    assert executor.record(broker.get_order(order_id), event_type="fill")
    with store.unit_of_work() as uow:
        recorded = uow.get_execution(order_id)
        assert recorded is not None
        assert (recorded.status, recorded.reconciled_at) == (OrderStatus.FILLED, None)
        assert [e.alpaca_order_id for e in uow.executions_to_reconcile()] == [order_id]
    before = datetime.now(UTC)
    report = reconciler.reconcile_once()
    assert report.orders_checked == 1
    with store.unit_of_work() as uow:
        confirmed = uow.get_execution(order_id)
        assert confirmed is not None
        assert confirmed.reconciled_at is not None
        assert before <= confirmed.reconciled_at <= datetime.now(UTC)
        assert uow.executions_to_reconcile() == []
    assert reconciler.reconcile_once().orders_checked == 0


def test_position_drift_halts_new_orders_until_reconciled_and_resumed(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    reconciler = _reconciler(store, broker)
    assert _halted(reconciler) is not None  # until the first pass has completed
    assert reconciler.reconcile_once().in_sync
    assert _halted(reconciler) is None
    # An order placed outside the loop fills: the broker holds shares the store cannot explain.
    broker.submit(OrderRequest("outside", "AAPL", "buy", Decimal(5), OrderType.MARKET))
    wait_until(lambda: broker.positions(), timeout=5, message="no position")
    report = reconciler.reconcile_once()
    drifts = {d.symbol: (d.broker_qty, d.local_qty) for d in report.drifts}
    assert drifts == {"AAPL": (Decimal(5), Decimal(0))}
    halts = store.controls.state().halts
    assert [(h.kind, h.requires_resume) for h in halts] == [("position_drift", True)]
    assert "AAPL" in halts[0].detail

    limits = aapl_limits()
    executor = OrderExecutor(store, broker, CLOCK, max_intent_age=_HOUR)
    pipeline = TradingPipeline(
        store,
        broker,
        executor,
        CLOCK,
        limits=limits,
        review=None,
        cursor_source="test",
        halted=lambda: store.controls.state().halted_reason(),
    )
    d = decision(event_ts=datetime.now(UTC), qty=Decimal(1))
    row = SignalRow("AAPL", d.event_ts, 1, "PT1S", 1, Signal(close=100.0))
    (outcome,) = pipeline.process([Decided(row, (d,))])
    assert outcome.status == DecisionStatus.REJECTED.value
    with store.unit_of_work() as uow:
        stored = uow.get_decision(d.decision_hash)
    assert stored is not None
    assert "trading_halted" in {r.code.value for r in stored.risk_reasons}
    assert [o.client_order_id for o in paper_broker.orders()] == ["outside"]

    # The operator flattens the position at the broker: the next pass finds the cause gone, but
    # the halt stays until the operator resumes.
    paper_broker.call(lambda book: book.close_position("AAPL"))
    wait_until(lambda: not broker.positions(), timeout=5, message="position not closed")
    report = reconciler.reconcile_once()
    assert report.in_sync, report
    assert reconciler.halted_reason is None
    (halt,) = store.controls.state().halts
    assert halt.cause_gone_at is not None
    resumed = store.controls.resume("drift explained: order placed by hand", Origin.CLI)
    assert resumed.result == {"cleared": ["position_drift"], "still_halted": []}
    assert store.controls.state().halts == ()


def test_a_pass_over_open_orders_that_did_not_change_costs_the_same_few_statements_for_any_number(
    store: TradingStore, broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    """A pass runs under the lock the trading loop takes to send, so its cost must not grow
    with the orders resting at the broker: orders whose state the store already holds are
    compared in memory and stamped in one write, not recorded one by one (a 30-minute paper
    run with 660 resting orders had the loop waiting on the lock half of the time)."""
    reconciler = _reconciler(store, broker)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    per_pass: dict[int, int] = {}
    for resting in (3, 30):
        for i in range(len(paper_broker.orders()), resting):
            broker.submit(  # a buy far below the market: it rests, open, at the broker
                OrderRequest(f"resting-{i}", "AAPL", "buy", Decimal(1), OrderType.LIMIT, Decimal(1))
            )
        adopted = reconciler.reconcile_once()  # records the new ones (placed outside the loop)
        assert adopted.orders_checked == resting
        with store.unit_of_work() as uow:
            events = sum(len(uow.order_events(str(o.id))) for o in paper_broker.orders())
        statements.clear()
        sa.event.listen(store.engine, "before_cursor_execute", count)
        try:
            report = reconciler.reconcile_once()
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", count)
        assert (report.orders_checked, report.updates) == (resting, 0)
        per_pass[resting] = len(statements)
        with store.unit_of_work() as uow:
            assert sum(len(uow.order_events(str(o.id))) for o in paper_broker.orders()) == events
            stamped = uow.get_executions([str(o.id) for o in paper_broker.orders()])
        assert len(stamped) == resting
        assert all(e.reconciled_at is not None for e in stamped.values())
    assert per_pass[30] == per_pass[3], per_pass


def test_open_orders_lists_every_open_order_beyond_alpacas_page_of_500(
    broker: AlpacaBroker, paper_broker: BrokerSimulator
) -> None:
    """Alpaca answers at most 500 orders a request: the adapter pages back in time (the
    simulator implements ``limit``, ``until`` and ``direction`` as documented)."""
    for i in range(520):
        broker.submit(
            OrderRequest(f"resting-{i}", "MSFT", "buy", Decimal(1), OrderType.LIMIT, Decimal(1))
        )
    listed = broker.open_orders()
    assert len(listed) == 520
    assert {o.client_order_id for o in listed} == {f"resting-{i}" for i in range(520)}
    assert [o.submitted_at for o in listed] == sorted(o.submitted_at for o in listed)
