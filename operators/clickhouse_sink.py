"""Write TA rows to ClickHouse: batched by size and time, retried, never dropped silently.

Delivery is at-least-once and relies on Bytewax's epoch rules (``shared/bytewax-notes.md`` §4):

* :class:`ClickHouseSink` (a ``DynamicSink``) inserts **synchronously inside** ``write_batch``.
  Bytewax treats the items of an epoch as written once ``write_batch`` returns and the epoch
  closes, so a sink that kept rows in memory past ``write_batch`` would lose them on a crash.
  Rows of one call are coalesced into as few inserts as possible (``batch_rows`` per insert).
* Time batching (avoid tiny inserts: the first Torghut's merge storms) happens *upstream* in
  :func:`clickhouse_sink`'s ``stateful_batch`` step: pending rows are operator state, so they
  are snapshotted with the epoch and restored on resume, never lost. A batch is released when
  it reaches ``batch_rows`` or when its oldest row has waited ``batch_seconds`` (a max-latency
  timer, unlike ``op.collect`` whose timeout restarts on every item), and at EOF.
* Transient failures are retried with exponential backoff; once ``max_retries`` is exhausted
  the error propagates and fails the flow (rows counted as failed), so nothing is dropped
  silently and the resumed flow re-emits the epoch. A retried insert may duplicate rows that
  did land; ``ReplacingMergeTree`` + ``FINAL`` readers collapse them.

Every ClickHouse error is retried: permanent ones (bad schema) only fail later by the backoff
sum, while treating a transient one (server restart, ``TOO_MANY_PARTS``, a table not created
yet) as permanent would stop the flow for nothing.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import Counter, Histogram

from torghut.clickhouse import Client
from torghut.logs import get_logger

__all__ = ["ClickHouseSink", "Row", "clickhouse_sink"]

Row = tuple[Any, ...]

ROWS_WRITTEN = Counter(
    "torghut_clickhouse_rows_written_total", "Rows inserted into ClickHouse", ["table"]
)
ROWS_FAILED = Counter(
    "torghut_clickhouse_rows_failed_total",
    "Rows whose insert failed after all retries (the flow stopped)",
    ["table"],
)
INSERT_RETRIES = Counter(
    "torghut_clickhouse_insert_retries_total",
    "Insert attempts that failed and were retried",
    ["table"],
)
INSERT_SECONDS = Histogram(
    "torghut_clickhouse_insert_seconds",
    "Latency of one successful ClickHouse insert",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

log = get_logger("operators.clickhouse_sink")


class ClickHouseSink(DynamicSink[Row]):
    """Insert row tuples (``columns`` order) into ``table``, synchronously per ``write_batch``.

    ``client_factory`` is called once per worker (e.g. ``lambda: connect(settings)``); each
    worker owns its client and closes it when the flow ends. ``batch_seconds`` is used by
    :func:`clickhouse_sink`; given to ``op.output`` directly, the sink inserts each
    ``write_batch`` as it comes (safe, but small inserts).
    """

    def __init__(
        self,
        client_factory: Callable[[], Client],
        table: str,
        columns: Sequence[str],
        batch_rows: int = 5000,
        batch_seconds: float = 1.0,
        max_retries: int = 5,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        if batch_rows < 1 or batch_seconds <= 0 or max_retries < 0 or backoff_initial_s < 0:
            raise ValueError(
                "need batch_rows >= 1, batch_seconds > 0, max_retries >= 0, backoff_initial_s >= 0"
            )
        self.client_factory = client_factory
        self.table = table
        self.columns = tuple(columns)
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Row]:
        return _InsertPartition(self, self.client_factory())


@operator
def clickhouse_sink(step_id: str, up: Stream[Row], sink: ClickHouseSink, shards: int = 1) -> None:
    """Batch rows by size (``sink.batch_rows``) and age (``sink.batch_seconds``), then insert.

    ``shards`` spreads the batching over that many keys (by ``crc32`` of the row's first
    column, the symbol), so with several workers several of them insert in parallel; 1 keeps
    one stream of large inserts per table.

    Use it where ``op.output`` would go::

        sink = ClickHouseSink(lambda: connect(settings), MICROBARS_TABLE, MICROBAR_COLUMNS)
        clickhouse_sink("ch_bars", op.map("row", bars, microbar_row), sink)
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    keyed = op.key_on("shard", up, _shard_key(shards))
    batch_rows, age = sink.batch_rows, timedelta(seconds=sink.batch_seconds)
    batches = op.stateful_batch("batch", keyed, lambda resume: _RowBatcher(batch_rows, age, resume))
    rows = op.flat_map_batch("rows", batches, _unbatch)
    op.output("insert", rows, sink)


class _InsertPartition(StatelessSinkPartition[Row]):
    def __init__(self, spec: ClickHouseSink, client: Client) -> None:
        self._spec = spec
        self._client = client
        self._written = ROWS_WRITTEN.labels(spec.table)
        self._failed = ROWS_FAILED.labels(spec.table)
        self._retries = INSERT_RETRIES.labels(spec.table)
        self._latency = INSERT_SECONDS.labels(spec.table)

    def write_batch(self, items: list[Row]) -> None:
        n = self._spec.batch_rows
        for start in range(0, len(items), n):
            self._insert(items[start : start + n])

    def close(self) -> None:
        self._client.close()

    def _insert(self, rows: list[Row]) -> None:
        spec = self._spec
        delay = spec.backoff_initial_s
        for attempt in range(spec.max_retries + 1):
            started = time.perf_counter()
            try:
                self._client.insert(spec.table, rows, column_names=spec.columns)
            except ClickHouseError as exc:
                if attempt == spec.max_retries:
                    self._failed.inc(len(rows))
                    log.error(
                        "clickhouse_insert_failed",
                        table=spec.table,
                        rows=len(rows),
                        attempts=attempt + 1,
                        error=str(exc)[:500],
                    )
                    raise
                self._retries.inc()
                log.warning(
                    "clickhouse_insert_retry",
                    table=spec.table,
                    rows=len(rows),
                    attempt=attempt + 1,
                    delay_s=delay,
                    error=str(exc)[:500],
                )
                time.sleep(delay)
                delay = min(delay * 2, spec.backoff_max_s)
            else:
                self._latency.observe(time.perf_counter() - started)
                self._written.inc(len(rows))
                return


@dataclass
class _Pending:
    """Rows waiting for an insert and when they must go at the latest (snapshot state)."""

    rows: list[Row] = field(default_factory=list)
    due: datetime | None = None


class _RowBatcher(StatefulBatchLogic[Row, list[Row], _Pending]):
    """Holds rows until ``batch_rows`` are pending or the oldest is ``max_age`` old."""

    def __init__(self, batch_rows: int, max_age: timedelta, resume: _Pending | None) -> None:
        self._batch_rows = batch_rows
        self._max_age = max_age
        self._pending = resume if resume is not None else _Pending()

    def on_batch(self, values: list[Row]) -> tuple[list[list[Row]], bool]:
        pending = self._pending
        if pending.due is None:
            pending.due = datetime.now(UTC) + self._max_age
        pending.rows.extend(values)
        if len(pending.rows) >= self._batch_rows:
            return [pending.rows], StatefulBatchLogic.DISCARD
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[list[Row]], bool]:
        return [self._pending.rows], StatefulBatchLogic.DISCARD

    def on_eof(self) -> tuple[list[list[Row]], bool]:
        return [self._pending.rows], StatefulBatchLogic.DISCARD

    def notify_at(self) -> datetime | None:
        return self._pending.due

    def snapshot(self) -> _Pending:
        return _Pending(list(self._pending.rows), self._pending.due)


def _shard_key(shards: int) -> Callable[[Row], str]:
    if shards == 1:
        return lambda _row: "0"
    return lambda row: str(zlib.crc32(str(row[0]).encode()) % shards)


def _unbatch(batches: list[tuple[str, list[Row]]]) -> list[Row]:
    return [row for _key, rows in batches for row in rows]
