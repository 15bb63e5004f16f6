"""The replay from ClickHouse (chdb): streamed pages, byte-identical reports, clear errors, and
parity with the live paper flow (the same decisions, hash for hash)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from bytewax.testing import run_main
from sqlalchemy.orm import Session

from dataflows.trading import TradingRuntime, build_flow
from tests.trading.flow_fixtures import (
    SYMBOLS,
    ch_settings,
    crossing_signals,
    envelope,
    insert_signals,
    paper_broker,
    prepare_signals,
    trading_settings,
)
from torghut.clickhouse import connect
from torghut.config import ClickHouseSettings
from torghut.sim.broker import BrokerSimulator
from trading.adapters.store import create_engine
from trading.backtest.__main__ import main as backtest_cli
from trading.backtest.config import BacktestConfig, FillConfig
from trading.backtest.market import ReplayQuotes
from trading.backtest.records import get_run
from trading.backtest.run import run_backtest
from trading.backtest.source import (
    EmptyWindow,
    SignalSource,
    UnknownStrategy,
    UnknownSymbol,
    WindowBeyondTtl,
)
from trading.core.domain import SignalRow

__all__ = ["paper_broker"]

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(minutes=30)
PAPER_RISK = {
    "symbol_cooldown_s": 0,
    "max_orders_per_minute": 10_000,
    "max_signal_staleness_s": 3600,
    "allow_shorting": True,
    "max_notional_per_order": 100_000,
    "max_position_per_symbol": 1_000_000,
    "max_gross_exposure": 10_000_000,
}


@pytest.fixture
def ch(ch_client: Any, chdb_path: Path, ch_database: str) -> ClickHouseSettings:
    settings = ch_settings(chdb_path, ch_database)
    prepare_signals(ch_client, settings)
    return settings


def _config(**overrides: Any) -> BacktestConfig:
    values: dict[str, Any] = {
        "start": START,
        "end": START + timedelta(minutes=10),
        "symbols": SYMBOLS,
        "strategies": ("macd_rsi",),
        "fill": FillConfig(model="touch", slippage_bps=Decimal(1)),
        "risk": PAPER_RISK,
        "curve_period_s": 5,
    }
    values.update(overrides)
    return BacktestConfig(**values)


def test_replaying_a_window_twice_gives_byte_identical_json_whatever_the_page_size(
    ch_client: Any, ch: ClickHouseSettings
) -> None:
    insert_signals(ch_client, crossing_signals(START, 40))
    # rows outside the window or of another symbol are not replayed
    insert_signals(ch_client, crossing_signals(START + timedelta(minutes=10), 3))
    insert_signals(ch_client, crossing_signals(START, 5, symbols=("TSLA",)))
    config = _config()
    first = run_backtest(ch_client, config, code_version="v1", now=NOW, batch_size=7)
    second = run_backtest(ch_client, config, code_version="v1", now=NOW, batch_size=50_000)
    assert first.report_json == second.report_json
    assert first.replay.rows == 80
    # 2 symbols × 39 crosses, alternating buy/sell: every one approved and filled
    assert first.report["summary"]["statuses"] == {"approved": 78}
    assert len(first.replay.ledger.trades) == 78


def test_the_streamed_window_reads_every_row_once_in_cursor_order_whatever_its_blocks(
    ch_client: Any, ch: ClickHouseSettings
) -> None:
    """Oracle: ClickHouse's own order of the whole window. Rows on the window's first and last
    millisecond, several symbols on one instant, gaps longer than a chunk, rows just outside
    the window; blocks from 1 row upwards, chunks from one second to the whole window."""
    end = START + timedelta(minutes=10)
    times = [
        START,
        START + timedelta(milliseconds=1),
        START + timedelta(seconds=1, milliseconds=500),
    ]
    times += [START + timedelta(minutes=7) + timedelta(milliseconds=k) for k in (0, 0, 999)]
    times += [end - timedelta(milliseconds=1)]
    rows = [envelope(sym, t, k, close=100.0) for k, t in enumerate(times) for sym in SYMBOLS]
    outside = [envelope("AAPL", START - timedelta(milliseconds=1), 90, close=1.0)]
    outside += [envelope("AAPL", end, 91, close=1.0)]
    insert_signals(ch_client, [*rows, *outside])
    expected = ch_client.query(
        "SELECT symbol, event_ts, seq FROM ta_signals FINAL WHERE event_ts >= {a:DateTime64(3)} "
        "AND event_ts < {b:DateTime64(3)} ORDER BY event_ts, symbol, seq",
        parameters={"a": START, "b": end},
    ).result_rows
    assert len(expected) == len(rows)
    want = [(sym, t.replace(tzinfo=UTC), seq) for sym, t, seq in expected]  # naive: UTC
    for batch, chunk in ((1, 1), (2, 3), (3, 5), (5, 1_000), (50_000, 1)):
        source = SignalSource(ch_client, _config(), batch_size=batch, chunk_rows=chunk)
        assert source.check(NOW) == len(rows)
        blocks: list[int] = []
        got = [(r.symbol, r.event_ts, r.seq) for r in source.rows(blocks.append)]
        assert got == want, f"blocks of {batch}, chunks of {chunk} rows"
        assert sum(blocks) == len(rows)
        assert max(blocks) <= batch, blocks


def test_a_replay_that_fails_midway_leaves_the_client_usable(
    ch_client: Any, ch: ClickHouseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded engine runs nothing else while a stream is open, and the failure's
    traceback keeps the replay's frames (and the rows' iterator) alive: ``run_backtest``
    must close the stream itself on the way out. Real ClickHouse and a real replay; the one
    fault is injected (nothing in a replay of good rows fails on its own)."""
    insert_signals(ch_client, crossing_signals(START, 40))
    seen: list[str] = []

    def failing(_self: ReplayQuotes, row: SignalRow) -> float | None:
        seen.append(row.symbol)
        if len(seen) == 3:
            raise RuntimeError("replay failed")
        return None

    monkeypatch.setattr(ReplayQuotes, "update", failing)
    with pytest.raises(RuntimeError, match="replay failed") as failed:
        run_backtest(ch_client, _config(), code_version="v", now=NOW, batch_size=2)
    assert failed.traceback  # still held: the frames are alive
    assert ch_client.query("SELECT count() FROM ta_signals").result_rows == [(80,)]


def test_clear_errors_for_windows_that_cannot_be_replayed(
    ch_client: Any, ch: ClickHouseSettings
) -> None:
    insert_signals(ch_client, crossing_signals(START, 3))
    with pytest.raises(UnknownStrategy, match="momentum"):
        run_backtest(ch_client, _config(strategies=("momentum",)), code_version="v", now=NOW)
    with pytest.raises(UnknownSymbol, match="NVDA"):
        run_backtest(ch_client, _config(symbols=("AAPL", "NVDA")), code_version="v", now=NOW)
    empty = _config(start=START - timedelta(hours=1), end=START - timedelta(minutes=30))
    with pytest.raises(EmptyWindow, match="no final PT1S signal rows"):
        run_backtest(ch_client, empty, code_version="v", now=NOW)
    old = _config(start=NOW - timedelta(days=20), end=NOW)
    with pytest.raises(WindowBeyondTtl, match="TTL"):
        run_backtest(ch_client, old, code_version="v", now=NOW)


def test_a_recorded_paper_session_replays_to_the_same_decisions(
    ch_client: Any,
    ch: ClickHouseSettings,
    pg_url: str,
    paper_broker: BrokerSimulator,
    tmp_path: Path,
) -> None:
    """The live paper flow (embedded pipeline, paper broker simulator, Postgres) over a window,
    then the backtester over the same rows: the same decision hashes, all of them sent."""
    start = NOW - timedelta(minutes=5)
    insert_signals(ch_client, crossing_signals(start, 8))
    settings = trading_settings(
        clickhouse=ch, store_url=pg_url, broker_url=paper_broker.base_url, data_dir=tmp_path
    )
    runtime = TradingRuntime.open(settings)
    runtime.start()
    try:
        run_main(build_flow(runtime, lambda: connect(ch)))  # type: ignore[no-untyped-call]
        with runtime.store.unit_of_work() as uow:
            live = uow.decisions(limit=1000)
    finally:
        runtime.close()
    assert len(live) == 14
    config = _config(start=start, end=start + timedelta(minutes=1), risk=PAPER_RISK)
    replay = run_backtest(ch_client, config, code_version="v", now=NOW).replay
    assert sorted(d.decision_hash for d in replay.decisions) == sorted(
        d.decision_hash for d in live
    )
    assert {d.status.value for d in live} == {"submitted"}
    assert {d.status for d in replay.decisions} == {"approved"}
    assert sorted(o.client_order_id for o in paper_broker.orders()) == sorted(
        t.client_order_id for t in replay.ledger.trades
    )


def test_the_cli_writes_both_reports_stores_the_run_and_refuses_bad_input(
    ch_client: Any,
    ch: ClickHouseSettings,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    insert_signals(ch_client, crossing_signals(START, 10))
    monkeypatch.setenv("CH_DSN", ch.dsn)
    monkeypatch.setenv("CH_DATABASE", ch.database)
    monkeypatch.setenv("TRADING_DB_URL", pg_url)
    args = [
        "--from",
        START.isoformat(),
        "--to",
        (START + timedelta(minutes=1)).isoformat(),
        "--symbols",
        "aapl,MSFT",
        "--strategies",
        "macd_rsi",
        "--fill",
        "touch",
        "--risk",
        '{"symbol_cooldown_s": 0}',
        "--out",
        str(tmp_path),
        "--store",
        "--no-progress",
    ]
    assert backtest_cli(args) == 0
    out = msgspec.json.decode(capsys.readouterr().out)
    body = Path(out["json"]).read_bytes()
    assert msgspec.json.decode(body)["summary"]["statuses"] == {"approved": 18}
    assert Path(out["html"]).read_text().startswith("<!DOCTYPE html>")
    engine = create_engine(pg_url)
    try:
        with Session(engine) as s:
            run = get_run(s, uuid.UUID(out["run_id"]))
            assert run is not None
            assert run.report_json.encode() == body
    finally:
        engine.dispose()
    assert backtest_cli([*args[:5], "AAPL,NVDA", *args[6:]]) == 2
    assert "unknown symbol(s) ['NVDA']" in capsys.readouterr().err
    assert backtest_cli(["--from", "yesterday", *args[2:]]) == 2
    assert "--from 'yesterday' is not an ISO-8601 time" in capsys.readouterr().err
