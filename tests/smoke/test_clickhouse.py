"""ClickHouse smoke tests: the in-process chdb engine through clickhouse-connect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

DDL = """
CREATE TABLE ta_microbars (
    symbol LowCardinality(String),
    event_ts DateTime64(3, 'UTC'),
    seq UInt64,
    ingest_ts DateTime64(3, 'UTC'),
    is_final UInt8,
    source LowCardinality(String),
    window_size LowCardinality(String),
    o Float64, h Float64, l Float64, c Float64,
    v Decimal(18, 8),
    version UInt32
)
ENGINE = ReplacingMergeTree(ingest_ts)
PARTITION BY toDate(event_ts)
ORDER BY (symbol, event_ts, seq)
TTL toDateTime(event_ts) + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1
"""

COLS = [
    "symbol", "event_ts", "seq", "ingest_ts", "is_final", "source", "window_size",
    "o", "h", "l", "c", "v", "version",
]  # fmt: skip


def test_replacing_merge_tree_final_dedups(ch_client: Any, ch_database: str) -> None:
    assert ch_client.command("SELECT currentDatabase()") == ch_database
    ch_client.command(DDL)
    ev = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    first = [
        "AAPL", ev, 1, ev + timedelta(seconds=1), 0, "ws", "PT1S",
        190.0, 191.0, 189.5, 190.5, Decimal("100.5"), 1,
    ]  # fmt: skip
    late = [
        "AAPL", ev, 1, ev + timedelta(seconds=9), 1, "ws", "PT1S",
        190.0, 192.0, 189.5, 191.5, Decimal("130.25"), 2,
    ]  # fmt: skip
    other = [
        "MSFT", ev, 1, ev + timedelta(seconds=1), 1, "ws", "PT1S",
        400.0, 401.0, 399.0, 400.5, Decimal("10"), 1,
    ]  # fmt: skip
    ch_client.insert("ta_microbars", [first, other], column_names=COLS)
    ch_client.insert("ta_microbars", [late], column_names=COLS)  # separate insert -> own part

    raw = ch_client.query(
        "SELECT c, version FROM ta_microbars WHERE symbol = 'AAPL' ORDER BY ingest_ts"
    ).result_rows
    assert raw == [(190.5, 1), (191.5, 2)]

    final = ch_client.query(
        "SELECT symbol, event_ts, ingest_ts, is_final, c, v, version "
        "FROM ta_microbars FINAL WHERE symbol = 'AAPL'"
    ).result_rows
    assert len(final) == 1
    symbol, event_ts, ingest_ts, is_final, c, v, version = final[0]
    assert (symbol, is_final, c, v, version) == ("AAPL", 1, 191.5, Decimal("130.25"), 2)
    # clickhouse-connect's default tz_mode="naive_utc": UTC columns come back as naive UTC
    assert event_ts.tzinfo is None
    assert event_ts.replace(tzinfo=UTC) == ev
    assert ingest_ts.replace(tzinfo=UTC) == ev + timedelta(seconds=9)

    assert ch_client.command("SELECT count() FROM ta_microbars FINAL") == 2
    engine, ttl = ch_client.query(
        "SELECT engine, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'ta_microbars'"
    ).result_rows[0]
    assert engine == "ReplacingMergeTree"
    assert "ttl_only_drop_parts = 1" in ttl
    parts = ch_client.command(
        "SELECT count() FROM system.parts "
        "WHERE database = currentDatabase() AND table = 'ta_microbars' AND active"
    )
    assert parts == 2


def test_each_test_gets_its_own_database(ch_client: Any, ch_database: str) -> None:
    assert ch_client.command("SELECT currentDatabase()") == ch_database
    tables = ch_client.query(f"SELECT name FROM system.tables WHERE database = '{ch_database}'")
    assert tables.result_rows == []
