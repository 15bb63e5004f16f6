"""``/trading/*`` over a real store: SQLite file, and Postgres once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from tests.api.conftest import T0, MakeClient, decision, open_store
from torghut.config import TradingSettings
from trading.adapters.store import TradingStore, create_engine, upgrade
from trading.core.adjudicate import Adjudication
from trading.core.domain import Action
from trading.core.llm.policy import ReviewOutcome
from trading.core.orders import OrderStatus
from trading.core.ports import BrokerOrder
from trading.core.risk import RiskCheck, RiskReason, RiskVerdict

APPROVED = RiskVerdict(())


def _order(hash_: str, status: OrderStatus, filled: str = "0", at_s: int = 10) -> BrokerOrder:
    at = T0 + timedelta(seconds=at_s)
    return BrokerOrder(
        id=f"order-{hash_[:8]}",
        client_order_id=hash_,
        symbol="AAPL",
        side="buy",
        qty=Decimal(10),
        status=status,
        filled_qty=Decimal(filled),
        filled_avg_price=Decimal("100.5") if filled != "0" else None,
        submitted_at=T0 + timedelta(seconds=5),
        updated_at=at,
    )


def seed(store: TradingStore) -> dict[str, str]:
    """An approved+submitted+filled+reconciled AAPL buy (with an LLM review), a risk rejection
    on MSFT and an LLM veto on AAPL; returns their decision hashes."""
    review = ReviewOutcome(
        model="m1",
        prompt_version="p1",
        effective_verdict="adjust",
        effective_qty=Decimal(10),
        shadow=False,
        fallback=False,
        latency_ms=120,
        verdict="adjust",
        confidence=0.8,
        adjusted_qty=Decimal(10),
    )
    filled = store.record_decision(
        Adjudication.of(decision("AAPL", 0), risk=APPROVED, review=review)
    )
    store.record_submission(_order(filled.decision_hash, OrderStatus.NEW))
    store.apply_order_update(
        _order(filled.decision_hash, OrderStatus.FILLED, "10", at_s=12),
        event_type="fill",
        at=T0 + timedelta(seconds=12),
    )
    with store.unit_of_work() as uow:
        uow.mark_reconciled([f"order-{filled.decision_hash[:8]}"], T0 + timedelta(seconds=20))
        uow.commit()
    rejected = store.record_decision(
        Adjudication.of(
            decision("MSFT", 1),
            risk=RiskVerdict(
                (
                    RiskReason(RiskCheck.MAX_NOTIONAL_PER_ORDER, "1000 > 500"),
                    RiskReason(RiskCheck.KILL_SWITCH, "kill switch on"),
                )
            ),
        )
    )
    veto = ReviewOutcome(
        model="m1",
        prompt_version="p1",
        effective_verdict="veto",
        effective_qty=Decimal(0),
        shadow=False,
        fallback=False,
        latency_ms=80,
        verdict="veto",
    )
    vetoed = store.record_decision(
        Adjudication.of(decision("AAPL", 2, action=Action.SELL), risk=None, review=veto)
    )
    return {
        "filled": filled.decision_hash,
        "rejected": rejected.decision_hash,
        "vetoed": vetoed.decision_hash,
    }


def test_decisions_audit_trail(make_client: MakeClient, sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    hashes = seed(store)
    with make_client() as client:
        everything = client.get("/trading/decisions").json()
        aapl = client.get("/trading/decisions", params={"symbol": "aapl", "limit": 1}).json()
        by_hash = {d["decision_hash"]: d for d in everything["decisions"]}
        since = by_hash[hashes["rejected"]]["created_at"]
        later = client.get("/trading/decisions", params={"since": since}).json()
    store.close()
    assert everything["count"] == 3
    assert [d["decision_hash"] for d in everything["decisions"]] == [
        hashes["vetoed"],
        hashes["rejected"],
        hashes["filled"],
    ]
    filled = by_hash[hashes["filled"]]
    assert filled["status"] == "submitted"
    assert filled["execution_status"] == "filled"
    assert filled["alpaca_order_id"] == f"order-{hashes['filled'][:8]}"
    assert filled["qty"] == "10"
    assert filled["review"]["effective_verdict"] == "adjust"
    assert filled["review"]["confidence"] == 0.8
    assert filled["risk_reasons"] == []
    rejected = by_hash[hashes["rejected"]]
    assert rejected["status"] == "rejected"
    assert [r["code"] for r in rejected["risk_reasons"]] == [
        "max_notional_per_order",
        "kill_switch",
    ]
    assert rejected["review"] is None
    assert rejected["execution_status"] is None
    vetoed = by_hash[hashes["vetoed"]]
    assert (vetoed["status"], vetoed["review"]["effective_verdict"]) == ("vetoed", "veto")
    assert [d["decision_hash"] for d in aapl["decisions"]] == [hashes["vetoed"]]
    assert [d["decision_hash"] for d in later["decisions"]] == [
        hashes["vetoed"],
        hashes["rejected"],
    ]


def test_executions_with_order_events_and_reconciliation(
    make_client: MakeClient, sqlite_url: str
) -> None:
    store = open_store(sqlite_url)
    hashes = seed(store)
    pending = store.record_decision(Adjudication.of(decision("AAPL", 3), risk=APPROVED))
    store.record_submission(_order(pending.decision_hash, OrderStatus.NEW, at_s=30))
    with make_client() as client:
        body = client.get("/trading/executions", params={"symbol": "AAPL"}).json()
        none = client.get("/trading/executions", params={"symbol": "MSFT"}).json()
    store.close()
    assert body["count"] == 2
    by_order = {e["client_order_id"]: e for e in body["executions"]}
    done = by_order[hashes["filled"]]
    assert done["status"] == "filled"
    assert done["reconciliation"] == "reconciled"
    assert done["filled_qty"] == "10"
    assert done["filled_avg_price"] == "100.5"
    assert [(e["status_from"], e["status_to"]) for e in done["events"]] == [
        ("intent", "new"),
        ("new", "filled"),
    ]
    fresh = by_order[pending.decision_hash]
    assert (fresh["reconciliation"], fresh["reconciled_at"]) == ("pending", None)
    assert none == {"executions": [], "count": 0}


def test_status_reflects_settings_and_last_decision(
    make_client: MakeClient, sqlite_url: str
) -> None:
    trading = TradingSettings(enabled=True, kill_switch=True, strategies=("macd_rsi",))
    with make_client(trading=trading) as client:
        before = client.get("/trading/status").json()
        store = open_store(sqlite_url)
        stored = store.record_decision(Adjudication.of(decision("AAPL", 0), risk=APPROVED))
        store.close()
        after = client.get("/trading/status").json()
    assert before == {
        "enabled": True,
        "mode": "paper",
        "live_enabled": False,
        "kill_switch": True,
        "last_decision_at": None,
        "llm_enabled": False,
        "strategies": ["macd_rsi"],
        "state": "halted",
        "kill_switch_state": {"engaged": False, "reason": None, "since": None, "origin": None},
        "halts": [],
        "pending_commands": [],
    }
    assert datetime.fromisoformat(after["last_decision_at"]) == stored.created_at


def test_health_ok_reports_last_reconcile(make_client: MakeClient, sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    seed(store)
    store.close()
    with make_client(alpaca_check=lambda: "unknown") as client:
        r = client.get("/trading/health")
    assert r.status_code == 200
    body = r.json()
    assert (body["clickhouse"], body["postgres"], body["alpaca"]) == ("ok", "ok", "unknown")
    assert datetime.fromisoformat(body["last_reconcile_at"]) == T0 + timedelta(seconds=20)


def test_health_is_503_when_the_broker_check_fails(make_client: MakeClient) -> None:
    with make_client(alpaca_check=lambda: "error") as client:
        r = client.get("/trading/health")
    assert r.status_code == 503
    assert r.json()["alpaca"] == "error"


def test_decisions_on_postgres(make_client: MakeClient, pg_url: str) -> None:
    upgrade(pg_url)
    engine = create_engine(pg_url)
    store = TradingStore(engine)
    hashes = seed(store)
    with make_client(engine=engine) as client:
        decisions = client.get("/trading/decisions").json()
        executions = client.get("/trading/executions").json()
        health = client.get("/trading/health")
    engine.dispose()
    assert {d["decision_hash"] for d in decisions["decisions"]} == set(hashes.values())
    assert executions["executions"][0]["reconciliation"] == "reconciled"
    assert health.status_code == 200
    assert health.json()["postgres"] == "ok"


def test_store_down_is_503_problem(make_client: MakeClient) -> None:
    broken = sa.create_engine(f"sqlite:////nonexistent-{uuid.uuid4().hex}/x.sqlite")
    with make_client(engine=broken) as client:
        decisions = client.get("/trading/decisions")
        health = client.get("/trading/health")
        ready = client.get("/readyz")
    assert decisions.status_code == 503
    assert decisions.headers["content-type"].startswith("application/problem+json")
    assert decisions.json()["dependency"] == "postgres"
    assert (health.status_code, health.json()["postgres"]) == (503, "error")
    assert (ready.status_code, ready.json()["postgres"]) == (503, "error")
