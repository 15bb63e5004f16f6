"""Live gating: no combination short of every gate ever reaches the live endpoint.

A real HTTP server stands in for the live endpoint and records every request it gets. For each
of the 16 combinations of ``TRADING_MODE``, ``TRADING_LIVE_ENABLED``, ``ALPACA_LIVE_BASE_URL``
and ``ALPACA_PAPER_BASE_URL`` the trading runtime is opened exactly as the flow opens it and an
order is sent through it: only the all-gates combination may reach the recorder (and must,
proving the recorder would notice); every other one either refuses to start or trades paper.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any, Literal

import pytest
from sqlalchemy.orm import Session

from dataflows.trading import TradingRuntime
from tests.trading.flow_fixtures import (
    PRICES,
    SYMBOLS,
    paper_broker,
    static_quotes,
    trading_settings,
)
from torghut.config import AlpacaSettings, ClickHouseSettings, Settings, TradingSettings
from torghut.events import Signal
from torghut.sim.broker import BrokerSimulator
from trading.adapters.alpaca_broker import client_target
from trading.adapters.store import create_engine
from trading.backtest.records import BacktestRunRow
from trading.core.domain import Action, OrderType, SignalRow
from trading.core.live_gates import LiveGateError
from trading.core.pipeline import Decided
from trading.core.ports import BrokerRejected, OrderRequest
from trading.core.risk import RiskCheck
from trading.core.strategies import MacdRsi, build_strategies, make_decision
from trading.promote.records import record_verdict
from trading.promote.subject import subject_hash, subject_of_strategies

__all__ = ["paper_broker"]


@dataclass
class Recorder:
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def live_endpoint() -> Iterator[Recorder]:
    """Records every request; answers 403 so a client that got here fails loudly."""
    rec = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            rec.requests.append(f"{self.command} {self.path}")
            body = json.dumps({"code": 40310000, "message": "live endpoint"}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield rec
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


MODES: tuple[Literal["paper", "live"], ...] = ("paper", "live")
COMBINATIONS = list(itertools.product(MODES, (False, True), (False, True), (False, True)))


def test_endpoint_selection_matrix_is_paper_unless_every_gate_is_set() -> None:
    for mode, enabled, live_url, paper_url in COMBINATIONS:
        trading = TradingSettings(mode=mode, live_enabled=enabled)
        alpaca = AlpacaSettings(
            live_base_url="https://live.example" if live_url else "",
            paper_base_url="http://paper.example" if paper_url else "",
        )
        all_gates = mode == "live" and enabled and live_url
        if mode == "live" and not all_gates:
            with pytest.raises(LiveGateError):
                client_target(trading, alpaca)
            continue
        target = client_target(trading, alpaca)
        assert target.paper is not all_gates
        assert target.url == (
            "https://live.example" if all_gates else ("http://paper.example" if paper_url else "")
        )


def test_paper_mode_refuses_a_live_host_as_paper_url() -> None:
    alpaca = AlpacaSettings(paper_base_url="https://api.alpaca.markets")
    with pytest.raises(LiveGateError, match="live trading host"):
        client_target(TradingSettings(), alpaca)


def test_no_combination_short_of_all_gates_reaches_the_live_endpoint(
    live_endpoint: Recorder, paper_broker: BrokerSimulator, tmp_path: Path
) -> None:
    reached: list[tuple[str, bool, bool, bool]] = []
    for n, (mode, enabled, live_url, paper_url) in enumerate(COMBINATIONS):
        before = len(live_endpoint.requests)
        settings = trading_settings(
            clickhouse=ClickHouseSettings(dsn="http://127.0.0.1:1", database="unused"),
            store_url=f"sqlite:///{tmp_path / f'gates-{n}.sqlite'}",
            broker_url=paper_broker.base_url if paper_url else "",
            data_dir=tmp_path,
            mode=mode,
            live_enabled=enabled,
        )
        settings.alpaca = AlpacaSettings(
            paper_base_url=settings.alpaca.paper_base_url,
            live_base_url=live_endpoint.url if live_url else "",
            symbols=settings.alpaca.symbols,
        )
        all_gates = mode == "live" and enabled and live_url
        order = OrderRequest(f"gate-{n}", "AAPL", "buy", Decimal(1), OrderType.MARKET)
        try:
            runtime = TradingRuntime.open(settings, stream=False)
        except LiveGateError:
            assert not all_gates
            assert len(live_endpoint.requests) == before
            continue
        try:
            try:
                runtime.broker.submit(order)
                runtime.broker.account()
            except BrokerRejected:
                assert all_gates
            if len(live_endpoint.requests) > before:
                reached.append((mode, enabled, live_url, paper_url))
            else:
                submitted = runtime.broker.get_order_by_client_id(order.client_order_id)
                assert submitted is not None
                assert submitted.symbol == "AAPL"
                at_paper = {o.client_order_id for o in paper_broker.orders()}
                assert (order.client_order_id in at_paper) is paper_url
        finally:
            runtime.close()
            paper_broker.disconnect_streams()
    assert reached == [("live", True, True, False), ("live", True, True, True)]
    assert all(r.startswith(("POST /v2/orders", "GET /v2/account")) for r in live_endpoint.requests)


def _buy(at: datetime, symbol: str = "AAPL") -> Decided:
    row = SignalRow(symbol, at, 0, "PT1S", 1, Signal(close=PRICES[symbol]))
    strategy = MacdRsi.from_params({"qty": "1"})
    decision = make_decision(strategy, strategy._p, row, Action.BUY, PRICES[symbol], "test")
    return Decided(row, (decision,))


def _promote(url: str, settings: Settings) -> None:
    """A stored backtest run of exactly the live subject, and a passing verdict for it."""
    strategies = build_strategies(settings.trading)
    subject = subject_of_strategies(strategies, None)
    engine = create_engine(url)
    try:
        with Session(engine) as s:
            run = BacktestRunRow(
                id=uuid.uuid4(),
                window_start=datetime.now(UTC),
                window_end=datetime.now(UTC),
                config_digest="d",
                code_version="c",
                subject_hash=subject_hash(subject),
                inputs={},
                summary={},
                metrics={},
                rejections={},
                shadow={},
                verdicts={},
                report_json="{}",
                report_html="",
            )
            s.add(run)
            s.flush()
            record_verdict(
                s, run_id=run.id, subject=subject, digest=run.subject_hash, policy={}, reasons=[]
            )
            s.commit()
    finally:
        engine.dispose()


def test_live_mode_without_a_passing_verdict_sends_nothing(tmp_path: Path) -> None:
    """Every live gate set, a live endpoint that records orders (a broker simulator): without a
    passing promotion verdict for exactly the running strategies, the decision is rejected with
    ``not_promoted`` and the endpoint gets no order; with one, the same flow sends (proving the
    endpoint would have noticed)."""
    live = BrokerSimulator(static_quotes(), key_id="sim-key", secret_key="sim-secret")
    store_url = f"sqlite:///{tmp_path / 'live.sqlite'}"
    with live.run_in_thread():
        settings = trading_settings(
            clickhouse=ClickHouseSettings(dsn="http://127.0.0.1:1", database="unused"),
            store_url=store_url,
            broker_url="",
            data_dir=tmp_path,
            mode="live",
            live_enabled=True,
        )
        settings.alpaca = AlpacaSettings(live_base_url=live.base_url, symbols=SYMBOLS)
        now = datetime.now(UTC)
        runtime = TradingRuntime.open(settings, stream=False)
        runtime.start()
        try:
            outcome = runtime.pipeline.process([_buy(now)])
            with runtime.store.unit_of_work() as uow:
                stored = uow.get_decision(outcome[0].decision_hash)
        finally:
            runtime.close()
        assert [o.status for o in outcome] == ["rejected"]
        assert stored is not None
        assert [r.code for r in stored.risk_reasons] == [RiskCheck.NOT_PROMOTED]
        assert "no passing promotion verdict" in stored.risk_reasons[0].detail
        assert live.orders() == []

        _promote(store_url, settings)
        runtime = TradingRuntime.open(settings, stream=False)
        runtime.start()
        try:
            outcome = runtime.pipeline.process([_buy(now + timedelta(seconds=1))])
        finally:
            runtime.close()
        assert [o.execution for o in outcome] == ["submitted"], outcome
        assert [o.client_order_id for o in live.orders()] == [outcome[0].decision_hash]
