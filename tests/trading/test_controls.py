"""Runtime controls and halts end to end: the trading flow runs against the paper broker and real
Postgres, the API (its own engine on the same database, as another process would have) takes
the operator's commands, and the broker misbehaves the way operators meet it.

* kill switch over HTTP while the flow trades: nothing is sent after it took effect; release
  resumes trading without a restart; cancel-all leaves no open order; flatten leaves no
  position and no drift; without the token nothing changes (401/403);
* keys rotated at the broker (401 on every request): trading halts within
  ``RISK_RECONCILE_MAX_AGE_S`` with that reason in ``/trading/status`` and ``/readyz`` = 503,
  and trades again only after the broker is back *and* an operator resumed;
* an open order the broker forgot (a paper-account reset): the flow starts, marks it
  ``unknown_at_broker`` and reports it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest
from bytewax.testing import run_main
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr

from api.app import create_app
from dataflows.trading import TradingRuntime, build_flow
from tests.helpers import wait_until
from tests.trading.conftest import decision
from tests.trading.flow_fixtures import (
    ch_settings,
    crossing_signals,
    insert_signals,
    paper_broker,
    prepare_signals,
    trading_settings,
)
from torghut.clickhouse import connect
from torghut.config import ApiSettings, Settings
from torghut.events import Signal
from torghut.sim.broker import BrokerSimulator
from trading.adapters.store import Origin
from trading.core.adjudicate import Adjudication
from trading.core.decisions import DecisionStatus
from trading.core.domain import SignalRow
from trading.core.executor import STOPPING, Outcome, TradingStopped
from trading.core.orders import OrderStatus
from trading.core.pipeline import Decided
from trading.core.risk import RiskVerdict

__all__ = ["paper_broker"]

TOKEN = "control-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_AGE_S = 1.5


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
    s = trading_settings(
        clickhouse=ch,
        store_url=pg_url,
        broker_url=paper_broker.base_url,
        data_dir=tmp_path,
        exit_at_end=False,
        reconcile_interval_s=0.1,
    )
    s.risk = s.risk.model_copy(update={"reconcile_max_age_s": MAX_AGE_S})
    s.api = ApiSettings(control_token=SecretStr(TOKEN))
    return s


def _api(settings: Settings, *, token: str | None = TOKEN) -> TestClient[Any]:
    ch = settings.clickhouse
    api_settings = Settings(
        clickhouse=ch,
        store=settings.store,
        alpaca=settings.alpaca,
        trading=settings.trading,
        risk=settings.risk,
        api=ApiSettings(control_token=None if token is None else SecretStr(token)),
    )
    app = create_app(api_settings, ch_client_factory=lambda: connect(ch), alpaca_check=lambda: "ok")
    return TestClient(app)


class RunningFlow:
    """The streaming trading flow on a thread, stopped at the end of the test."""

    def __init__(self, settings: Settings) -> None:
        self.runtime = TradingRuntime.open(settings)
        self.runtime.start()
        self._stop = threading.Event()
        ch = settings.clickhouse
        flow = build_flow(self.runtime, lambda: connect(ch), stop=self._stop)
        self._thread = threading.Thread(target=run_main, args=(flow,), daemon=True)
        self._thread.start()

    def decisions(self) -> list[Any]:
        with self.runtime.store.unit_of_work() as uow:
            return uow.decisions(limit=10_000)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self.runtime.close()
        assert not self._thread.is_alive()


@pytest.fixture
def flow(settings: Settings, paper_broker: BrokerSimulator) -> Iterator[RunningFlow]:
    running = RunningFlow(settings)
    yield running
    running.close()
    paper_broker.disconnect_streams()


def _open_orders(sim: BrokerSimulator) -> list[Any]:
    return [o for o in sim.orders() if o.status in ("new", "accepted", "partially_filled")]


def _resting_limit(client: TradingClient, client_order_id: str) -> None:
    client.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=1.0,
            client_order_id=client_order_id,
        )
    )


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_kill_switch_over_http_stops_orders_and_the_commands_need_the_token(
    flow: RunningFlow, settings: Settings, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    rows = crossing_signals(start, 24)
    insert_signals(ch_client, rows[:8])  # seconds 0..3: 6 orders (the first row warms up)
    wait_until(lambda: len(paper_broker.orders()) == 6, timeout=20, message="flow not trading")
    broker = TradingClient("sim-key", "sim-secret", paper=True, url_override=paper_broker.base_url)
    _resting_limit(broker, "resting-1")
    _resting_limit(broker, "resting-2")

    with _api(settings) as api, _api(settings, token=None) as unconfigured:
        # Without the token: nothing changes.
        for path, body in (
            ("/trading/kill-switch", {"engaged": True, "reason": "x"}),
            ("/trading/orders/cancel-all", {"reason": "x"}),
            ("/trading/positions/flatten", {"reason": "x"}),
            ("/trading/resume", {"reason": "x"}),
        ):
            missing = api.post(path, json=body)
            wrong = api.post(path, json=body, headers={"Authorization": "Bearer nope"})
            disabled = unconfigured.post(path, json=body, headers=AUTH)
            assert (missing.status_code, wrong.status_code) == (401, 401), path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert missing.headers["content-type"] == "application/problem+json"
            assert disabled.status_code == 403
            assert "API_CONTROL_TOKEN" in disabled.json()["detail"]
        assert api.get("/trading/controls").json()["events"] == []
        assert len(_open_orders(paper_broker)) == 2
        empty = api.post(
            "/trading/kill-switch", json={"engaged": True, "reason": " "}, headers=AUTH
        )
        assert (empty.status_code, empty.json()["parameter"]) == (400, "reason")

        engaged = api.post(
            "/trading/kill-switch", json={"engaged": True, "reason": "incident 7"}, headers=AUTH
        )
        engaged_at = datetime.now(UTC)
        assert engaged.status_code == 200
        assert engaged.json()["kill_switch"]["engaged"] is True
        assert engaged.json()["kill_switch"]["origin"] == "api"
        orders_at_engage = len(paper_broker.orders())
        # it takes effect within a poll interval of the flow's controls (a decision within it
        # passes risk on the state read before, and the executor's fresh check blocks its send)
        wait_until(
            lambda: flow.runtime.controls.kill_switch_reason() is not None,
            timeout=settings.trading.poll_interval_s + 5,
            message="the flow never saw the kill switch",
        )
        insert_signals(ch_client, rows[8:16])  # seconds 4..7: 8 decisions, all refused

        def refused() -> int:
            return sum(
                1
                for d in flow.decisions()
                if d.status is DecisionStatus.REJECTED
                and "kill_switch" in {r.code.value for r in d.risk_reasons}
            )

        wait_until(lambda: refused() == 8, timeout=20, message=lambda: f"{refused()} refused")
        took_effect = engaged_at + timedelta(seconds=settings.trading.poll_interval_s)
        assert len(paper_broker.orders()) == orders_at_engage
        assert [o for o in paper_broker.orders() if o.submitted_at > took_effect] == []
        status = api.get("/trading/status").json()
        assert (status["state"], status["kill_switch"]) == ("halted", True)
        assert status["kill_switch_state"]["reason"] == "incident 7"
        ready = api.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "degraded")

        # Cancel-all: carried out by the running flow, leaves no open order at the broker.
        accepted = api.post("/trading/orders/cancel-all", json={"reason": "flat"}, headers=AUTH)
        assert accepted.status_code == 202
        assert accepted.json()["event"]["state"] in ("pending", "done")

        def command_state(event_id: int) -> str:
            events = api.get("/trading/controls").json()["events"]
            return next(e["state"] for e in events if e["id"] == event_id)

        cancel_id = accepted.json()["event"]["id"]
        wait_until(lambda: command_state(cancel_id) == "done", timeout=10, message="not run")
        assert _open_orders(paper_broker) == []

        # Flatten: every position closed, recorded, so reconciliation sees no drift.
        assert paper_broker.positions(), "the crossing orders left positions to flatten"
        flat = api.post("/trading/positions/flatten", json={"reason": "eod"}, headers=AUTH)
        assert flat.status_code == 202
        wait_until(lambda: command_state(flat.json()["event"]["id"]) == "done", timeout=10)
        wait_until(lambda: not paper_broker.positions(), timeout=10, message="still positions")
        report = flow.runtime.reconciler.reconcile_once()
        assert report.in_sync, report.drifts

        # Release: trading resumes without a restart.
        released = api.post(
            "/trading/kill-switch", json={"engaged": False, "reason": "resolved"}, headers=AUTH
        )
        assert released.json()["kill_switch"]["engaged"] is False
        # like the engage, it takes effect within a poll interval of the flow's controls
        wait_until(
            lambda: flow.runtime.controls.kill_switch_reason() is None,
            timeout=settings.trading.poll_interval_s + 5,
            message="the flow never saw the release",
        )
        before = len(paper_broker.orders())
        insert_signals(ch_client, rows[16:24])  # seconds 8..11: exactly 8 more orders
        wait_until(
            lambda: len(paper_broker.orders()) == before + 8,
            timeout=20,
            message=lambda: f"{len(paper_broker.orders()) - before} orders after release",
        )
        audit = api.get("/trading/controls").json()["events"]
    assert [(e["action"], e["origin"]) for e in reversed(audit)] == [
        ("engage", "api"),
        ("cancel_all", "api"),
        ("flatten", "api"),
        ("release", "api"),
    ]
    assert all(e["state"] == "done" for e in audit)


def test_a_broker_answering_401_halts_trading_until_it_recovers_and_an_operator_resumes(
    flow: RunningFlow, settings: Settings, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    rows = crossing_signals(start, 12)
    insert_signals(ch_client, rows[:4])  # seconds 0..1: 2 orders
    wait_until(lambda: len(paper_broker.orders()) == 2, timeout=20, message="flow not trading")
    errors_before = _sample("torghut_trading_reconcile_errors_total", kind="broker_rejected")
    with _api(settings) as api:
        assert api.get("/readyz").status_code == 200
        paper_broker.set_credentials("rotated-key", "rotated-secret")
        rotated = datetime.now(UTC)

        def halts() -> list[dict[str, Any]]:
            return list(api.get("/trading/status").json()["halts"])

        found = wait_until(halts, timeout=MAX_AGE_S + 3, message="no halt")
        halted_after = (datetime.now(UTC) - rotated).total_seconds()
        assert [h["reason"] for h in found] == ["reconcile_failing"]
        assert "401" in found[0]["detail"]
        assert found[0]["resume_required"] is True
        assert halted_after < MAX_AGE_S + 3
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["halts"][0]["reason"] == "reconcile_failing"
        assert api.get("/trading/health").json()["status"] == "degraded"
        # The flow keeps running and refuses every decision; nothing reaches the broker.
        insert_signals(ch_client, rows[4:8])  # seconds 2..3: 4 decisions

        def halted_decisions() -> int:
            return sum(
                1
                for d in flow.decisions()
                if "trading_halted" in {r.code.value for r in d.risk_reasons}
            )

        wait_until(lambda: halted_decisions() == 4, timeout=20, message="decisions not refused")
        assert len(paper_broker.orders()) == 2
        # The reconcile thread keeps trying (and counting) while the broker refuses.
        wait_until(
            lambda: (
                _sample("torghut_trading_reconcile_errors_total", kind="broker_rejected")
                >= errors_before + 3
            ),
            timeout=10,
            message="reconcile thread stopped trying",
        )
        early = api.post("/trading/resume", json={"reason": "too early"}, headers=AUTH)
        assert early.json()["event"]["result"]["still_halted"][0]["kind"] == "reconcile_failing"
        assert api.get("/readyz").status_code == 503

        paper_broker.set_credentials("sim-key", "sim-secret")
        wait_until(
            lambda: all(h["cause_gone"] for h in halts()),
            timeout=10,
            message="the halt never saw the broker recover",
        )
        assert api.get("/readyz").status_code == 503  # still waits for the operator
        resumed = api.post("/trading/resume", json={"reason": "keys fixed"}, headers=AUTH)
        assert resumed.status_code == 200
        assert resumed.json()["event"]["result"]["cleared"] == ["reconcile_failing"]
        assert resumed.json()["halts"] == []
        assert api.get("/readyz").status_code == 200
        wait_until(lambda: flow.runtime.executor.gate() is None, timeout=5, message="still denied")
        insert_signals(ch_client, rows[8:12])  # seconds 4..5: trading again, exactly 4 orders
        wait_until(
            lambda: len(paper_broker.orders()) == 6,
            timeout=20,
            message=lambda: f"{len(paper_broker.orders())} orders after resume",
        )


def test_an_open_order_the_broker_forgot_is_marked_and_reported_and_the_flow_starts(
    settings: Settings, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    broker = TradingClient("sim-key", "sim-secret", paper=True, url_override=paper_broker.base_url)
    _resting_limit(broker, "before-the-reset")
    first = TradingRuntime.open(settings, stream=False)
    try:
        first.reconciler.reconcile_once()  # adopts the open order into the store
    finally:
        first.close()
    (order,) = paper_broker.orders()
    paper_broker.forget_order(str(order.id))  # the paper account is reset
    unknown_before = _sample("torghut_trading_orders_unknown_at_broker_total")

    settings.trading = settings.trading.model_copy(update={"exit_at_end": True})
    runtime = TradingRuntime.open(settings, stream=False)
    try:
        runtime.start()
        assert runtime.reconciler.halted_reason is None
        with runtime.store.unit_of_work() as uow:
            execution = uow.get_execution(str(order.id))
        assert execution is not None
        assert execution.status is OrderStatus.UNKNOWN_AT_BROKER
        assert _sample("torghut_trading_orders_unknown_at_broker_total") == unknown_before + 1
        with _api(settings) as api:
            events = api.get("/trading/controls").json()["events"]
        assert [(e["action"], e["origin"]) for e in events] == [
            ("order_unknown_at_broker", "automatic")
        ]
        assert str(order.id) in events[0]["reason"]
        # ... and the flow trades.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
        insert_signals(ch_client, crossing_signals(start, 2))
        ch = settings.clickhouse
        run_main(build_flow(runtime, lambda: connect(ch)))  # type: ignore[no-untyped-call]
        assert len(paper_broker.orders()) == 2
        assert {o.qty for o in paper_broker.orders()} == {Decimal(1)}
    finally:
        runtime.close()


def test_pipeline_lag_halts_trading_and_the_halt_lifts_when_the_lag_recovers(
    settings: Settings, ch_client: Any, paper_broker: BrokerSimulator
) -> None:
    settings.risk = settings.risk.model_copy(update={"max_pipeline_lag_s": 5.0})
    settings.trading = settings.trading.model_copy(update={"exit_at_end": True})
    runtime = TradingRuntime.open(settings, stream=False)
    ch = settings.clickhouse
    try:
        runtime.start()
        halts_before = _sample("torghut_trading_halts_total", kind="pipeline_lag")
        old = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
        insert_signals(ch_client, crossing_signals(old, 3, symbols=("AAPL",)))
        run_main(build_flow(runtime, lambda: connect(ch)))  # type: ignore[no-untyped-call]
        with runtime.store.unit_of_work() as uow:
            lagged = uow.decisions(limit=100)
        assert len(lagged) == 2
        assert all("trading_halted" in {r.code.value for r in d.risk_reasons} for d in lagged)
        assert paper_broker.orders() == []
        (halt,) = runtime.store.controls.state().halts
        assert (halt.kind, halt.requires_resume) == ("pipeline_lag", False)
        assert _sample("torghut_trading_halts_total", kind="pipeline_lag") == halts_before + 1

        fresh = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
        insert_signals(ch_client, crossing_signals(fresh, 3, symbols=("AAPL",)))
        run_main(build_flow(runtime, lambda: connect(ch)))  # type: ignore[no-untyped-call]
        assert runtime.store.controls.state().halts == ()
        assert len(paper_broker.orders()) == 2, "a caught-up pipeline trades without a resume"
        assert _sample("torghut_trading_pipeline_lag_seconds") < 5.0
    finally:
        runtime.close()


def test_trading_kill_switch_at_start_engages_the_persisted_switch_once(
    settings: Settings,
) -> None:
    settings.trading = settings.trading.model_copy(update={"kill_switch": True})
    for _ in range(2):
        runtime = TradingRuntime.open(settings, stream=False)
        try:
            runtime.start()
            assert runtime.executor.gate() == (
                "kill switch engaged (startup): TRADING_KILL_SWITCH=true at start"
            )
        finally:
            runtime.close()
    with _api(settings) as api:
        events = api.get("/trading/controls").json()["events"]
        assert [(e["action"], e["origin"]) for e in events] == [("engage", "startup")]
        released = api.post(
            "/trading/kill-switch", json={"engaged": False, "reason": "checked"}, headers=AUTH
        )
        assert released.json()["kill_switch"]["engaged"] is False
        assert api.get("/trading/status").json()["kill_switch"] is False


def test_nothing_is_sent_once_stopping_or_once_the_gate_closes_before_submit(
    settings: Settings, paper_broker: BrokerSimulator
) -> None:
    runtime = TradingRuntime.open(settings, stream=False)
    try:
        runtime.start()
        now = datetime.now(UTC)
        first, second = (
            decision(event_ts=now - timedelta(seconds=s), qty=Decimal(1)) for s in (2, 1)
        )
        row = SignalRow("AAPL", first.event_ts, 1, "PT1S", 1, Signal(close=187.4))
        STOPPING.set()
        try:
            with pytest.raises(TradingStopped):
                runtime.pipeline.process([Decided(row, (first,))])
            stored = runtime.store.record_decision(Adjudication.of(first, risk=RiskVerdict(())))
            assert runtime.executor.submit(stored).outcome is Outcome.UNRESOLVED
        finally:
            STOPPING.clear()
        with runtime.store.unit_of_work() as uow:
            kept = uow.get_decision(first.decision_hash)
        assert kept is not None
        assert kept.status is DecisionStatus.PENDING_SUBMIT  # the next start resolves it

        # Approved, then the kill switch is engaged before the submit: never sent.
        pending = runtime.store.record_decision(Adjudication.of(second, risk=RiskVerdict(())))
        runtime.store.controls.set_kill_switch(True, "between risk and submit", Origin.CLI)
        runtime.controls.state(fresh=True)
        blocked = runtime.executor.submit(pending)
        assert blocked.outcome is Outcome.BLOCKED
        assert "between risk and submit" in blocked.detail
        with runtime.store.unit_of_work() as uow:
            failed = uow.get_decision(second.decision_hash)
        assert failed is not None
        assert failed.status is DecisionStatus.SUBMIT_FAILED
        assert paper_broker.orders() == []
    finally:
        runtime.close()


def test_the_start_pass_still_sends_a_fresh_intent_left_pending_by_a_crash(
    settings: Settings, pg_url: str, paper_broker: BrokerSimulator
) -> None:
    """The pass that resolves pending intents is not blocked by its own "not completed yet"."""
    runtime = TradingRuntime.open(settings, stream=False)
    try:
        fresh = decision(event_ts=datetime.now(UTC) - timedelta(seconds=1), qty=Decimal(1))
        runtime.store.record_decision(Adjudication.of(fresh, risk=RiskVerdict(())))
        runtime.start()
        assert [o.client_order_id for o in paper_broker.orders()] == [fresh.decision_hash]
    finally:
        runtime.close()
