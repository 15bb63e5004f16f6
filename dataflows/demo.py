"""``make demo``: the whole pipeline on embedded defaults, with a visible result.

What runs, in this one process (see :mod:`dataflows.local` for why one process):

* the Alpaca-compatible market-data simulator (seeded synthetic market, timestamps on the wall
  clock) and the paper broker simulator filling against that market's quotes;
* the all-in-one dataflow: websocket ingest → dedup → 1 s microbars and indicators → ClickHouse
  (chdb under ``TORGHUT_DATA_DIR``) → paper trading (decision → review → risk → execution →
  reconciliation) recorded in the SQLite audit store;
* the HTTP API and dashboard on http://127.0.0.1:8080/ while the pipeline runs.

After ``DEMO_SECONDS`` (default 90; 0 = until Ctrl-C) the sources stop cleanly, everything
flushes, and a summary is printed: rows in ClickHouse, decisions, orders and fills. The demo
trades paper money at the built-in simulator only; it refuses to start with live trading set.

Run it again and it continues: the paper broker's account is saved in the data directory
(:data:`BROKER_STATE`) so it matches the positions the trading store remembers, and the flow
resumes from its Bytewax recovery store (:data:`RECOVERY_DIR`) so the indicators continue over
the stored history instead of restarting cold. The port is checked first: a busy one fails the
demo at once with a message, and the first line printed is the dashboard's URL.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from api.app import create_app
from api.schemas import CountByReason, PipelineLive
from api.server import BackgroundServer
from dataflows.local import MOVED_STEPS, LocalFlow, build_local_flow
from dataflows.startup import migrate_clickhouse
from dataflows.trading import TradingRuntime, exit_stopped, install_stop_handlers
from torghut.clickhouse import Client, connect
from torghut.config import Settings, SettingsError, load_settings
from torghut.logs import configure_logging, get_logger
from torghut.recovery import move_step_state
from torghut.redact import mask_dsn
from torghut.sim.market import MarketSimulator, SyntheticMarket
from trading.adapters.store.models import ExecutionRow, TradeDecisionRow
from trading.core.executor import TradingStopped

log = get_logger("dataflows.demo")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    configure_logging(args.log_level)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if settings.trading.mode == "live" or settings.alpaca.paper_base_url:
        print(
            "the demo trades only at the built-in paper simulator; unset TRADING_MODE=live "
            "and ALPACA_PAPER_BASE_URL",
            file=sys.stderr,
        )
        return 2

    try:
        _check_port_free(args.port)
    except OSError as exc:
        print(
            f"the demo cannot serve its dashboard on 127.0.0.1:{args.port}: {exc.strerror} "
            "(is another demo or API running? stop it, or pass --port / API_PORT)",
            file=sys.stderr,
        )
        return 2

    data_dir = settings.trading.dead_letter_path.parent
    symbols = tuple(args.symbols.split(",")) if args.symbols else settings.alpaca.symbols
    market = MarketSimulator(
        SyntheticMarket(args.seed, list(symbols), rate=args.rate, start=datetime.now(UTC)),
        credentials={
            settings.alpaca.key_id.get_secret_value(): settings.alpaca.secret_key.get_secret_value()
        },
        history_limit=10_000,
    )
    stop = threading.Event()
    with market.run_in_thread() as ws_url:
        _configure_for_demo(settings, ws_url, symbols)
        ch_settings = settings.clickhouse
        migrate_clickhouse(ch_settings)

        def ch_client() -> Client:
            return connect(ch_settings)

        runtime = TradingRuntime.open(settings, quotes=market)
        broker_state = data_dir / BROKER_STATE
        try:
            if runtime.simulator is not None and runtime.simulator.load_state(broker_state):
                log.warning("demo_broker_resumed", path=str(broker_state))
            runtime.start()
            local = build_local_flow(settings, runtime, ch_client, stop=stop)
            app = create_app(
                settings,
                ch_client_factory=ch_client,
                store_engine=runtime.store.engine,
                broker=runtime.broker,
                pipeline_probe=_probe(local),
            )
            with BackgroundServer(app, "127.0.0.1", args.port) as api_url:
                print(
                    f"dashboard: {api_url}/   (pipeline runs for "
                    f"{args.seconds or 'ever'} s; Ctrl-C stops it)",
                    flush=True,
                )
                _stop_after(stop, args.seconds, settings.trading.stop_grace_s)
                path = local.audit_path
                audit_from = path.stat().st_size if path.exists() else 0  # the file is appended
                try:
                    run_main(  # type: ignore[no-untyped-call]
                        local.flow,
                        epoch_interval=EPOCH,
                        recovery_config=_recovery(data_dir / RECOVERY_DIR),
                    )
                except TradingStopped:
                    log.warning("demo_stopped_mid_batch")
                runtime.finish()
                _print_summary(settings, ch_client, runtime, local, audit_from, api_url)
        finally:
            if runtime.simulator is not None:
                runtime.simulator.save_state(broker_state)
            runtime.close()
    exit_stopped()
    return 0


BROKER_STATE = "demo-broker-state.pickle"
"""The paper broker's account between demo runs: the trading store remembers the positions and
orders of earlier runs, so the broker must too (else the reconciler sees drift and halts)."""
RECOVERY_DIR = "demo-recovery"
"""Bytewax recovery of the demo's flow: a second run resumes the indicators where the first
stopped instead of restarting them cold beside the stored history."""
EPOCH = timedelta(seconds=2)


def _check_port_free(port: int) -> None:
    """Raise ``OSError`` when 127.0.0.1:``port`` is taken (checked before anything starts, so a
    second demo never prints the first one's URL as its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def _recovery(directory: Path) -> RecoveryConfig:
    """The demo's recovery store, created (one partition) on the first run; an earlier run's
    state of renamed steps re-filed under their new ids."""
    parts = sorted(directory.glob("part-*.sqlite3"))
    if parts:
        move_step_state(parts, MOVED_STEPS)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, 1)  # type: ignore[no-untyped-call]
    return RecoveryConfig(str(directory))  # type: ignore[no-untyped-call]


def _probe(local: LocalFlow) -> Callable[[], PipelineLive]:
    """What the dashboard's pipeline panel shows of the flow running in this process."""

    def probe() -> PipelineLive:
        status = local.source.status()
        progress = local.progress
        watermark = (
            None
            if progress.watermark_us is None
            else datetime.fromtimestamp(progress.watermark_us / 1e6, UTC)
        )
        return PipelineLive(
            ingest_state=status.state,
            ingest_detail=status.detail,
            ingest_last_message_at=status.last_message_at,
            ingest_reconnects=status.reconnects,
            watermark_at=watermark,
            last_snapshot_at=progress.last_snapshot_at,
            last_backup_at=progress.last_backup_at(),
            dead_letters=[
                CountByReason(source="ingest", reason="all", count=local.counters.dead_letters),
                CountByReason(source="ta", reason="all", count=progress.dead_letters),
            ],
        )

    return probe


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dataflows.demo", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", "90")))
    p.add_argument("--symbols", default=os.environ.get("DEMO_SYMBOLS", ""))
    p.add_argument("--rate", type=float, default=200.0, help="market events per second")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8080")))
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"))
    return p.parse_args(argv)


def _configure_for_demo(settings: Settings, ws_url: str, symbols: tuple[str, ...]) -> None:
    """Point the stream at the simulator and switch paper trading on (the demo's purpose)."""
    settings.alpaca = settings.alpaca.model_copy(update={"data_ws_url": ws_url, "symbols": symbols})
    settings.trading = settings.trading.model_copy(update={"enabled": True, "mode": "paper"})


def _stop_after(stop: threading.Event, seconds: float, grace_s: float) -> None:
    """After ``seconds`` when positive: sources end, stages flush. On SIGINT/SIGTERM also no
    order is sent any more and the process ends within ``grace_s``
    (:func:`dataflows.trading.install_stop_handlers`)."""
    install_stop_handlers(stop, grace_s)
    if seconds > 0:
        timer = threading.Timer(seconds, stop.set)
        timer.daemon = True
        timer.start()


def _print_summary(
    settings: Settings,
    ch_client: Any,
    runtime: TradingRuntime,
    local: LocalFlow,
    audit_from: int,
    api_url: str,
) -> None:
    audit = local.audit_path
    with audit.open("rb") as fh:
        fh.seek(audit_from)
        this_run = fh.read().splitlines()
    signal_corrections = sum(1 for line in this_run if b'"kind":"signal_correction"' in line)
    progress = local.progress
    client = ch_client()
    try:
        bars = client.query("SELECT count() FROM ta_microbars FINAL").result_rows[0][0]
        signals = client.query("SELECT count() FROM ta_signals FINAL").result_rows[0][0]
        warm = client.query(
            "SELECT count() FROM ta_signals FINAL WHERE macd_signal IS NOT NULL"
        ).result_rows[0][0]
    finally:
        client.close()
    with runtime.store.engine.connect() as conn:
        decisions = conn.execute(
            sa.select(TradeDecisionRow.status, sa.func.count()).group_by(TradeDecisionRow.status)
        ).all()
        executions = conn.execute(
            sa.select(ExecutionRow.status, sa.func.count()).group_by(ExecutionRow.status)
        ).all()
    sim = runtime.simulator
    orders = len(sim.orders()) if sim is not None else 0
    fills = len(sim.fills()) if sim is not None else 0
    print(
        "\n".join(
            [
                "",
                "Torghut demo summary",
                f"  ClickHouse {mask_dsn(settings.clickhouse.dsn)} "
                f"(db {settings.clickhouse.database}):",
                f"    ta_microbars FINAL rows: {bars}",
                f"    ta_signals   FINAL rows: {signals} ({warm} with MACD warm)",
                f"  TA: {progress.bars} final bars, {progress.provisional} provisional rows, "
                f"{progress.late_corrections} corrections (late trades)",
                f"  trading: {signal_corrections} corrections of signals already acted on "
                "(signal_correction in the audit trail)",
                f"  trading store ({mask_dsn(settings.store.url)}):",
                f"    decisions by status:  {dict(decisions) or '{}'}",
                f"    executions by status: {dict(executions) or '{}'}",
                f"  paper broker simulator: {orders} orders, {fills} fills",
                f"  audit trail (dead letters, outcomes, heartbeats): {audit}",
                f"  API was served at {api_url} (/trading/status, /api/torghut/ta/latest?symbol=…)",
            ]
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
