"""End to end in one process: signals in ClickHouse → decisions in Postgres → orders at the
paper broker (through alpaca-py) → fills reconciled back into Postgres."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main

from dataflows.trading import TradingRuntime, build_flow
from tests.helpers import wait_until
from tests.trading.flow_fixtures import (
    ch_settings,
    crossing_signals,
    envelope,
    insert_signals,
    paper_broker,
    prepare_signals,
    trading_settings,
)
from torghut.clickhouse import connect
from torghut.config import Settings
from torghut.sim.broker import BrokerSimulator
from trading.adapters.store import TradingStore
from trading.core.decisions import DecisionStatus

__all__ = ["paper_broker"]


@pytest.fixture
def settings(
    ch_client: Any,
    chdb_path: Path,
    ch_database: str,
    pg_url: str,
    paper_broker: BrokerSimulator,
    tmp_path: Path,
) -> Settings:
    ch = ch_settings(chdb_path, ch_database)
    prepare_signals(ch_client, ch)
    return trading_settings(
        clickhouse=ch, store_url=pg_url, broker_url=paper_broker.base_url, data_dir=tmp_path
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[TradingRuntime]:
    rt = TradingRuntime.open(settings)
    rt.start()
    yield rt
    rt.close()


def _run(runtime: TradingRuntime) -> None:
    ch = runtime.settings.clickhouse
    run_main(build_flow(runtime, lambda: connect(ch)))  # type: ignore[no-untyped-call]


def _converged(store: TradingStore, sim: BrokerSimulator) -> bool:
    with store.unit_of_work() as uow:
        for order in sim.orders():
            e = uow.get_execution(str(order.id))
            if e is None or e.status.value != order.status or e.filled_qty != order.filled_qty:
                return False
        return not uow.pending_submissions()


def test_signals_to_decisions_to_orders_to_reconciled_fills(
    runtime: TradingRuntime, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    insert_signals(ch_client, crossing_signals(start, 6))
    _run(runtime)

    store = runtime.store
    with store.unit_of_work() as uow:
        decisions = uow.decisions(limit=1000)
    # 2 symbols x 5 crosses (the first row of each symbol only warms the strategy up).
    assert len(decisions) == 10
    assert {d.status for d in decisions} == {DecisionStatus.SUBMITTED}
    orders = paper_broker.orders()
    assert sorted(o.client_order_id for o in orders) == sorted(d.decision_hash for d in decisions)
    wait_until(lambda: _converged(store, paper_broker), timeout=15, message="store never converged")
    assert all(o.status == "filled" for o in paper_broker.orders())
    with store.unit_of_work() as uow:
        first = orders[0]
        events = uow.order_events(str(first.id))
        cursor = uow.load_cursor(runtime.cursor_source)
    assert events[0].status_from is not None
    assert events[-1].status_to.value == "filled"
    assert cursor is not None
    assert cursor.event_ts == start + timedelta(seconds=5)
    # The flow's reconciler confirms every execution against the broker: the API shows them
    # "reconciled", not "pending".
    runtime.reconciler.reconcile_once()
    with store.unit_of_work() as uow:
        executions = uow.executions(limit=1000)
    assert len(executions) == 10
    assert all(e.reconciled_at is not None for e in executions)


def test_restart_without_recovery_resumes_from_the_store_cursor(
    runtime: TradingRuntime, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    insert_signals(ch_client, crossing_signals(start, 4))
    _run(runtime)
    assert len(paper_broker.orders()) == 6
    # A new run starts its strategies cold: the first new row per symbol only warms them up.
    insert_signals(ch_client, crossing_signals(start + timedelta(seconds=4), 4))
    insert_signals(ch_client, [envelope("AAPL", start + timedelta(seconds=30), 99, close=-5.0)])
    _run(runtime)
    hashes = [o.client_order_id for o in paper_broker.orders()]
    assert len(hashes) == len(set(hashes)) == 6 + 6
    dead = runtime.settings.trading.dead_letter_path.read_text()
    assert '"bad_close"' in dead
    stored = runtime.dead_letters.read("dead_letter", "AAPL", None, 10)  # served by the API
    assert [(d.reason, d.seq) for d in stored] == [("bad_close", 99)]
    with runtime.store.unit_of_work() as uow:
        cursor = uow.load_cursor(runtime.cursor_source)
    assert cursor is not None
    assert cursor.event_ts == start + timedelta(seconds=30)


def test_streaming_reads_only_settled_rows_and_stops_cleanly(
    settings: Settings, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    settings.trading = settings.trading.model_copy(
        update={"exit_at_end": False, "signal_settle_s": 2.0}
    )
    runtime = TradingRuntime.open(settings)
    runtime.start()
    stop = threading.Event()
    ch = settings.clickhouse
    flow = build_flow(runtime, lambda: connect(ch), stop=stop)
    thread = threading.Thread(target=run_main, args=(flow,), daemon=True)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rows = crossing_signals(start, 10)
    try:
        insert_signals(ch_client, rows[:12])  # seconds 0..5; settled up to second 3
        thread.start()

        def decided() -> int:
            with runtime.store.unit_of_work() as uow:
                return len(uow.decisions(limit=1000))

        wait_until(lambda: decided() == 6, timeout=15, message=lambda: f"{decided()} decisions")
        with runtime.store.unit_of_work() as uow:
            cursor = uow.load_cursor(runtime.cursor_source)
        assert cursor is not None
        assert cursor.event_ts == start + timedelta(seconds=3)
        insert_signals(ch_client, rows[12:])  # seconds 6..9; settled up to second 7
        wait_until(lambda: decided() == 14, timeout=15, message=lambda: f"{decided()} decisions")
    finally:
        stop.set()
        thread.join(10)
        runtime.close()
        paper_broker.disconnect_streams()
    assert not thread.is_alive()
    assert len(paper_broker.orders()) == 14


def test_a_correction_of_a_traded_row_is_recorded_and_never_retraded(
    runtime: TradingRuntime, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rows = crossing_signals(start, 3, symbols=("AAPL",))
    insert_signals(ch_client, rows)
    _run(runtime)
    assert len(paper_broker.orders()) == 2
    # The TA flow re-emits second 1 with a higher version and the opposite cross.
    fixed = envelope(
        "AAPL",
        rows[1].event_ts,
        rows[1].seq,
        version=2,
        macd=0.5,
        macd_signal=1.0,
        rsi14=50.0,
        close=190.0,
    )
    insert_signals(ch_client, [fixed])
    _run(runtime)
    assert len(paper_broker.orders()) == 2
    lines = runtime.settings.trading.dead_letter_path.read_text().splitlines()
    corrections = [json.loads(line) for line in lines if '"correction"' in line]
    assert [(c["record"]["cursor"]["seq"], c["record"]["version"]) for c in corrections] == [
        (rows[1].seq, 2)
    ]
    stored = runtime.dead_letters.read("correction", None, None, 10)
    assert [(c.seq, c.record["version"]) for c in stored] == [(rows[1].seq, 2)]
