"""Runs in Postgres, served by the API; the promotion check failing with every reason, sign-off,
a passing verdict, and the live gate's lookup."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from tests.backtest.helpers import band_config, band_rows
from torghut.clickhouse import connect
from torghut.config import ClickHouseSettings, Settings, StoreSettings
from trading.adapters.store import create_engine, upgrade
from trading.adapters.store.models import ExecutionRow, TradingHaltRow
from trading.backtest.config import BacktestConfig
from trading.backtest.engine import Backtest
from trading.backtest.records import save_run
from trading.backtest.report import encode_report, render_html, report_of
from trading.backtest.review import offline_review
from trading.core.clock import SimulatedClock
from trading.core.llm import PROMPT_VERSION
from trading.core.strategies import build_strategies
from trading.promote.__main__ import main as promote
from trading.promote.gate import not_promoted_reason
from trading.promote.records import PromotionVerdictRow, latest_passing

CLOSES = [100.0, 94.0, 96.0, 101.0, 102.0]


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    upgrade(pg_url)
    eng = create_engine(pg_url)
    yield eng
    eng.dispose()


def _store_run(engine: sa.Engine, config: BacktestConfig) -> tuple[uuid.UUID, bytes]:
    clock = SimulatedClock(config.start)
    review, model = offline_review(config, {}, clock)
    replay = Backtest(config, review=review, review_model=model, clock=clock).run(band_rows(CLOSES))
    report = report_of(replay, code_version="test")
    body = encode_report(report)
    with sessionmaker(engine)() as s:
        run_id = save_run(s, body, render_html(report))
        s.commit()
    return run_id, body


def test_stored_runs_are_listed_and_served_by_the_api(
    engine: sa.Engine, pg_url: str, chdb_path: Path, ch_database: str
) -> None:
    run_id, body = _store_run(engine, band_config())
    ch = ClickHouseSettings(dsn=f"chdb://{chdb_path}", database=ch_database)
    settings = Settings(clickhouse=ch, store=StoreSettings(url=pg_url))
    app = create_app(
        settings,
        ch_client_factory=lambda: connect(ch),
        store_engine=engine,
        alpaca_check=lambda: "ok",
    )
    with TestClient(app) as client:
        listed = client.get("/trading/backtests")
        assert listed.status_code == 200
        runs = listed.json()
        assert [r["id"] for r in runs] == [str(run_id)]
        assert runs[0]["metrics"]["overall"]["trades"] == 1
        assert runs[0]["summary"]["statuses"] == {"approved": 2}
        one = client.get(f"/trading/backtests/{run_id}")
        assert one.status_code == 200
        assert one.json()["config_digest"] == band_config().digest()
        report = client.get(f"/trading/backtests/{run_id}/report.json")
        assert report.content == body
        page = client.get(f"/trading/backtests/{run_id}/report.html")
        assert page.headers["content-type"].startswith("text/html")
        assert b"chart-equity" in page.content
        assert client.get(f"/trading/backtests/{uuid.uuid4()}").status_code == 404
        bad = client.get("/trading/backtests", params={"limit": 0})
        assert bad.status_code == 400
        assert bad.json()["parameter"] == "limit"


STRICT = """
[backtest]
min_sharpe = 1e12
max_drawdown = 0.0
max_reject_rate = 0.0

[paper]
equity = 100000.0
max_drawdown = 0.0005
max_reconciliation_errors_increase = 0

[llm]
min_verdict_stability = 0.9
min_veto_precision = 0.5

[signoff]
required_on_change = true
"""

LENIENT = """
[backtest]
min_sharpe = 0.0

[signoff]
required_on_change = true
"""


def _paper_record(engine: sa.Engine) -> None:
    """A losing round trip in paper (−100 on 100 000) and a reconciliation halt."""
    now = datetime.now(UTC)
    with Session(engine) as s:
        for i, (side, price) in enumerate((("buy", "100"), ("sell", "90"))):
            s.add(
                ExecutionRow(
                    id=uuid.uuid4(),
                    decision_id=None,
                    alpaca_order_id=f"o{i}",
                    client_order_id=f"c{i}",
                    symbol="AAA",
                    side=side,
                    qty=Decimal(10),
                    status="filled",
                    filled_qty=Decimal(10),
                    filled_avg_price=Decimal(price),
                    submitted_at=now - timedelta(minutes=10 - i),
                )
            )
        s.add(
            TradingHaltRow(
                kind="reconcile_failing",
                detail="broker unreachable",
                since=now - timedelta(minutes=5),
                updated_at=now,
                requires_resume=False,
            )
        )
        s.commit()


def test_promotion_fails_with_every_reason_then_passes_after_sign_off(
    engine: sa.Engine, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = band_config(
        review="approve", risk={"symbol_cooldown_s": 0, "max_orders_per_minute": 1}
    )
    run_id, _ = _store_run(engine, config)
    _paper_record(engine)
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT)
    strategies = build_strategies(config.trading_settings())
    with Session(engine) as s:
        assert not_promoted_reason(s, strategies, PROMPT_VERSION) is not None

    assert promote(["check", "--run", str(run_id), "--policy", str(strict)], store_url=pg_url) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL: ")]
    expected = [
        "sharpe",
        "backtest max drawdown",
        "reject rate 0.5",
        "paper drawdown 0.001",
        "reconciliation errors rose from 0 to 1",
        "veto precision on losing trades undefined",
        "baseline run",
        "no human sign-off",
    ]
    assert len(failed) == len(expected), failed
    for line, needle in zip(failed, expected, strict=True):
        assert needle in line
    with Session(engine) as s:
        verdict = s.scalars(sa.select(PromotionVerdictRow)).one()
        assert not verdict.passed
        assert len(verdict.reasons) == len(expected)

    lenient = tmp_path / "lenient.toml"
    lenient.write_text(LENIENT)
    assert promote(["check", "--run", str(run_id), "--policy", str(lenient)], store_url=pg_url) == 1
    assert "no human sign-off" in capsys.readouterr().out
    signed = promote(
        ["sign-off", "--run", str(run_id), "--approver", "alice", "--reason", "params reviewed"],
        store_url=pg_url,
    )
    assert signed == 0
    out: dict[str, Any] = msgspec.json.decode(capsys.readouterr().out)
    assert set(out["subject"]["strategies"]) == {"bollinger_reversion"}
    assert out["subject"]["prompt_version"] == PROMPT_VERSION
    assert promote(["check", "--run", str(run_id), "--policy", str(lenient)], store_url=pg_url) == 0
    with Session(engine) as s:
        passing = latest_passing(s, out["subject_hash"])
        assert passing is not None
        assert passing.run_id == str(run_id)
        assert not_promoted_reason(s, strategies, PROMPT_VERSION) is None
        # another prompt version or other parameters are another subject: not promoted
        assert not_promoted_reason(s, strategies, None) is not None


def test_promotion_refuses_a_bad_policy_or_an_unknown_run(
    engine: sa.Engine, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text("[backtest]\nmin_sharp = 1.0\n")
    run = str(uuid.uuid4())
    assert promote(["check", "--run", run, "--policy", str(typo)], store_url=pg_url) == 2
    assert "min_sharp" in capsys.readouterr().err
    ok = tmp_path / "ok.toml"
    ok.write_text(LENIENT)
    assert promote(["check", "--run", run, "--policy", str(ok)], store_url=pg_url) == 2
    assert f"no backtest run {run}" in capsys.readouterr().err
