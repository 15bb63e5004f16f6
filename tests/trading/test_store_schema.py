"""Migrations: ``upgrade head`` on a fresh Postgres database and on SQLite creates exactly the
tables of the models, idempotently, with the design's unique hash and index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dlq.tables import metadata as dead_letter_metadata
from torghut.config import StoreSettings
from trading.adapters.store import Base, TradingStore, upgrade
from trading.backtest.records import BacktestRunRow
from trading.promote.records import PromotionSignoffRow, PromotionVerdictRow

REPO = Path(__file__).resolve().parents[2]

TABLES = {
    "trade_decisions",
    "executions",
    "order_events",
    "llm_decision_reviews",
    "trade_cursor",
    "position_snapshots",
    "trading_control_events",
    "trading_halts",
    "dead_letters",  # dlq.tables: same database and migration chain
    "dead_letter_offsets",
    "dead_letter_replays",
    "backtest_runs",
    "promotion_signoffs",
    "promotion_verdicts",
    "trading_dead_letters",
}
HEAD = "0005_trading_dead_letters"
# The backtest and promotion models live beside their modules; importing them registers them.
assert {
    BacktestRunRow.__tablename__,
    PromotionSignoffRow.__tablename__,
    PromotionVerdictRow.__tablename__,
} <= TABLES


def test_upgrade_head_creates_exactly_the_model_schema(store_url: str) -> None:
    upgrade(store_url)
    upgrade(store_url)  # idempotent: already at head
    engine = sa.create_engine(store_url)
    pg = engine.dialect.name == "postgresql"  # SQLite reflects exact decimals as VARCHAR
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == HEAD
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": pg}),
                [Base.metadata, dead_letter_metadata],
            )
        assert diff == [], diff
        indexes = {ix["name"]: ix for ix in inspector.get_indexes("trade_decisions")}
        assert indexes["trade_decisions_symbol_created_at_idx"]["column_names"][0] == "symbol"
        uniques = {
            tuple(u["column_names"]) for u in inspector.get_unique_constraints("trade_decisions")
        }
        assert ("decision_hash",) in uniques
        exec_uniques = {
            tuple(u["column_names"]) for u in inspector.get_unique_constraints("executions")
        }
        assert {("alpaca_order_id",), ("client_order_id",)} <= exec_uniques
        columns = {c["name"]: c for c in inspector.get_columns("trade_decisions")}
        assert not columns["decision_hash"]["nullable"]
        if pg:
            assert columns["decision_json"]["type"].__class__.__name__ == "JSONB"
            assert columns["qty"]["type"].__class__.__name__ == "NUMERIC"
    finally:
        engine.dispose()


def test_processes_starting_together_migrate_one_after_the_other(pg_url: str) -> None:
    """Separate processes (Alembic's context is process-global, so not threads)."""
    code = "import sys; from trading.adapters.store import upgrade; upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    engine = sa.create_engine(pg_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 1
    finally:
        engine.dispose()


def test_embedded_default_creates_its_directory(tmp_path: Path) -> None:
    url = StoreSettings(url=f"sqlite:///{tmp_path / 'new' / 'dir' / 'trading.sqlite'}").url
    store = TradingStore.open(url)
    try:
        with store.unit_of_work() as uow:
            assert uow.pending_submissions() == []
    finally:
        store.close()
    assert (tmp_path / "new" / "dir" / "trading.sqlite").is_file()


def test_upgrade_through_an_open_engine(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    try:
        upgrade(engine)
        assert set(sa.inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    finally:
        engine.dispose()
