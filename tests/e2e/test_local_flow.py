"""End to end: simulated Alpaca stream → ingest → TA → ClickHouse → paper trading → Postgres.

The all-in-one flow of ``make demo`` runs in this process against the market simulator (fast
pacing, a finite seeded session), the paper broker simulator filling against that market, the
test's chdb database and a real Postgres store. The oracle is independent of the pipeline: the
1 s bars in ClickHouse must equal a polars group-by of the trades the simulator actually sent,
and every order at the broker must be one decision of the store, never two.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from bytewax.testing import run_main

from dataflows.local import MOVED_STEPS, build_local_flow
from dataflows.trading import TradingRuntime, build_flow
from tests.helpers import all_steps, wait_until
from torghut.clickhouse import connect, migrate
from torghut.config import (
    AlpacaSettings,
    ClickHouseSettings,
    RecoverySettings,
    RiskSettings,
    Settings,
    StoreSettings,
    TradingSettings,
)
from torghut.sim.market import MarketSimulator, SyntheticMarket
from trading.adapters.store.models import ExecutionRow, TradeCursorRow, TradeDecisionRow

SYMBOLS = ("AAPL", "MSFT", "NVDA")
SESSION = timedelta(minutes=3)
RATE = 150.0  # trade + quote events per virtual second, all symbols


def _settings(chdb_path: Path, database: str, pg_url: str, tmp: Path) -> Settings:
    return Settings(
        clickhouse=ClickHouseSettings(dsn=f"chdb://{chdb_path}", database=database),
        store=StoreSettings(url=pg_url),
        recovery=RecoverySettings(dir=tmp / "recovery", backup_dir=tmp / "backups"),
        alpaca=AlpacaSettings(symbols=SYMBOLS),
        trading=TradingSettings(enabled=True, dead_letter_path=tmp / "dead.jsonl"),
        risk=RiskSettings(max_signal_staleness_s=86_400, symbol_cooldown_s=0),
    )


def test_stream_to_trades_end_to_end(
    chdb_path: Path, ch_database: str, pg_url: str, tmp_path: Path
) -> None:
    settings = _settings(chdb_path, ch_database, pg_url, tmp_path)
    start = datetime.now(UTC).replace(microsecond=0) - SESSION - timedelta(minutes=1)
    market = MarketSimulator(
        SyntheticMarket(11, list(SYMBOLS), rate=RATE, start=start, max_events=int(RATE * 180)),
        pacing="fast",
        batch_size=200,
    )
    ch = settings.clickhouse
    client = connect(ch)
    migrate(client, ch)
    stop = threading.Event()
    with market.run_in_thread() as url:
        settings.alpaca = settings.alpaca.model_copy(update={"data_ws_url": url})
        runtime = TradingRuntime.open(settings, quotes=market, stream=False)
        try:
            runtime.start()
            local = build_local_flow(settings, runtime, lambda: connect(ch), stop=stop)
            ids = {s.step_id for s in all_steps(local.flow)}
            assert all(new in ids and old not in ids for old, new in MOVED_STEPS.items())
            received = local.counters.received

            def stop_when_all_received() -> None:
                market.wait_exhausted(120)
                wait_until(
                    lambda: sum(received.values()) + local.counters.ignored >= len(market.sent()),
                    timeout=60,
                    message="ingest did not receive every message the simulator sent",
                )
                stop.set()

            watcher = threading.Thread(target=stop_when_all_received, daemon=True)
            watcher.start()
            run_main(local.flow)  # type: ignore[no-untyped-call]
            watcher.join(timeout=5)
            assert stop.is_set(), "the flow ended before the simulator's session was consumed"
            # The stop ends every source at once, so signals the TA stage flushed at the end may
            # still be unread: a bounded trading pass resumes from the stored cursor and reads
            # them (the way a restarted trading flow would).
            runtime.settings.trading = runtime.settings.trading.model_copy(
                update={"exit_at_end": True}
            )
            run_main(build_flow(runtime, lambda: connect(ch)))  # type: ignore[no-untyped-call]
            sent = market.sent()
            orders = runtime.simulator.orders() if runtime.simulator else []
        finally:
            runtime.close()

    trades = [m.fields for m in sent if m.type == "t"]
    assert len(trades) > 1000
    # the embedded flow hands TA the wire bytes: every batch took the compiled paths
    assert local.progress.batches["compiled"] > 0
    assert local.progress.batches["python"] == 0
    expected = _bars_oracle(trades)
    got = pl.DataFrame(
        client.query(
            "SELECT symbol, toUnixTimestamp64Milli(event_ts) AS end_ms, o, h, l, c, v, count "
            "FROM ta_microbars FINAL WHERE window_size = 'PT1S' ORDER BY symbol, end_ms"
        ).named_results()
    )
    assert got.height == expected.height
    assert got.select("symbol", "end_ms", "count").equals(
        expected.select("symbol", "end_ms", "count")
    )
    for col in ("o", "h", "l", "c", "v"):
        diff = (got[col] - expected[col]).abs().max()
        assert isinstance(diff, float)
        assert diff < 1e-9, col

    warm = client.query(
        "SELECT count() FROM ta_signals FINAL "
        "WHERE window_size = 'PT1S' AND macd_signal IS NOT NULL"
    ).result_rows[0][0]
    assert warm > 0

    last_signal = client.query(
        "SELECT event_ts, symbol, seq FROM ta_signals FINAL WHERE window_size = 'PT1S' "
        "ORDER BY event_ts DESC, symbol DESC, seq DESC LIMIT 1"
    ).result_rows[0]
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            cursor = conn.execute(
                sa.select(TradeCursorRow.event_ts, TradeCursorRow.symbol, TradeCursorRow.seq)
            ).one()
            decisions = conn.execute(
                sa.select(TradeDecisionRow.decision_hash, TradeDecisionRow.status)
            ).all()
            executions = conn.execute(
                sa.select(ExecutionRow.client_order_id, ExecutionRow.status)
            ).all()
    finally:
        engine.dispose()
    assert tuple(cursor) == tuple(last_signal), "the trading loop did not read every signal"
    assert decisions, "no decisions were recorded"
    hashes = {h for h, _ in decisions}
    client_ids = [o.client_order_id for o in orders]
    assert len(client_ids) == len(set(client_ids)), "a decision reached the broker twice"
    assert set(client_ids) <= hashes
    assert {cid for cid, _ in executions} == set(client_ids)
    client.close()

    # The simulator sends nothing beyond the allowed lateness (its late prints are < 1 s late),
    # so no bar was closed early: no TA correction, and no signal the trading loop had already
    # passed changed (the audit file records those as ``signal_correction``).
    assert local.progress.late_corrections == 0
    audit = local.audit_path.read_text().splitlines()
    assert not [line for line in audit if '"kind":"signal_correction"' in line]


def _bars_oracle(trades: list[dict[str, Any]]) -> pl.DataFrame:
    """Independent 1 s OHLCV from the raw Alpaca trades (close = last by event time, then id)."""
    df = pl.DataFrame(
        {
            "symbol": [t["S"] for t in trades],
            "t": [t["t"] for t in trades],
            "i": [t["i"] for t in trades],
            "p": [float(t["p"]) for t in trades],
            "s": [float(t["s"]) for t in trades],
        }
    ).sort("symbol", "t", "i")
    return (
        df.with_columns(end_ms=(pl.col("t") // 1_000_000_000 + 1) * 1000)
        .group_by("symbol", "end_ms", maintain_order=True)
        .agg(
            o=pl.col("p").first(),
            h=pl.col("p").max(),
            l=pl.col("p").min(),
            c=pl.col("p").last(),
            v=pl.col("s").sum(),
            count=pl.len().cast(pl.UInt64),
        )
        .sort("symbol", "end_ms")
    )
