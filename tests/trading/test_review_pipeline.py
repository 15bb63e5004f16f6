"""The trading pipeline with LLM review: reviews on their own lanes, never on the dataflow worker
nor under the reconciler's lock; a backlog or a stop takes the safe way. Real Postgres store,
the paper broker simulator through alpaca-py, a real local HTTP server as the model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.helpers import wait_until
from tests.trading.conftest import LlmServer, decision
from tests.trading.flow_fixtures import paper_broker, trading_settings
from torghut.config import AlpacaSettings, ClickHouseSettings, LlmSettings
from torghut.events import Signal
from torghut.sim.broker import BrokerSimulator
from trading.adapters.alpaca_broker import AlpacaBroker, ClientTarget, build_trading_client
from trading.adapters.openai_reviewer import OpenAiChatReviewer
from trading.adapters.store import TradingStore
from trading.adapters.system_clock import SystemClock
from trading.core.decisions import DecisionStatus
from trading.core.domain import Decision, SignalRow
from trading.core.executor import OrderExecutor
from trading.core.llm import DecisionReview
from trading.core.pipeline import Decided, TradingPipeline
from trading.core.records import StoredDecision
from trading.core.review_lanes import SymbolLanes
from trading.core.risk import RiskLimits
from trading.core.signals import signal_read_delay

__all__ = ["paper_broker"]

CLOCK = SystemClock()
APPROVE = json.dumps(
    {
        "choices": [
            {"message": {"content": '{"verdict":"approve","confidence":0.9,"reason":"fine"}'}}
        ]
    }
).encode()


@pytest.fixture
def store(pg_url: str) -> Iterator[TradingStore]:
    s = TradingStore.open(pg_url)
    yield s
    s.close()


@pytest.fixture
def make_pipeline(
    store: TradingStore, paper_broker: BrokerSimulator, llm_server: LlmServer, tmp_path: Path
) -> Iterator[Any]:
    settings = trading_settings(
        clickhouse=ClickHouseSettings(),
        store_url="sqlite://",
        broker_url=paper_broker.base_url,
        data_dir=tmp_path,
    )
    broker = AlpacaBroker(
        build_trading_client(ClientTarget(paper=True, url=paper_broker.base_url), AlpacaSettings())
    )
    limits = RiskLimits.from_settings(
        settings.trading,
        settings.risk,
        settings.alpaca,
        read_delay=signal_read_delay(settings.trading, settings.ta, settings.clickhouse),
    )
    made: list[tuple[TradingPipeline, OpenAiChatReviewer]] = []

    def make(exclusive: threading.Lock | None = None, **llm: Any) -> TradingPipeline:
        base: dict[str, Any] = {
            "enabled": True,
            "base_url": llm_server.url,
            "model": "m",
            "api_key": SecretStr("k"),
            "timeout_s": 1.0,
            "shadow": False,
            "fallback": "veto",
        }
        llm_settings = LlmSettings(**(base | llm))
        client = OpenAiChatReviewer(llm_settings)
        pipeline = TradingPipeline(
            store,
            broker,
            OrderExecutor(store, broker, CLOCK, max_intent_age=timedelta(hours=1)),
            CLOCK,
            limits=limits,
            review=DecisionReview(client, llm_settings, live=False, clock=CLOCK),
            cursor_source="test",
            exclusive=exclusive,
        )
        made.append((pipeline, client))
        return pipeline

    yield make
    for pipeline, client in made:
        pipeline.close()
        client.close()


def _decided(symbol: str, seq: int) -> tuple[Decided, Decision]:
    d = decision(symbol=symbol, event_ts=datetime.now(UTC), qty=Decimal(1), signal_seq=seq)
    return Decided(SignalRow(symbol, d.event_ts, seq, "PT1S", 1, Signal(close=100.0)), (d,)), d


def _stored(store: TradingStore, d: Decision) -> StoredDecision | None:
    with store.unit_of_work() as uow:
        return uow.get_decision(d.decision_hash)


def test_a_review_runs_off_the_worker_and_outside_the_reconcilers_lock(
    make_pipeline: Any, llm_server: LlmServer, store: TradingStore, paper_broker: BrokerSimulator
) -> None:
    exclusive = threading.Lock()
    pipeline: TradingPipeline = make_pipeline(exclusive, fallback="pass")
    llm_server.raw(200, APPROVE, stall_s=30)  # hangs until the deadline
    item, d = _decided("AAPL", 1)

    assert pipeline.process([item]) == [], "the worker does not wait for the review"
    wait_until(lambda: llm_server.requests, timeout=5, message="the review never started")
    assert _stored(store, d) is None, "nothing recorded while the model thinks"
    assert exclusive.acquire(timeout=5), "a reconciliation pass can run during the review"
    exclusive.release()

    assert pipeline.drain(5)
    stored = _stored(store, d)
    assert stored is not None
    assert stored.status is DecisionStatus.SUBMITTED, "paper + fallback pass: the decision stands"
    assert [o.client_order_id for o in paper_broker.orders()] == [d.decision_hash]
    (outcome,) = pipeline.process([])
    assert (outcome.decision_hash, outcome.execution) == (d.decision_hash, "submitted")


def test_a_full_backlog_takes_the_fallback_at_once(
    make_pipeline: Any, llm_server: LlmServer, store: TradingStore, paper_broker: BrokerSimulator
) -> None:
    pipeline: TradingPipeline = make_pipeline(max_concurrency=1, max_pending=1)
    llm_server.raw(200, APPROVE, stall_s=30)
    first, d1 = _decided("AAPL", 1)
    second, d2 = _decided("MSFT", 2)

    assert pipeline.process([first]) == []
    (outcome,) = pipeline.process([second])
    assert outcome.decision_hash == d2.decision_hash
    assert outcome.status == DecisionStatus.VETOED.value
    with store.unit_of_work() as uow:
        assert uow.review_count(d2.decision_hash) == 1
    assert len(llm_server.requests) <= 1, "the refused decision never reached the model"
    assert pipeline.drain(5)
    stored = _stored(store, d1)
    assert stored is not None
    assert stored.status is DecisionStatus.VETOED, "its review timed out: fallback veto"
    assert paper_broker.orders() == []


def test_after_close_nothing_queued_or_in_flight_is_sent(
    make_pipeline: Any, llm_server: LlmServer, store: TradingStore, paper_broker: BrokerSimulator
) -> None:
    # Paper with fallback "pass": a failed review would let the order go — but not after close.
    pipeline: TradingPipeline = make_pipeline(fallback="pass", max_concurrency=1)
    llm_server.raw(200, APPROVE, stall_s=30)
    items = [_decided("AAPL", 1), _decided("AAPL", 2), _decided("MSFT", 3)]
    assert pipeline.process([item for item, _ in items]) == []
    wait_until(lambda: llm_server.requests, timeout=5, message="the review never started")

    pipeline.close()
    assert pipeline.drain(5)
    for _, d in items:
        stored = _stored(store, d)
        assert stored is not None
        assert stored.status is DecisionStatus.VETOED
    assert len(llm_server.requests) == 1, "queued reviews are not asked after close"
    late, d = _decided("MSFT", 4)
    outcomes = {o.decision_hash: o.status for o in pipeline.process([late])}
    assert outcomes == {d.decision_hash: "vetoed"} | {x.decision_hash: "vetoed" for _, x in items}
    assert len(llm_server.requests) == 1
    assert paper_broker.orders() == []


def test_lanes_keep_each_symbols_order_and_bound_concurrency() -> None:
    lanes = SymbolLanes(workers=2, max_pending=4, name="test")
    gate = threading.Event()
    ran: list[str] = []
    running: list[str] = []
    lock = threading.Lock()

    def job(name: str) -> Any:
        def run() -> None:
            with lock:
                running.append(name)
            gate.wait(10)
            with lock:
                ran.append(name)

        return run

    assert lanes.submit("AAPL", job("a1"))
    assert lanes.submit("AAPL", job("a2"))
    assert lanes.submit("MSFT", job("m1"))
    assert lanes.submit("TSLA", job("t1"))
    assert not lanes.submit("NVDA", job("n1")), "a full backlog refuses"
    wait_until(lambda: len(running) == 2, timeout=5, message="two lanes should run")
    assert sorted(running) == ["a1", "m1"], "one job per symbol, two symbols at a time"
    assert not lanes.wait_idle(0.01)
    gate.set()
    assert lanes.wait_idle(5)
    assert ran.index("a1") < ran.index("a2")
    assert sorted(ran) == ["a1", "a2", "m1", "t1"]
    lanes.close()
