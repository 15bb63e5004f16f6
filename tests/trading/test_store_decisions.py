"""The decision unit of work on real Postgres and on SQLite: insert-if-absent by hash (also
under concurrency), all-or-nothing commits, every rejection stored with all its reasons."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import msgspec
import pytest
import sqlalchemy as sa

from tests.trading.conftest import T0, decision
from trading.adapters.store import TradingStore
from trading.adapters.store.models import LlmReviewRow, TradeDecisionRow
from trading.core.adjudicate import Adjudication
from trading.core.decisions import DecisionStatus
from trading.core.domain import Action
from trading.core.llm import ReviewOutcome
from trading.core.ports import SignalCursor, StoreConflict, StoreRejected
from trading.core.records import StoredDecision
from trading.core.risk import RiskCheck, RiskReason, RiskVerdict

APPROVED = RiskVerdict(())


def review(**changes: object) -> ReviewOutcome:
    base: dict[str, object] = {
        "model": "m",
        "prompt_version": "decision-review/1",
        "effective_verdict": "adjust",
        "effective_qty": Decimal("2.5"),
        "shadow": False,
        "fallback": False,
        "latency_ms": 42,
        "verdict": "adjust",
        "confidence": 0.8,
        "adjusted_qty": Decimal("2.5"),
        "tokens_in": 100,
        "tokens_out": 20,
        "raw_response": '{"verdict":"adjust"}',
    }
    base.update(changes)
    return ReviewOutcome(**base)  # type: ignore[arg-type]


def count(store: TradingStore, table: type) -> int:
    with store.unit_of_work() as uow:
        return uow.session.scalar(sa.select(sa.func.count()).select_from(table)) or 0


def test_decision_review_and_intent_are_stored_together(store: TradingStore) -> None:
    d = decision()
    stored = store.record_decision(Adjudication.of(d, risk=APPROVED, review=review()))
    assert stored.created
    assert stored.status is DecisionStatus.PENDING_SUBMIT
    assert stored.decision_hash == d.decision_hash
    assert stored.qty == Decimal("2.5")
    assert stored.event_ts == T0
    assert stored.created_at.tzinfo is not None
    request = stored.order_request()
    assert request.client_order_id == d.decision_hash
    assert request.qty == Decimal("2.5")
    assert request.side == "buy"
    assert request.symbol == "AAPL"
    with store.unit_of_work() as uow:
        row = uow.session.scalars(sa.select(TradeDecisionRow)).one()
        assert row.decision_json["qty"] == "10", "the deterministic decision is kept as made"
        assert row.decision_json["params"]["rsi_overbought"] == "70"
        r = uow.session.scalars(sa.select(LlmReviewRow)).one()
        assert (r.decision_id, r.verdict, r.effective_verdict) == (stored.id, "adjust", "adjust")
        assert (r.tokens_in, r.tokens_out, r.latency_ms) == (100, 20, 42)
        assert r.adjusted_qty == Decimal("2.5")
        assert r.raw_response == '{"verdict":"adjust"}'
        assert [p.decision_hash for p in uow.pending_submissions()] == [d.decision_hash]


def test_replay_returns_the_existing_decision_and_writes_nothing(store: TradingStore) -> None:
    d = decision()
    first = store.record_decision(Adjudication.of(d, risk=APPROVED, review=review()))
    again = store.record_decision(
        Adjudication.of(
            d, risk=RiskVerdict((RiskReason(RiskCheck.KILL_SWITCH, "on"),)), review=review()
        )
    )
    assert not again.created
    assert again.id == first.id
    assert again.status is DecisionStatus.PENDING_SUBMIT
    assert count(store, TradeDecisionRow) == 1
    assert count(store, LlmReviewRow) == 1


def test_decision_hash_is_unique_in_the_database(store: TradingStore) -> None:
    """A second row with the same hash is refused, and leaves the unit of work as the port's
    ``StoreConflict`` (never SQLAlchemy's exception)."""
    store.record_decision(Adjudication.of(decision(), risk=APPROVED))

    def duplicate() -> None:
        with store.unit_of_work() as uow:
            uow.session.add(
                TradeDecisionRow(
                    id=uuid.uuid4(),
                    decision_hash=decision().decision_hash,
                    strategy_id="x",
                    strategy_version="1",
                    symbol="AAPL",
                    side="buy",
                    qty=Decimal(1),
                    order_type="market",
                    limit_price=None,
                    event_ts=T0,
                    status="pending_submit",
                    status_detail=None,
                    risk_reasons=None,
                    decision_json={},
                    executed_at=None,
                )
            )
            uow.session.flush()

    with pytest.raises(StoreConflict, match="decision_hash"):
        duplicate()


def test_rejection_is_stored_with_all_its_reasons(store: TradingStore) -> None:
    reasons = (
        RiskReason(RiskCheck.MARKET_CLOSED, "market closed"),
        RiskReason(RiskCheck.SIGNAL_STALE, "signal age 300s > 120s"),
        RiskReason(RiskCheck.BUYING_POWER, "notional 1000 > buying power 1"),
    )
    stored = store.record_decision(Adjudication.of(decision(), risk=RiskVerdict(reasons)))
    assert stored.status is DecisionStatus.REJECTED
    assert stored.risk_reasons == reasons
    with store.unit_of_work() as uow:
        (listed,) = uow.decisions(symbol="AAPL")
        assert listed.risk_reasons == reasons
        assert uow.pending_submissions() == []
    with pytest.raises(ValueError, match="not an order"):
        store.record_decision(
            Adjudication.of(
                decision(event_ts=T0 + timedelta(seconds=1)),
                risk=APPROVED,
                review=review(effective_verdict="veto", effective_qty=Decimal(0), verdict="veto"),
            )
        ).order_request()


def test_veto_needs_no_risk_verdict_but_everything_else_does(store: TradingStore) -> None:
    vetoed = store.record_decision(
        Adjudication.of(
            decision(),
            risk=None,
            review=review(effective_verdict="veto", effective_qty=Decimal(0), verdict="veto"),
        )
    )
    assert vetoed.status is DecisionStatus.VETOED
    assert vetoed.qty == 0
    with pytest.raises(ValueError, match="risk must be evaluated"):
        store.record_decision(Adjudication.of(decision(action=Action.SELL), risk=None))
    assert count(store, TradeDecisionRow) == 1


def test_unit_of_work_is_atomic_under_an_injected_failure(store: TradingStore) -> None:
    """The review insert violates a database CHECK: the decision must not survive either."""
    with pytest.raises(StoreRejected, match="latency_ms"):
        store.record_decision(
            Adjudication.of(decision(), risk=APPROVED, review=review(latency_ms=-1))
        )
    assert count(store, TradeDecisionRow) == 0
    assert count(store, LlmReviewRow) == 0

    def crash_before_commit() -> None:
        with store.unit_of_work() as uow:
            uow.record_decision(Adjudication.of(decision(), risk=APPROVED, review=review()))
            uow.save_cursor("s", SignalCursor("PT1S", T0, "A", 1))
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError, match="crash"):
        crash_before_commit()
    assert count(store, TradeDecisionRow) == 0
    assert count(store, LlmReviewRow) == 0
    with store.unit_of_work() as uow:
        assert uow.load_cursor("s") is None

    stored = store.record_decision(Adjudication.of(decision(), risk=APPROVED, review=review()))
    assert stored.created, "the failed attempts left nothing behind"


def test_concurrent_duplicates_get_the_one_existing_decision(pg_url: str) -> None:
    stores = [TradingStore.open(pg_url, migrate=(i == 0)) for i in range(6)]
    d = decision()
    barrier = threading.Barrier(len(stores))
    results: list[StoredDecision] = []
    errors: list[BaseException] = []

    def insert(s: TradingStore) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(s.record_decision(Adjudication.of(d, risk=APPROVED, review=review())))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert errors == []
        assert len(results) == len(stores)
        assert sum(1 for r in results if r.created) == 1
        assert len({r.id for r in results}) == 1
        assert count(stores[0], TradeDecisionRow) == 1
        assert count(stores[0], LlmReviewRow) == 1
    finally:
        for s in stores:
            s.close()


def test_exact_decimals_and_utc_timestamps_round_trip(store: TradingStore) -> None:
    d = decision(
        qty=Decimal("0.000000001"),
        limit_price=Decimal("187.4300"),
        event_ts=T0 + timedelta(microseconds=123456),
    )
    stored = store.record_decision(Adjudication.of(d, risk=APPROVED))
    assert stored.qty == Decimal("0.000000001")
    assert stored.limit_price == Decimal("187.43")
    assert stored.event_ts == d.event_ts
    assert stored.event_ts.utcoffset() == timedelta(0)


def test_read_models_filter_by_symbol_and_time(store: TradingStore) -> None:
    for i, symbol in enumerate(["AAPL", "MSFT", "AAPL"]):
        store.record_decision(
            Adjudication.of(
                decision(symbol=symbol, event_ts=T0 + timedelta(seconds=i)), risk=APPROVED
            )
        )
    with store.unit_of_work() as uow:
        assert [x.symbol for x in uow.decisions()] == ["AAPL", "MSFT", "AAPL"][::-1]
        assert len(uow.decisions(symbol="AAPL")) == 2
        newest = uow.decisions()[0].created_at
        assert len(uow.decisions(since=newest)) == 1
        assert len(uow.decisions(limit=1)) == 1
        orders = uow.recent_orders(since=newest - timedelta(hours=1))
        assert sorted(o.symbol for o in orders) == ["AAPL", "AAPL", "MSFT"]


def test_a_batch_is_recorded_in_order_with_replays_and_repeats(store: TradingStore) -> None:
    """One write for a batch: new decisions are created in order with their reviews; one
    already stored and a hash repeated within the batch come back as the stored decision."""
    old, a, b = (decision(event_ts=T0 + timedelta(seconds=i)) for i in range(3))
    first = store.record_decision(Adjudication.of(old, risk=APPROVED))
    rejected = RiskVerdict((RiskReason(RiskCheck.INVALID_ORDER, "pace"),))
    batch = [
        Adjudication.of(a, risk=APPROVED, review=review()),
        Adjudication.of(old, risk=APPROVED),
        Adjudication.of(b, risk=rejected),
        Adjudication.of(a, risk=rejected),
    ]
    with store.unit_of_work() as uow:
        stored = uow.record_decisions(batch)
        uow.commit()
    assert [s.decision_hash for s in stored] == [x.decision.decision_hash for x in batch]
    assert [s.created for s in stored] == [True, False, True, False]
    assert stored[1].id == first.id
    assert stored[3].id == stored[0].id
    assert stored[3].status is DecisionStatus.PENDING_SUBMIT
    assert stored[2].status is DecisionStatus.REJECTED
    assert stored[2].risk_reasons == (RiskReason(RiskCheck.INVALID_ORDER, "pace"),)
    assert stored[0].qty == Decimal("2.5"), "the reviewed quantity"
    assert count(store, TradeDecisionRow) == 3
    with store.unit_of_work() as uow:
        r = uow.session.scalars(sa.select(LlmReviewRow)).one()
        assert r.decision_id == stored[0].id
        again = uow.get_decision(b.decision_hash)
        assert again == msgspec.structs.replace(stored[2], created=False)
