"""``python -m trading.backtest``: replay a ClickHouse window and write (and store) the report.

::

    python -m trading.backtest --from 2026-12-01T14:30:00Z --to 2026-12-01T21:00:00Z \\
        --symbols AAPL,MSFT --strategies macd_rsi,bollinger_reversion \\
        --fill touch --slippage-bps 2 --fee-per-share 0.005 --out var/backtests --store

Reads ClickHouse from ``CH_DSN``/``CH_DATABASE`` and, with ``--store`` or ``--review
recorded``, the trading store from ``TRADING_DB_URL``. Writes ``<out>/<digest>.json`` (the
deterministic report) and ``<out>/<digest>.html`` and prints one JSON line: the files, the run
id when stored, and the headline metrics. Exit status 2 on a bad argument or a window that
cannot be replayed (the message says why).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec
from pydantic import ValidationError
from sqlalchemy.orm import sessionmaker

from torghut.clickhouse import connect
from torghut.config import ClickHouseSettings, StoreSettings
from trading.adapters.store import create_engine, upgrade
from trading.backtest.config import BacktestConfig, FillConfig
from trading.backtest.records import save_run
from trading.backtest.report import render_html
from trading.backtest.review import load_recorded
from trading.backtest.run import run_backtest
from trading.backtest.source import BacktestInputError

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        config = _config(args)
    except (ValueError, msgspec.ValidationError, InvalidOperation) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store_url = StoreSettings().url if (args.store or config.review == "recorded") else None
    recorded = {}
    if store_url is not None and config.review == "recorded":
        engine = create_engine(store_url)
        try:
            upgrade(engine)
            with sessionmaker(engine)() as session:
                recorded = load_recorded(session, config.start, config.end)
        finally:
            engine.dispose()
    client = connect(ClickHouseSettings())
    try:
        outcome = run_backtest(
            client, config, code_version=code_version(), recorded=recorded, progress=args.progress
        )
    except (BacktestInputError, ValidationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"backtest-{config.digest()[:16]}"
    page = render_html(outcome.report)
    stem.with_suffix(".json").write_bytes(outcome.report_json)
    stem.with_suffix(".html").write_text(page, encoding="utf-8")
    result: dict[str, Any] = {
        "json": str(stem.with_suffix(".json")),
        "html": str(stem.with_suffix(".html")),
        "summary": outcome.report["summary"],
        "metrics": outcome.report["metrics"]["overall"],
    }
    if store_url is not None and args.store:
        engine = create_engine(store_url)
        try:
            upgrade(engine)
            with sessionmaker(engine)() as session:
                result["run_id"] = str(save_run(session, outcome.report_json, page))
                session.commit()
        finally:
            engine.dispose()
    print(msgspec.json.encode(result).decode())
    return 0


def code_version() -> str:
    """The commit the code runs at (``+dirty`` with local changes); recorded with the run."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def _config(args: argparse.Namespace) -> BacktestConfig:
    fill = FillConfig(
        model=args.fill,
        slippage_bps=Decimal(args.slippage_bps),
        fee_per_share=Decimal(args.fee_per_share),
        fee_bps=Decimal(args.fee_bps),
        min_fee=Decimal(args.min_fee),
    )
    return BacktestConfig(
        start=_utc(args.start, "--from"),
        end=_utc(args.end, "--to"),
        symbols=tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()),
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        strategy_params=msgspec.json.decode(args.params) if args.params else {},
        order_qty=Decimal(args.qty),
        window_size=args.window,
        table=args.table,
        initial_cash=Decimal(args.cash),
        fill=fill,
        review=args.review,
        market_hours=args.market_hours,
        risk=msgspec.json.decode(args.risk) if args.risk else {},
        curve_period_s=args.curve_period,
    )


def _utc(text: str, flag: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r} is not an ISO-8601 time") from exc
    if value.tzinfo is None:
        raise ValueError(f"{flag} {text!r} needs a timezone (e.g. Z)")
    return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trading.backtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="start", required=True, help="window start (ISO-8601, UTC)")
    p.add_argument("--to", dest="end", required=True, help="window end, exclusive")
    p.add_argument("--symbols", required=True, help="comma-separated")
    p.add_argument("--strategies", required=True, help="comma-separated strategy ids")
    p.add_argument("--params", help='JSON: {"macd_rsi": {"rsi_overbought": 75}}')
    p.add_argument("--qty", default="1", help="order quantity of every strategy")
    p.add_argument("--window", default="PT1S", help="signal window size")
    p.add_argument("--table", default="ta_signals")
    p.add_argument("--cash", default="100000", help="initial cash")
    p.add_argument("--fill", choices=("next_bar", "touch"), default="next_bar")
    p.add_argument("--slippage-bps", default="0")
    p.add_argument("--fee-per-share", default="0")
    p.add_argument("--fee-bps", default="0")
    p.add_argument("--min-fee", default="0")
    p.add_argument("--review", choices=("none", "approve", "recorded"), default="none")
    p.add_argument("--market-hours", action="store_true", help="NYSE sessions (default: open)")
    p.add_argument("--risk", help='JSON of RISK_* overrides: {"symbol_cooldown_s": 0}')
    p.add_argument("--curve-period", type=int, default=60, help="equity curve period, seconds")
    p.add_argument("--out", default="var/backtests", help="report directory")
    p.add_argument("--store", action="store_true", help="store the run in backtest_runs")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
