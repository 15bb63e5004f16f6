"""RowBinary rows (``torghut.clickhouse.row_binary``) against clickhouse-connect's own insert.

The oracle is the engine: the same rows inserted by the compiled encoder into one table and by
clickhouse-connect's column-by-column ``insert`` into a twin must read back identically.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torghut.clickhouse import Client
from torghut.clickhouse.row_binary import Layout, insert_rows, layout_of

COLUMNS = {
    "id": "UInt32",
    "sym": "LowCardinality(String)",
    "text": "String",
    "maybe_text": "Nullable(String)",
    "flag": "UInt8",
    "count": "UInt64",
    "delta": "Int64",
    "px": "Float64",
    "maybe_px": "Nullable(Float64)",
    "maybe_size": "Nullable(UInt64)",
    "ts": "DateTime64(3, 'UTC')",
    "maybe_ts": "Nullable(DateTime64(3, 'UTC'))",
    "fine_ts": "DateTime64(6, 'UTC')",
}
NAMES = tuple(COLUMNS)

# times the oracle writes the same way: aware datetimes in 1970..2100 (UTC or a fixed offset),
# and ints (ticks)
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
)
_TIMES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=_ZONES
)
_TICKS = st.integers(min_value=0, max_value=4_000_000_000_000)
_TEXT = st.text(max_size=200)


@st.composite
def _rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    n = draw(st.integers(min_value=1, max_value=40))
    rows = []
    for i in range(n):
        rows.append(
            (
                i,
                draw(st.sampled_from(["AAPL", "MSFT", "", "ÅÄÖ"])),
                draw(_TEXT),
                draw(st.none() | _TEXT),
                draw(st.integers(0, 255)),
                draw(st.integers(0, 2**64 - 1)),
                draw(st.integers(-(2**63), 2**63 - 1)),
                draw(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1000, 1000)),
                draw(st.none() | st.floats(allow_nan=False)),
                draw(st.none() | st.integers(0, 2**64 - 1)),
                draw(_TIMES | _TICKS),
                draw(st.none() | _TIMES),
                draw(_TIMES),
            )
        )
    return rows


def _create(ch: Client, table: str) -> None:
    cols = ", ".join(f"`{name}` {kind}" for name, kind in COLUMNS.items())
    ch.command(f"CREATE TABLE IF NOT EXISTS {table} ({cols}) ENGINE = MergeTree ORDER BY id")
    ch.command(f"TRUNCATE TABLE {table}")


def _read(ch: Client, table: str) -> list[tuple[Any, ...]]:
    rows = ch.query(f"SELECT * FROM {table} ORDER BY id").result_rows
    return [tuple(_bits(v) for v in row) for row in rows]


def _bits(value: Any) -> Any:
    """Floats by their bits (NaN equals NaN; -0.0 differs from 0.0)."""
    return struct.pack("<d", value) if isinstance(value, float) else value


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows())
def test_rows_read_back_as_clickhouse_connect_writes_them(
    ch_client: Client, rows: list[tuple[Any, ...]]
) -> None:
    _create(ch_client, "ours")
    _create(ch_client, "oracle")
    layout = layout_of(ch_client, "ours", NAMES)
    insert_rows(ch_client, "ours", layout, rows)
    ch_client.insert("oracle", [_as_oracle_takes(r) for r in rows], column_names=NAMES)
    assert _read(ch_client, "ours") == _read(ch_client, "oracle")


def _as_oracle_takes(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """clickhouse-connect writes a column's values by the type of its first value: ints as
    floats in the Float64 column, so a column mixing ints and datetimes is given whole."""
    values = list(row)
    values[7] = float(values[7])
    if isinstance(values[10], int):
        values[10] = datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=values[10])
    return tuple(values)


def test_a_bar_end_on_the_second_is_exact_and_microseconds_floor_to_the_scale(
    ch_client: Client,
) -> None:
    _create(ch_client, "ours")
    layout = layout_of(ch_client, "ours", NAMES)
    ts = datetime(2026, 12, 7, 14, 30, 1, 999_999, tzinfo=UTC)
    before_epoch = datetime(1969, 12, 31, 23, 59, 59, 500, tzinfo=UTC)
    row = (1, "A", "", None, 1, 0, 0, 1.5, None, None, ts, before_epoch, ts)
    insert_rows(ch_client, "ours", layout, [row])
    got = ch_client.query(
        "SELECT toUnixTimestamp64Milli(ts), toUnixTimestamp64Milli(maybe_ts), "
        "toUnixTimestamp64Micro(fine_ts) FROM ours"
    ).result_rows
    whole = math.floor(ts.timestamp())
    assert got == [(whole * 1000 + 999, -1000, whole * 1_000_000 + 999_999)]


def test_values_a_column_cannot_hold_are_refused_naming_row_and_column(ch_client: Client) -> None:
    _create(ch_client, "ours")
    layout = layout_of(ch_client, "ours", NAMES)
    ts = datetime(2026, 12, 7, tzinfo=UTC)
    good = (0, "A", "", None, 1, 0, 0, 1.5, None, None, ts, None, ts)
    cases = [
        ((*good[:2], None, *good[3:]), TypeError, "column 'text'"),
        ((*good[:4], 256, *good[5:]), OverflowError, "column 'flag'"),
        ((2**32, *good[1:]), OverflowError, "column 'id'"),
        ((*good[:5], -1, *good[6:]), OverflowError, "column 'count'"),
        ((*good[:7], "1.5", *good[8:]), TypeError, "column 'px'"),
        ((*good[:10], "2026-12-07", *good[11:]), TypeError, "column 'ts'"),
        ((*good[:2], "\ud800", *good[3:]), ValueError, "column 'text': 'utf-8' codec"),
        (good[:5], ValueError, "row 1 has 5 values"),
    ]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            layout.encode([good, bad])
    insert_rows(ch_client, "ours", layout, [good])
    assert ch_client.query("SELECT count() FROM ours").result_rows == [(1,)]


def test_a_column_type_the_encoder_does_not_know_is_refused_at_layout(ch_client: Client) -> None:
    ch_client.command("CREATE TABLE odd (id UInt32, tags Array(String)) ENGINE = Memory")
    with pytest.raises(ValueError, match=r"column 'tags': type Array\(String\) is not supported"):
        layout_of(ch_client, "odd", ("id", "tags"))
    nullable_string = get_from_name("LowCardinality(Nullable(String))")
    assert Layout.of(("a",), (nullable_string,)).codes == bytes([0x81])
