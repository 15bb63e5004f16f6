"""The SLI metrics of :mod:`torghut.observability.metrics`, recorded by the real components:
the ClickHouse sink on chdb (bar latency, insert failures by error class), Bytewax recovery
partitions (checkpoint age), and the metrics endpoint setting."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)
from prometheus_client import REGISTRY

from operators.clickhouse_sink import ClickHouseSink, clickhouse_sink
from tests.helpers import wait_until
from torghut.clickhouse import MICROBAR_COLUMNS, Client, connect, microbar_row, migrate
from torghut.config import ClickHouseSettings, MetricsSettings, SettingsError
from torghut.events import Envelope, Microbar, Window
from torghut.observability.metrics import (
    BarLatency,
    insert_error_class,
    serve_dataflow_metrics,
    watch_checkpoints,
)

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def bar_row(second: int, *, final: bool = True, symbol: str = "AAPL") -> tuple[object, ...]:
    end = T0 + timedelta(seconds=second)
    return microbar_row(
        Envelope(
            event_ts=end,
            ingest_ts=end,
            symbol=symbol,
            seq=0,
            is_final=final,
            payload=Microbar(o=1.0, h=2.0, l=0.5, c=1.5, v=10.0, vwap=1.5, count=2),
            window=Window(size="PT1S"),
        )
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ch_settings(chdb_path: Path, ch_database: str) -> ClickHouseSettings:
    return ClickHouseSettings(dsn=f"chdb://{chdb_path}", database=ch_database)


@pytest.fixture
def ch(ch_settings: ClickHouseSettings) -> Iterator[Client]:
    client = connect(ch_settings)
    migrate(client, ch_settings)
    yield client
    client.close()


def sink_flow(rows: list[tuple[object, ...]], sink: ClickHouseSink) -> Dataflow:
    flow = Dataflow(f"sli_{uuid.uuid4().hex[:6]}")
    clickhouse_sink("ch", op.input("in", flow, TestingSource(rows)), sink)
    return flow


def test_bar_latency_is_observed_once_per_bar_second_and_finality_stored(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    table = f"bars_{uuid.uuid4().hex[:8]}"
    ch.command(f"CREATE TABLE {table} AS ta_microbars")
    # 3 seconds x 4 symbols of final rows, and 2 provisional rows of one second.
    rows = [bar_row(s, symbol=sym) for s in range(3) for sym in ("A", "B", "C", "D")]
    rows += [bar_row(10, final=False, symbol=sym) for sym in ("A", "B")]
    sink = ClickHouseSink(lambda: connect(ch_settings), table, MICROBAR_COLUMNS)
    started = time.time()
    run_main(sink_flow(rows, sink))
    took = time.time() - started

    assert ch.command(f"SELECT count() FROM {table}") == len(rows)
    final = {"table": table, "final": "true"}
    assert sample("torghut_ta_bar_latency_seconds_count", **final) == 3
    assert sample("torghut_ta_bar_latency_seconds_count", table=table, final="false") == 1
    # Each observation is "stored at" minus "bar end", bars ending 5 minutes ago.
    expected = sum(started - (T0 + timedelta(seconds=s)).timestamp() for s in range(3))
    got = sample("torghut_ta_bar_latency_seconds_sum", **final)
    assert expected <= got <= expected + 3 * took + 1e-6


def test_bar_latency_ignores_tables_without_bar_columns() -> None:
    latency = BarLatency("other_table", ("symbol", "value"))
    latency.observe([("A", 1.0)])
    assert sample("torghut_ta_bar_latency_seconds_count", table="other_table", final="true") == 0


def test_failed_inserts_are_counted_by_table_and_error_class(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    table = f"missing_{uuid.uuid4().hex[:8]}"  # never created: every attempt fails
    sink = ClickHouseSink(
        lambda: connect(ch_settings), table, MICROBAR_COLUMNS, max_retries=2, backoff_initial_s=0
    )
    with pytest.raises(BytewaxRuntimeError):
        run_main(sink_flow([bar_row(0)], sink))

    counted = {
        kind: sample("torghut_clickhouse_insert_failures_total", table=table, error=kind)
        for kind in ("connection", "data", "schema", "server", "other")
    }
    assert sum(counted.values()) == 3  # the first attempt and 2 retries
    assert counted["other"] == 0, counted  # chdb's error is classified, not "other"
    assert sample("torghut_clickhouse_rows_failed_total", table=table) == 1


def test_error_classes_are_bounded() -> None:
    assert insert_error_class(OperationalError("connection refused")) == "connection"
    assert insert_error_class(DataError("bad row")) == "data"
    assert insert_error_class(ProgrammingError("unknown table")) == "schema"
    assert insert_error_class(DatabaseError("Code: 243. NOT_ENOUGH_SPACE")) == "server"
    assert insert_error_class(RuntimeError("anything else")) == "other"


def test_checkpoint_age_follows_the_recovery_partitions(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    directory.mkdir()
    watch_checkpoints(directory, 5)
    assert sample("torghut_recovery_last_checkpoint_timestamp_seconds") == 0  # none yet
    assert sample("torghut_recovery_snapshot_interval_seconds") == 5

    init_db_dir(directory, 1)
    created = sample("torghut_recovery_last_checkpoint_timestamp_seconds")
    assert created == max(p.stat().st_mtime for p in directory.glob("part-*"))

    # A run of a flow commits its epochs to the partitions: the checkpoint time moves.
    wait_until(lambda: time.time() > created, timeout=5, interval=0.001)  # mtime granularity
    out: list[int] = []
    flow = Dataflow("checkpointed")
    op.output("out", op.input("in", flow, TestingSource([1, 2, 3])), TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(directory)))
    assert out == [1, 2, 3]
    assert sample("torghut_recovery_last_checkpoint_timestamp_seconds") > created


def test_metrics_port_turns_on_the_bytewax_endpoint(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert serve_dataflow_metrics(MetricsSettings(graph_dir=tmp_path / "g"), env) is None
    assert env == {}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = MetricsSettings(port=port, graph_dir=tmp_path / "g")
    assert serve_dataflow_metrics(settings, env) == port
    assert env == {
        "BYTEWAX_DATAFLOW_API_ENABLED": "true",
        "BYTEWAX_DATAFLOW_API_PORT": str(port),
        "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp_path / "g"),
    }
    assert (tmp_path / "g").is_dir()


def test_a_taken_metrics_port_is_a_settings_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env: dict[str, str] = {}
        with pytest.raises(SettingsError, match=f"METRICS_PORT={port}: cannot serve /metrics"):
            serve_dataflow_metrics(MetricsSettings(port=port, graph_dir=tmp_path), env)
        assert env == {}


def test_an_invalid_metrics_port_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from torghut.config import load_settings

    monkeypatch.setenv("METRICS_PORT", "70000")
    with pytest.raises(SettingsError, match="METRICS_PORT='70000'"):
        load_settings()
