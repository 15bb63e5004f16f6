"""Backtest throughput: signal rows replayed end to end, against reading them alone.

Run: ``.venv/bin/python -m bench.backtest [--symbols 500] [--seconds 1800] [--rounds 2]
[--batch 50000] [--chunk-rows 500000]`` (rows per streamed block and per query)

A synthetic trading window is generated inside ClickHouse (chdb in a temporary directory,
``INSERT … SELECT FROM numbers()``, so the benchmark itself holds no rows): ``--symbols``
symbols × ``--seconds`` one-second final ``ta_signals`` rows starting yesterday 14:30 UTC
(within the table's TTL), with MACD, RSI, Bollinger bands, a close and a one-cent quote shaped
so both strategies trade (a MACD cross every ~60 s per symbol, band excursions every few
minutes). One trading day of 500 symbols is ``--seconds 23400`` (11.7 M rows); the default is a
scaled share of it.

Per round, interleaved:

* ``read`` (the same-run baseline): :class:`trading.backtest.source.SignalSource` streams
  the window (the live reader's FINAL selection in cursor order, one query, decoded into
  ``SignalRow``) and nothing else;
* ``replay``: :func:`trading.backtest.run.run_backtest`, both strategies, risk (defaults, market
  always open), the paper matching engine (touch fills, 1 bp slippage, fees), the ledger and the
  report document — end to end, input checks included.

Printed: rows/s (wall), rows per CPU-second of the process (chdb runs in it: the CPU figure
counts the ClickHouse threads too), the replay/read ratio of each (on a shared machine the
wall-clock ratio moves with the neighbours' load; the CPU one is the steadier), decisions and
fills, and how far the RSS grows during a replay of the first half of the window and of the
full window, each from where it started (a bounded replay does not grow with the window). Not
a timed test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from torghut.clickhouse import Client, connect, migrate
from torghut.config import ClickHouseSettings
from torghut.logs import configure_logging
from trading.backtest.config import BacktestConfig, FillConfig
from trading.backtest.run import run_backtest
from trading.backtest.source import SignalSource

_INSERT = """
INSERT INTO ta_signals (symbol, event_ts, seq, ingest_ts, is_final, source, window_size,
  version, macd, macd_signal, rsi14, boll_mid, boll_upper, boll_lower, imbalance_bid_px,
  imbalance_ask_px, close)
SELECT
  concat('S', leftPad(toString(s), 4, '0')) AS symbol,
  addSeconds({start:DateTime64(3, 'UTC')}, t) AS event_ts,
  t AS seq, now64(3) AS ingest_ts, 1, 'bench', 'PT1S', 1,
  sin(t / 10 + s) AS macd,
  sin((t - 3) / 10 + s) AS macd_signal,
  50 + 15 * sin(t / 37 + s) AS rsi14,
  base + 2 * sin((t - 20) / 40 + s) AS boll_mid,
  boll_mid + 1.2 AS boll_upper,
  boll_mid - 1.2 AS boll_lower,
  px - 0.01, px + 0.01,
  px
FROM (
  SELECT number % {symbols:UInt32} AS s, intDiv(number, {symbols:UInt32}) AS t,
         50 + (s % 200) AS base,
         round(base + 2 * sin(t / 40 + s) + 0.8 * sin(t / 7 + 2 * s), 2) AS px
  FROM numbers({rows:UInt64})
)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=1800, help="23400 = one trading day")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=50_000, help="rows per streamed ClickHouse block")
    ap.add_argument("--chunk-rows", type=int, default=500_000, help="rows per ClickHouse query")
    args = ap.parse_args()
    sizes = {"batch_size": args.batch, "chunk_rows": args.chunk_rows}
    configure_logging("ERROR")  # risk rejections log at info; the table is the output
    rows = args.symbols * args.seconds
    start = (datetime.now(UTC) - timedelta(days=1)).replace(
        hour=14, minute=30, second=0, microsecond=0
    )
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        settings = ClickHouseSettings(dsn=f"chdb://{tmp}", database="bench")
        client = connect(settings)
        try:
            migrate(client, settings)
            began = time.perf_counter()
            client.command(
                _INSERT, parameters={"start": start, "symbols": args.symbols, "rows": rows}
            )
            client.command("OPTIMIZE TABLE ta_signals FINAL")
            print(
                f"{rows:,} rows ({args.symbols} symbols x {args.seconds} s) generated in "
                f"{time.perf_counter() - began:.1f} s"
            )
            symbols = tuple(f"S{i:04d}" for i in range(args.symbols))
            full = _config(start, args.seconds, symbols)
            half = _config(start, args.seconds // 2, symbols)
            _memory(client, half, full, sizes)
            print(
                f"{'round':<6} {'phase':<7} {'rows/s':>10} {'rows/CPU-s':>11} "
                f"{'ratio':>6} {'CPU ratio':>9}"
            )
            for n in range(1, args.rounds + 1):
                read = _read(client, full, sizes)
                replay = _replay(client, full, sizes)
                wall_ratio = f"{(replay[0] / replay[1]) / (read[0] / read[1]):.2f}"
                cpu_ratio = f"{(replay[0] / replay[2]) / (read[0] / read[2]):.2f}"
                for phase, (count, wall, cpu, _) in (("read", read), ("replay", replay)):
                    last = phase == "replay"
                    print(
                        f"{n:<6} {phase:<7} {count / wall:>10,.0f} {count / cpu:>11,.0f} "
                        f"{wall_ratio if last else '':>6} {cpu_ratio if last else '':>9}"
                    )
                print(f"       replay: {replay[3]}")
        finally:
            client.close()


def _config(start: datetime, seconds: int, symbols: tuple[str, ...]) -> BacktestConfig:
    return BacktestConfig(
        start=start,
        end=start + timedelta(seconds=seconds),
        symbols=symbols,
        strategies=("macd_rsi", "bollinger_reversion"),
        fill=FillConfig(model="touch", slippage_bps=Decimal(1), fee_per_share=Decimal("0.005")),
        risk={"max_orders_per_minute": 1_000_000, "max_gross_exposure": 10_000_000},
        initial_cash=Decimal(10_000_000),
    )


def _read(
    client: Client, config: BacktestConfig, sizes: dict[str, int]
) -> tuple[int, float, float, str]:
    source = SignalSource(client, config, **sizes)
    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in source.rows())
    return count, time.perf_counter() - wall, time.process_time() - cpu, ""


def _replay(
    client: Client, config: BacktestConfig, sizes: dict[str, int]
) -> tuple[int, float, float, str]:
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = run_backtest(client, config, code_version="bench", **sizes)
    elapsed, used = time.perf_counter() - wall, time.process_time() - cpu
    summary: dict[str, Any] = outcome.report["summary"]
    detail = (
        f"{summary['decisions']:,} decisions {summary['statuses']}, {summary['fills']:,} fills, "
        f"{len(outcome.report_json) / 1e6:.1f} MB JSON "
        f"(sha256 {hashlib.sha256(outcome.report_json).hexdigest()[:16]}: equal inputs and code, "
        "equal digest)"
    )
    return outcome.replay.rows, elapsed, used, detail


def _memory(
    client: Client, half: BacktestConfig, full: BacktestConfig, sizes: dict[str, int]
) -> None:
    """Peak RSS while replaying half the window, then the whole window, each from the RSS it
    started at: the peak is reset before each (Linux's ``/proc/self/clear_refs``), so the
    window's generation in the embedded ClickHouse, which sets the process's highest mark
    before any replay, hides nothing. A replay whose memory depends on the window's length
    grows more over the whole window than over half of it."""
    grown = []
    for config in (half, full):
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_mb("VmRSS")
        _replay(client, config, sizes)
        peak = _status_mb("VmHWM")
        grown.append(f"{before:,.0f} → peak {peak:,.0f} MB (+{peak - before:,.0f})")
    print(f"RSS during a replay of half the window: {grown[0]}; of all of it: {grown[1]}")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
