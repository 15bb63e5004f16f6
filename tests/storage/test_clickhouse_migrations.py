"""Migrations: one source renders single-node and cluster DDL; applied once, checksummed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torghut.clickhouse import MICROBAR_COLUMNS, SIGNAL_COLUMNS, Client, MigrationError, migrate
from torghut.clickhouse.migrations import MIGRATIONS_DIR, load_migrations, render, statements
from torghut.clickhouse.rows import SIGNAL_VALUE_COLUMNS
from torghut.config import ClickHouseSettings
from torghut.events import Signal

SINGLE = ClickHouseSettings(dsn="chdb:///unused", database="torghut")
CLUSTER = ClickHouseSettings(dsn="chdb:///unused", database="torghut", cluster="prod")


def _rendered(settings: ClickHouseSettings) -> list[str]:
    return [s for m in load_migrations() for s in statements(render(m.source, settings))]


def test_cluster_variant_uses_replicated_engines_on_cluster() -> None:
    sql = _rendered(CLUSTER)
    assert len(sql) == 4
    assert all(" ON CLUSTER `prod`" in s for s in sql)
    assert sql[0].startswith(
        "CREATE TABLE IF NOT EXISTS `torghut`.ta_microbars ON CLUSTER `prod` ("
    )
    assert (
        "ENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/{cluster}/{shard}/ta_microbars', '{replica}', ingest_ts)\n"
        "PARTITION BY toDate(event_ts)\n"
        "ORDER BY (symbol, event_ts, seq)\n"
        "TTL toDateTime(event_ts) + INTERVAL 30 DAY\n"
        "SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"
    ) in sql[0]
    assert (
        "ENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/{cluster}/{shard}/ta_signals', '{replica}', ingest_ts)\n"
        "PARTITION BY toDate(event_ts)\n"
        "ORDER BY (symbol, event_ts, seq)\n"
        "TTL toDateTime(event_ts) + INTERVAL 14 DAY\n"
        "SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"
    ) in sql[1]
    assert sql[2].startswith("ALTER TABLE `torghut`.ta_signals ON CLUSTER `prod`\n")
    assert sql[3].startswith(
        "CREATE OR REPLACE VIEW `torghut`.ta_signals_flat ON CLUSTER `prod` AS"
    )
    assert sql[3].endswith("FROM `torghut`.ta_signals FINAL")


def test_single_node_variant_uses_plain_engines() -> None:
    sql = "\n".join(_rendered(SINGLE))
    assert "ON CLUSTER" not in sql
    assert "Replicated" not in sql
    assert sql.count("ENGINE = ReplacingMergeTree(ingest_ts)") == 2
    assert "{{" not in sql


def test_database_name_is_quoted_from_settings() -> None:
    odd = ClickHouseSettings(dsn="chdb:///unused", database="we`ird")
    assert all(s.count("`we\\`ird`.") >= 1 for s in _rendered(odd))


def test_unknown_placeholder_is_rejected() -> None:
    with pytest.raises(MigrationError, match="unknown placeholder"):
        render("CREATE TABLE {{db}}.x {{oncluster}}", SINGLE)


def test_bad_file_name_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        load_migrations(tmp_path)


def test_apply_twice_applies_nothing_the_second_time(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    # the ch fixture applied everything once already
    assert migrate(ch, ch_settings) == []
    logged = ch.query("SELECT version, name FROM schema_migrations FINAL ORDER BY version")
    assert logged.result_rows == [
        (1, "ta_tables"),
        (2, "ta_signals_close"),
        (3, "ta_signals_flat_view"),
    ]


def test_tables_follow_the_design(ch_settings: ClickHouseSettings, ch: Client) -> None:
    rows = ch.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": ch_settings.database},
    ).result_rows
    engines = dict(rows)
    assert set(engines) == {"schema_migrations", "ta_microbars", "ta_signals", "ta_signals_flat"}
    for table, days in (("ta_microbars", 30), ("ta_signals", 14)):
        full = engines[table]
        assert full.startswith("ReplacingMergeTree(ingest_ts) PARTITION BY toDate(event_ts)")
        assert "ORDER BY (symbol, event_ts, seq)" in full
        assert f"TTL toDateTime(event_ts) + toIntervalDay({days})" in full
        assert "ttl_only_drop_parts = 1" in full
        assert "index_granularity = 8192" in full


def test_column_lists_match_the_tables(ch_settings: ClickHouseSettings, ch: Client) -> None:
    def columns(table: str) -> tuple[str, ...]:
        rows = ch.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}"
            " ORDER BY position",
            parameters={"db": ch_settings.database, "t": table},
        ).result_rows
        return tuple(r[0] for r in rows)

    assert columns("ta_microbars") == MICROBAR_COLUMNS
    assert columns("ta_signals") == SIGNAL_COLUMNS
    assert tuple(Signal.__struct_fields__) == SIGNAL_VALUE_COLUMNS
    assert columns("ta_signals_flat") == (
        "ts", "symbol", "macd", "macd_signal", "signal", "rsi", "rsi14", "ema", "vwap",
        "signal_json", "timeframe", "price", "close", "spread",
    )  # fmt: skip


def test_changed_applied_file_stops_before_anything_is_applied(
    tmp_path: Path, ch_settings: ClickHouseSettings, ch: Client
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    assert migrate(ch, ch_settings, migrations) == []  # same checksums as the shipped files
    first = migrations / "0001_ta_tables.sql"
    first.write_text(first.read_text().replace("INTERVAL 14 DAY", "INTERVAL 7 DAY"))
    (migrations / "0004_extra.sql").write_text(
        "CREATE TABLE IF NOT EXISTS {{db}}.extra {{on_cluster}} (x UInt8)\n"
        "ENGINE = {{replacing_engine(extra, x)}} ORDER BY x;\n"
    )
    with pytest.raises(MigrationError, match="0001_ta_tables"):
        migrate(ch, ch_settings, migrations)
    exists = ch.command(f"EXISTS TABLE `{ch_settings.database}`.extra")
    assert exists == 0


def test_new_migration_is_applied_after_existing_ones(
    tmp_path: Path, ch_settings: ClickHouseSettings, ch: Client
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    (migrations / "0004_extra.sql").write_text(
        "-- a comment line\n"
        "CREATE TABLE IF NOT EXISTS {{db}}.extra {{on_cluster}} (x UInt8)\n"
        "ENGINE = {{replacing_engine(extra, x)}} ORDER BY x;\n\n"
        "INSERT INTO {{db}}.extra VALUES (7);\n"
    )
    assert migrate(ch, ch_settings, migrations) == ["0004_extra"]
    assert migrate(ch, ch_settings, migrations) == []
    assert ch.query("SELECT x FROM extra").result_rows == [(7,)]


def test_cli_prints_the_cluster_variant() -> None:
    env = {**os.environ, "CH_CLUSTER": "prod", "CH_DATABASE": "torghut"}
    done = subprocess.run(
        [sys.executable, "-m", "torghut.clickhouse", "--print"],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.startswith(
        "-- 0001_ta_tables\nCREATE TABLE IF NOT EXISTS `torghut`.ta_microbars ON CLUSTER `prod` ("
    )
    assert done.stdout.count("ReplicatedReplacingMergeTree(") == 2
