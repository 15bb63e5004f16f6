"""ClickHouseSink / clickhouse_sink on chdb: batching, retries on real failures, no silent loss."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, cluster_main, run_main
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import REGISTRY

from operators.clickhouse_sink import (
    ClickHouseSink,
    Row,
    _Inserter,
    _QueuedInsertPartition,
    _RowBatcher,
    clickhouse_sink,
)
from operators.key_groups import ALL_GROUPS, KeyGroupProgress
from tests.helpers import wait_until
from tests.storage.paced import PacedSource
from torghut.clickhouse import MICROBAR_COLUMNS, Client, bars, connect, microbar_row
from torghut.config import ClickHouseSettings
from torghut.events import Envelope, Microbar, Window

T0 = datetime(2026, 11, 24, 15, 0, 0, tzinfo=UTC)


def _row(i: int, symbol: str = "AAPL", ingest_ms: int = 1) -> Row:
    end = T0 + timedelta(seconds=i)
    return microbar_row(
        Envelope(
            event_ts=end,
            ingest_ts=end + timedelta(milliseconds=ingest_ms),
            symbol=symbol,
            seq=0,
            payload=Microbar(o=1.0, h=2.0, l=0.5, c=float(i), v=10.0, vwap=1.5, count=2),
            window=Window(size="PT1S"),
        )
    )


def _metric(name: str, table: str) -> float:
    return REGISTRY.get_sample_value(name, {"table": table}) or 0.0


def _copy_table(ch: Client, name: str) -> None:
    ch.command(f"CREATE TABLE {name} AS ta_microbars")


def _flow(rows: Iterable[Row], sink: ClickHouseSink) -> Dataflow:
    flow = Dataflow(f"sink_{uuid.uuid4().hex[:6]}")
    clickhouse_sink("ch", op.input("in", flow, TestingSource(list(rows))), sink)
    return flow


def test_rows_are_batched_by_size(ch_settings: ClickHouseSettings, ch: Client) -> None:
    table = f"bars_{uuid.uuid4().hex[:8]}"
    _copy_table(ch, table)
    sink = ClickHouseSink(
        lambda: connect(ch_settings), table, MICROBAR_COLUMNS, batch_rows=100, batch_seconds=3600
    )
    run_main(_flow((_row(i) for i in range(1050)), sink))

    assert ch.command(f"SELECT count() FROM {table}") == 1050
    inserts = _metric("torghut_clickhouse_insert_seconds_count", table)
    assert 11 <= inserts <= 12  # 10 full batches + the EOF remainder (+1 if a batch straddled)
    assert _metric("torghut_clickhouse_rows_written_total", table) == 1050


class _HoldOpenUntilStored(DynamicSource[Row]):
    """Emits ``rows`` once, then stays open until they are visible in ``table`` (or times out).

    Proves the time trigger: with ``batch_rows`` far above len(rows) only the age of the batch
    can flush it while the input is still open (EOF would flush it too).
    """

    def __init__(self, rows: list[Row], settings: ClickHouseSettings, table: str) -> None:
        self.rows, self.settings, self.table = rows, settings, table

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _HoldPartition:
        return _HoldPartition(self)


class _HoldPartition(StatelessSourcePartition[Row]):
    def __init__(self, spec: _HoldOpenUntilStored) -> None:
        self.spec = spec
        self.sent = False
        self.deadline = time.monotonic() + 30
        self.client = connect(spec.settings)

    def next_batch(self) -> list[Row]:
        if not self.sent:
            self.sent = True
            return self.spec.rows
        if self.client.command(f"SELECT count() FROM {self.spec.table}") == len(self.spec.rows):
            self.client.close()
            raise StopIteration
        if time.monotonic() > self.deadline:
            raise AssertionError("the batch was not flushed by its age")
        return []

    def next_awake(self) -> datetime | None:
        return None if not self.sent else datetime.now(UTC) + timedelta(milliseconds=20)


def test_rows_are_flushed_by_age_while_input_stays_open(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    table = f"bars_{uuid.uuid4().hex[:8]}"
    _copy_table(ch, table)
    rows = [_row(i) for i in range(7)]
    flow = Dataflow("age_flush")
    src = op.input("in", flow, _HoldOpenUntilStored(rows, ch_settings, table))
    sink = ClickHouseSink(
        lambda: connect(ch_settings), table, MICROBAR_COLUMNS, batch_rows=10_000, batch_seconds=0.2
    )
    clickhouse_sink("ch", src, sink)
    run_main(flow)
    assert ch.command(f"SELECT count() FROM {table}") == 7
    assert _metric("torghut_clickhouse_insert_seconds_count", table) == 1


def test_transient_failure_is_retried_until_the_table_appears(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    table = f"late_{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(
        lambda: connect(ch_settings),
        table,
        MICROBAR_COLUMNS,
        max_retries=30,
        backoff_initial_s=0.02,
        backoff_max_s=0.1,
    )

    def create_after_two_failures() -> None:
        wait_until(
            lambda: _metric("torghut_clickhouse_insert_retries_total", table) >= 2, timeout=30
        )
        _copy_table(ch, table)

    creator = threading.Thread(target=create_after_two_failures)
    creator.start()
    run_main(_flow((_row(i) for i in range(20)), sink))
    creator.join(timeout=30)

    assert ch.command(f"SELECT count() FROM {table}") == 20
    assert _metric("torghut_clickhouse_insert_retries_total", table) >= 2
    assert _metric("torghut_clickhouse_rows_written_total", table) == 20
    assert _metric("torghut_clickhouse_rows_failed_total", table) == 0


def test_exhausted_retries_fail_the_flow_and_count_the_rows(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    table = f"missing_{uuid.uuid4().hex[:8]}"
    sink = ClickHouseSink(
        lambda: connect(ch_settings), table, MICROBAR_COLUMNS, max_retries=2, backoff_initial_s=0.01
    )
    # the insert thread's failure surfaces at the next write or at the epoch's end
    with pytest.raises(Exception, match=r"output batch|snapshotting") as failed:
        run_main(_flow((_row(i) for i in range(5)), sink))
    causes: list[BaseException] = []
    cause: BaseException | None = failed.value
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any("UNKNOWN_TABLE" in str(c) for c in causes), causes
    assert _metric("torghut_clickhouse_rows_failed_total", table) == 5
    assert _metric("torghut_clickhouse_insert_retries_total", table) == 2


def test_replayed_rows_collapse_under_final(ch_settings: ClickHouseSettings, ch: Client) -> None:
    first = [_row(i) for i in range(10)]
    replay = [_row(i, ingest_ms=500) for i in range(5, 10)]  # a resumed epoch re-emits 5..9
    sink = ClickHouseSink(lambda: connect(ch_settings), "ta_microbars", MICROBAR_COLUMNS)
    run_main(_flow(first, sink))
    run_main(_flow(replay, sink))

    assert ch.command("SELECT count() FROM ta_microbars") == 15
    got = bars(ch, "AAPL", T0, T0 + timedelta(seconds=10))
    assert [b.payload.c for b in got] == [float(i) for i in range(10)]
    assert [b.ingest_ts.microsecond for b in got] == [1000] * 5 + [500_000] * 5


def test_two_workers_and_shards_store_every_row_once(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    rows = [_row(i, symbol=s) for i in range(50) for s in ("AAPL", "MSFT", "NVDA", "SPY")]
    flow = Dataflow("sharded")
    sink = ClickHouseSink(lambda: connect(ch_settings), "ta_microbars", MICROBAR_COLUMNS)
    src = op.input("in", flow, TestingSource(rows, batch_size=16))
    clickhouse_sink("ch", src, sink, shards=3)
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert ch.command("SELECT count() FROM ta_microbars") == 200
    assert ch.command("SELECT count() FROM ta_microbars FINAL") == 200


def test_pending_rows_survive_a_crash_through_recovery(
    tmp_path: Path, ch_settings: ClickHouseSettings, ch: Client
) -> None:
    """Rows waiting in the batch step are epoch state: a crash neither loses nor skips them."""
    table = f"bars_{uuid.uuid4().hex[:8]}"
    _copy_table(ch, table)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)

    def run(abort_at: int | None) -> None:
        flow = Dataflow("sink_recovery")
        src = op.input("in", flow, PacedSource(120, _row, abort_at))
        sink = ClickHouseSink(
            lambda: connect(ch_settings), table, MICROBAR_COLUMNS, batch_rows=10_000,
            batch_seconds=3600,
        )  # fmt: skip
        clickhouse_sink("ch", src, sink)
        config = RecoveryConfig(recovery)
        run_main(flow, epoch_interval=timedelta(milliseconds=50), recovery_config=config)

    run(abort_at=70)
    assert ch.command(f"SELECT count() FROM {table}") == 0  # all 70 were still pending
    run(abort_at=None)
    assert ch.command(f"SELECT count() FROM {table} FINAL") == 120
    stored = ch.query(f"SELECT c FROM {table} FINAL ORDER BY event_ts").result_rows
    assert [r[0] for r in stored] == [float(i) for i in range(120)]


def _marks(shown: datetime) -> list[KeyGroupProgress]:
    us = (shown - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return [KeyGroupProgress(g, us, us) for g in ALL_GROUPS]


def test_a_seconds_rows_are_released_together_once_every_key_group_has_passed_it() -> None:
    """Progress, not a timer: rows wait until all 16 groups' marks pass their end, then go in
    one batch (one insert); the next second's rows wait for the marks that pass them."""
    at = MICROBAR_COLUMNS.index("event_ts")
    batcher = _RowBatcher(10_000, timedelta(hours=1), at, None)
    first = [_row(1, s) for s in ("AAPL", "MSFT")]
    second = [_row(2, s) for s in ("AAPL", "MSFT")]
    out, _ = batcher.on_batch([*first, *second])
    assert out == [], "no mark yet: nothing is known to be complete"
    out, _ = batcher.on_batch(_marks(T0 + timedelta(seconds=1))[:-1])
    assert out == [], "one group has not passed the second yet"
    out, _ = batcher.on_batch(_marks(T0 + timedelta(seconds=1))[-1:])
    assert out == [first]
    out, _ = batcher.on_batch(_marks(T0 + timedelta(seconds=2)))
    assert out == [second]
    assert batcher.notify_at() is None, "nothing pending: no age timer"


def test_rows_of_a_complete_second_wait_for_the_next_second_and_go_in_its_insert() -> None:
    """Final rows (and corrections) of a second already complete come partition by partition
    while the feed passes the next one; they wait for that second and go in its one insert
    instead of an insert each, and the age timer still bounds the wait."""
    at = MICROBAR_COLUMNS.index("event_ts")
    batcher = _RowBatcher(10_000, timedelta(seconds=1), at, None)
    provisional = [_row(3, s) for s in ("AAPL", "MSFT")]
    out, _ = batcher.on_batch([*provisional, *_marks(T0 + timedelta(seconds=3, milliseconds=5))])
    assert out == [provisional]
    final_aapl, final_msft = _row(1, "AAPL", ingest_ms=2003), _row(1, "MSFT", ingest_ms=2007)
    out, _ = batcher.on_batch([final_aapl, *_marks(T0 + timedelta(seconds=3, milliseconds=9))])
    assert out == [], "second 1 is long complete, but second 4 is not yet: the row waits"
    assert batcher.notify_at() is not None, "a waiting row is bounded by the age timer"
    nxt = [_row(4, "AAPL"), _row(4, "MSFT")]
    out, _ = batcher.on_batch([final_msft, *nxt])
    assert out == []
    out, _ = batcher.on_batch(_marks(T0 + timedelta(seconds=4, milliseconds=2)))
    assert out == [[final_aapl, final_msft, *nxt]], "one insert for the second and the finals"
    late = _row(2, "AAPL", ingest_ms=2500)
    out, _ = batcher.on_batch([late])
    assert out == []
    out, _ = batcher.on_notify()
    assert out == [[late]], "the age timer releases what no further second would"


def test_after_a_pause_or_a_restore_the_first_second_complete_releases_every_row_due() -> None:
    """A pause makes the marks jump several seconds at once: every row up to them goes in one
    batch. The second last released is not snapshot state: a batcher restored from a snapshot
    releases its pending rows at the first second complete, not a second later."""
    at = MICROBAR_COLUMNS.index("event_ts")
    batcher = _RowBatcher(10_000, timedelta(seconds=1), at, None)
    out, _ = batcher.on_batch([_row(1), *_marks(T0 + timedelta(seconds=1, milliseconds=3))])
    assert out == [[_row(1)]]
    held = [_row(1, "MSFT", ingest_ms=2003), _row(2), _row(3), _row(4)]
    out, _ = batcher.on_batch(held)
    assert out == [], "second 1 already released: they wait for a later second"
    state = batcher.snapshot()
    out, _ = batcher.on_batch(_marks(T0 + timedelta(seconds=4, milliseconds=1)))  # a pause
    assert out == [held], "the marks jumped three seconds: one batch for all of them"

    restored = _RowBatcher(10_000, timedelta(seconds=1), at, state)
    out, _ = restored.on_batch(_marks(T0 + timedelta(seconds=1, milliseconds=9)))
    assert out == [[_row(1, "MSFT", ingest_ms=2003)]], "restored: the first second complete"
    out, _ = restored.on_batch(_marks(T0 + timedelta(seconds=4, milliseconds=1)))
    assert out == [[_row(2), _row(3), _row(4)]]


class _GatedClient:
    """The real chdb client, whose inserts wait until the test opens ``gate`` (a slow
    ClickHouse); ``entered`` is set when an insert has started."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.gate = threading.Event()
        self.entered = threading.Event()

    def raw_insert(self, *args: object, **kwargs: object) -> object:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.client.raw_insert(*args, **kwargs)

    def create_insert_context(self, *args: object, **kwargs: object) -> object:
        return self.client.create_insert_context(*args, **kwargs)

    def close(self) -> None:
        self.client.close()


class _DescribeCounter:
    """The real chdb client, counting the times the columns' types are asked of the server
    (``create_insert_context`` without types runs ``DESCRIBE TABLE``)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.describes = 0

    def create_insert_context(self, *args: object, **kwargs: object) -> object:
        self.describes += 1
        return self.client.create_insert_context(*args, **kwargs)

    def raw_insert(self, *args: object, **kwargs: object) -> object:
        return self.client.raw_insert(*args, **kwargs)


def test_column_types_are_asked_once_and_again_after_a_failed_insert(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    table = f"bars_{uuid.uuid4().hex[:8]}"
    spec = ClickHouseSink(
        lambda: connect(ch_settings), table, MICROBAR_COLUMNS, max_retries=1, backoff_initial_s=0
    )
    client = _DescribeCounter(connect(ch_settings))
    inserter = _Inserter(spec, client)  # type: ignore[arg-type]
    with pytest.raises(ClickHouseError, match="UNKNOWN_TABLE"):
        inserter.insert_all([_row(0)])  # no table yet: both attempts ask, neither keeps
    assert client.describes == 2

    _copy_table(ch, table)
    for batch in range(3):
        inserter.insert_all([_row(10 * batch + i) for i in range(10)])
    assert client.describes == 3
    assert ch.command(f"SELECT count() FROM {table}") == 30


def test_a_slow_insert_does_not_hold_the_worker_until_its_queue_is_full(
    ch_settings: ClickHouseSettings, ch: Client
) -> None:
    table = f"bars_{uuid.uuid4().hex[:8]}"
    _copy_table(ch, table)
    slow = _GatedClient(connect(ch_settings))
    spec = ClickHouseSink(lambda: connect(ch_settings), table, MICROBAR_COLUMNS, queue_rows=10)
    part = _QueuedInsertPartition(_Inserter(spec, slow))  # type: ignore[arg-type]
    part.write_batch([[_row(i) for i in range(6)]])  # returns at once: the insert thread waits
    assert slow.entered.wait(10)
    part.write_batch([[_row(i) for i in range(6, 10)]])  # 10 queued: still within the bound

    blocked_write_returned = threading.Event()

    def write_beyond_the_bound() -> None:
        part.write_batch([[_row(10)]])
        blocked_write_returned.set()

    writer = threading.Thread(target=write_beyond_the_bound, daemon=True)
    writer.start()
    assert not blocked_write_returned.wait(0.5), "back-pressure: 11 rows exceed queue_rows=10"
    assert ch.command(f"SELECT count() FROM {table}") == 0
    slow.gate.set()
    assert blocked_write_returned.wait(30)
    part.snapshot()  # the epoch barrier: returns once every queued row is stored
    assert ch.command(f"SELECT count() FROM {table}") == 11
    part.close()
