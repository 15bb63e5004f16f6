"""Write TA rows to ClickHouse: flushed on progress, inserted off the worker, never dropped.

When rows go (``clickhouse_sink``'s ``stateful_batch`` step; pending rows are operator state,
snapshotted with the epoch and restored on resume, never lost):

* **on progress**: the TA steps emit, after their rows and in the same stream, a
  :class:`~operators.key_groups.KeyGroupProgress` mark per key group. Once every group has
  passed a time ``T``, every row ending at or before ``T`` has arrived, and those rows are
  released together: the rows of one event second go to ClickHouse in one insert (one part,
  visible at once), as soon as the second is complete, not on a timer. Rows of seconds
  already complete (final rows, which follow their provisional rows by the allowed lateness;
  corrections) wait for the next second to complete and go in its insert: released as they
  came, one source partition's at a time, they made two to three inserts a second per table
  where one does, and the second's own rows queued behind them (measured: bench/README.md,
  bench/latency.py "Session 15");
* by size (``batch_rows``) and by age (``batch_seconds``, a max-latency timer from the oldest
  pending row): the fallback when no marks come (other producers, a stalled partition);
* at EOF.

How (``shared/bytewax-notes.md`` §4): the released rows go to a partition of a
``FixedPartitionedSink`` that hands them to its own insert thread through a bounded queue, so
a slow insert does not stop the dataflow; when the queue is full ``write_batch`` waits
(back-pressure). At-least-once is kept by the epoch barrier: the partition's ``snapshot()``,
which Bytewax calls at the end of every epoch before it commits the epoch's state, waits
until every queued row is inserted. A crash before that replays the epoch. Rows queued while
the insert thread catches up are merged into inserts of up to ``batch_rows``.

Transient failures are retried with exponential backoff; once ``max_retries`` is exhausted
the insert thread stops and the next ``write_batch``, ``snapshot()`` or ``close()`` raises
:class:`ClickHouseInsertError` (rows counted as failed): nothing is dropped silently and the
resumed flow re-emits the epoch. A retried insert may duplicate rows that did land;
``ReplacingMergeTree`` + ``FINAL`` readers collapse them.

Every ClickHouse error is retried: permanent ones (bad schema) only fail later by the backoff
sum, while treating a transient one (server restart, ``TOO_MANY_PARTS``, a table not created
yet) as permanent would stop the flow for nothing.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import Counter, Gauge, Histogram

from operators.key_groups import KEY_GROUPS, KeyGroupProgress
from torghut.clickhouse import Client, row_binary
from torghut.clickhouse.row_binary import Layout
from torghut.config import ClickHouseSettings
from torghut.logs import get_logger
from torghut.observability.metrics import BarLatency, count_insert_failure

__all__ = ["ClickHouseInsertError", "ClickHouseSink", "Row", "clickhouse_sink", "row_or_mark"]

Row = tuple[Any, ...]
E = TypeVar("E")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
QUEUED_ROWS = Gauge(
    "torghut_clickhouse_queued_rows",
    "Rows handed to the insert thread, not yet inserted",
    ["table"],
)

log = get_logger("operators.clickhouse_sink")


class ClickHouseInsertError(RuntimeError):
    """An insert failed after every retry; the rows were not stored and the flow must stop."""


class ClickHouseSink(DynamicSink[Row]):
    """Insert row tuples (``columns`` order) into ``table``.

    ``client_factory`` is called once per inserting partition (e.g. ``lambda:
    connect(settings)``); each owns its client and closes it when the flow ends.
    :func:`clickhouse_sink` uses this as the specification of its batching and insert thread
    (``batch_rows``, ``batch_seconds``, at most ``queue_rows`` rows queued for the insert
    thread); given to ``op.output`` directly, the sink inserts each ``write_batch`` as it comes,
    synchronously (safe, but small inserts).
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
        queue_rows: int = 50_000,
    ) -> None:
        if batch_rows < 1 or batch_seconds <= 0 or max_retries < 0 or backoff_initial_s < 0:
            raise ValueError(
                "need batch_rows >= 1, batch_seconds > 0, max_retries >= 0, backoff_initial_s >= 0"
            )
        if queue_rows < 1:
            raise ValueError("need queue_rows >= 1")
        self.client_factory = client_factory
        self.table = table
        self.columns = tuple(columns)
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.queue_rows = queue_rows

    @classmethod
    def configured(
        cls,
        client_factory: Callable[[], Client],
        table: str,
        columns: Sequence[str],
        settings: ClickHouseSettings,
    ) -> ClickHouseSink:
        """The sink of ``table`` with the batching of ``settings`` (``CH_INSERT_BATCH_*``):
        what every flow writing TA rows uses."""
        return cls(
            client_factory,
            table,
            columns,
            batch_rows=settings.insert_batch_rows,
            batch_seconds=settings.insert_batch_seconds,
        )

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Row]:
        return _InsertPartition(self, self.client_factory())


@operator
def clickhouse_sink(
    step_id: str, up: Stream[Row | KeyGroupProgress], sink: ClickHouseSink, shards: int = 1
) -> None:
    """Batch rows and insert them when a second is complete, by size, or by age.

    ``up`` holds rows and, optionally, the TA steps' progress marks (see the module
    docstring; :func:`row_or_mark` maps envelopes to rows and lets marks through). ``shards``
    spreads the batching and inserting over that many keys (by ``crc32`` of the row's first
    column, the symbol; every shard gets every mark), so with several workers several of them
    insert in parallel; 1 keeps one stream of large inserts per table.

    Use it where ``op.output`` would go::

        sink = ClickHouseSink(lambda: connect(settings), MICROBARS_TABLE, MICROBAR_COLUMNS)
        rows = op.map("rows", out.microbar_updates, row_or_mark(microbar_row))
        clickhouse_sink("ch_bars", rows, sink)
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    keyed = op.flat_map_batch("shard", up, _sharder(shards))
    batch_rows, age = sink.batch_rows, timedelta(seconds=sink.batch_seconds)
    ts_at = sink.columns.index("event_ts") if "event_ts" in sink.columns else None
    batches = op.stateful_batch(
        "batch", keyed, lambda resume: _RowBatcher(batch_rows, age, ts_at, resume)
    )
    op.output("insert", batches, _QueuedInsert(sink, shards))


def row_or_mark(
    to_row: Callable[[E], Row],
) -> Callable[[E | KeyGroupProgress], Row | KeyGroupProgress]:
    """``to_row`` for envelopes; progress marks pass through unchanged."""

    def convert(item: E | KeyGroupProgress) -> Row | KeyGroupProgress:
        return item if type(item) is KeyGroupProgress else to_row(item)  # type: ignore[arg-type]

    return convert


class _Inserter:
    """One client's inserts of ``spec.table``: split by ``batch_rows``, retried, measured.

    Rows go as one RowBinary block each (:mod:`torghut.clickhouse.row_binary`: encoded by
    compiled code, not column by column in Python). Its layout comes from the columns' types,
    asked of the server once and kept (a ``DESCRIBE TABLE`` before every insert was a second
    query per insert: 0.5–3 ms of a 5–9 ms 500-row insert into the embedded engine). A failed
    insert forgets them, so the retry reads them again (a migration may have changed a column
    since).
    """

    def __init__(self, spec: ClickHouseSink, client: Client) -> None:
        self.spec = spec
        self.client = client
        self._layout: Layout | None = None
        self._written = ROWS_WRITTEN.labels(spec.table)
        self._failed = ROWS_FAILED.labels(spec.table)
        self._retries = INSERT_RETRIES.labels(spec.table)
        self._latency = INSERT_SECONDS.labels(spec.table)
        self._bar_latency = BarLatency(spec.table, spec.columns)

    def insert_all(self, items: list[Row]) -> None:
        n = self.spec.batch_rows
        for start in range(0, len(items), n):
            self._insert(items[start : start + n])

    def _insert(self, rows: list[Row]) -> None:
        spec = self.spec
        delay = spec.backoff_initial_s
        for attempt in range(spec.max_retries + 1):
            started = time.perf_counter()
            try:
                if self._layout is None:
                    self._layout = row_binary.layout_of(self.client, spec.table, spec.columns)
                row_binary.insert_rows(self.client, spec.table, self._layout, rows)
            except ClickHouseError as exc:
                self._layout = None
                count_insert_failure(spec.table, exc)
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
                self._bar_latency.observe(rows)
                return


class _InsertPartition(StatelessSinkPartition[Row]):
    """``ClickHouseSink`` given to ``op.output`` directly: each ``write_batch`` inserted now."""

    def __init__(self, spec: ClickHouseSink, client: Client) -> None:
        self._inserter = _Inserter(spec, client)

    def write_batch(self, items: list[Row]) -> None:
        self._inserter.insert_all(items)

    def close(self) -> None:
        self._inserter.client.close()


class _QueuedInsert(FixedPartitionedSink[list[Row], None]):
    """One partition per shard, each inserting from its own thread (see the module docstring)."""

    def __init__(self, spec: ClickHouseSink, shards: int) -> None:
        self._spec = spec
        self._shards = shards

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self._shards)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _QueuedInsertPartition:
        return _QueuedInsertPartition(_Inserter(self._spec, self._spec.client_factory()))


_STOP: list[Row] = []
"""Sentinel that ends an insert thread (compared by identity)."""


class _QueuedInsertPartition(StatefulSinkPartition[list[Row], None]):
    """Hands row batches to an insert thread; ``snapshot()`` is the epoch's barrier."""

    def __init__(self, inserter: _Inserter) -> None:
        self._inserter = inserter
        spec = inserter.spec
        self._table = spec.table
        self._limit = spec.queue_rows
        self._batch_rows = spec.batch_rows
        self._queue: queue.Queue[list[Row]] = queue.Queue()
        self._queued = 0
        self._space = threading.Condition()
        self._error: BaseException | None = None
        self._reported = False
        self._gauge = QUEUED_ROWS.labels(spec.table)
        self._thread = threading.Thread(
            target=self._run, name=f"ch-insert-{spec.table}", daemon=True
        )
        self._thread.start()

    def write_batch(self, values: list[list[Row]]) -> None:
        self._raise_if_failed()
        for rows in values:
            if not rows:
                continue
            with self._space:
                # back-pressure: wait while the queue is full (a batch larger than the
                # limit still goes when the queue is empty, so nothing can wait forever)
                while self._queued and self._queued + len(rows) > self._limit:
                    if self._error is not None:
                        break
                    self._space.wait(0.1)
                self._queued += len(rows)
                self._gauge.set(self._queued)
            self._raise_if_failed()
            self._queue.put(rows)

    def snapshot(self) -> None:
        """Wait until every row queued so far is stored: the epoch may then be committed."""
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        self._queue.join()
        self._queue.put(_STOP)
        self._thread.join()
        self._inserter.client.close()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True  # raised once: Bytewax stops; raising again aborts the process
            raise ClickHouseInsertError(
                f"inserting into {self._table} failed after all retries; the flow stops and "
                f"the resumed flow writes the rows again: {self._error}"
            ) from self._error

    def _run(self) -> None:
        q = self._queue
        while True:
            rows = q.get()
            if rows is _STOP:
                q.task_done()
                return
            # merge what queued up during the last insert (never the stop sentinel: close()
            # queues it only once the queue is empty and every insert done)
            taken, merged = 1, list(rows)
            while len(merged) < self._batch_rows:
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                merged.extend(more)
                taken += 1
            self._insert(merged)
            with self._space:
                self._queued -= len(merged)
                self._gauge.set(self._queued)
                self._space.notify_all()
            for _ in range(taken):
                q.task_done()

    def _insert(self, rows: list[Row]) -> None:
        if self._error is not None:
            return  # failed before: the rows are counted by the flow's failure, not inserted
        try:
            self._inserter.insert_all(rows)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the worker by write/snapshot
            self._error = exc


@dataclass
class _Pending:
    """Rows waiting for an insert, when they must go at the latest, and the groups' marks
    (snapshot state)."""

    rows: list[Row] = field(default_factory=list)
    due: datetime | None = None
    marks: dict[str, int] = field(default_factory=dict)


class _RowBatcher(StatefulBatchLogic[Row | KeyGroupProgress, list[Row], _Pending]):
    """Holds rows until their second is complete, ``batch_rows`` are pending, or the oldest is
    ``max_age`` old (see the module docstring)."""

    def __init__(
        self,
        batch_rows: int,
        max_age: timedelta,
        ts_at: int | None,
        resume: _Pending | None,
    ) -> None:
        self._batch_rows = batch_rows
        self._max_age = max_age
        self._ts_at = ts_at
        self._pending = resume if resume is not None else _Pending()
        self._released_s: int | None = None  # the slowest mark's second, when last looked at

    def on_batch(self, values: list[Row | KeyGroupProgress]) -> tuple[list[list[Row]], bool]:
        pending = self._pending
        rows, marks = pending.rows, pending.marks
        for v in values:
            if type(v) is KeyGroupProgress:
                held = marks.get(v.group)
                if held is None or v.shown_us > held:
                    marks[v.group] = v.shown_us
            else:
                rows.append(v)
        if len(rows) >= self._batch_rows:
            return self._release_all()
        # also with nothing pending: it notes the second, so rows coming later in it wait
        out = self._release_complete()  # may replace pending.rows: read it again below
        if pending.rows and pending.due is None:
            pending.due = datetime.now(UTC) + self._max_age
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[list[Row]], bool]:
        return self._release_all()

    def on_eof(self) -> tuple[list[list[Row]], bool]:
        return self._release_all()

    def notify_at(self) -> datetime | None:
        return self._pending.due

    def snapshot(self) -> _Pending:
        p = self._pending
        return _Pending(list(p.rows), p.due, dict(p.marks))

    def _release_all(self) -> tuple[list[list[Row]], bool]:
        p = self._pending
        out = [p.rows] if p.rows else []
        self._pending = _Pending(marks=p.marks)
        return out, StatefulBatchLogic.RETAIN

    def _release_complete(self) -> list[list[Row]]:
        """Once the slowest key group's mark enters a new second: the pending rows ending at
        or before it, in one batch (see the module docstring)."""
        p, at = self._pending, self._ts_at
        if at is None or len(p.marks) < KEY_GROUPS:
            return []
        slowest = min(p.marks.values())
        second = slowest // 1_000_000
        if second == self._released_s:
            return []
        self._released_s = second
        complete = _EPOCH + timedelta(microseconds=slowest)
        done = [r for r in p.rows if r[at] <= complete]
        if not done:
            return []
        if len(done) == len(p.rows):
            p.rows, p.due = [], None
        else:
            p.rows = [r for r in p.rows if r[at] > complete]
        return [done]


def _sharder(shards: int) -> Callable[[list[Any]], list[tuple[str, Any]]]:
    """Key rows by shard; a progress mark goes to every shard."""
    keys = [str(i) for i in range(shards)]

    def shard(batch: list[Any]) -> list[tuple[str, Any]]:
        if shards == 1:
            return [("0", item) for item in batch]
        out: list[tuple[str, Any]] = []
        for item in batch:
            if type(item) is KeyGroupProgress:
                out.extend((k, item) for k in keys)
            else:
                out.append((keys[zlib.crc32(str(item[0]).encode()) % shards], item))
        return out

    return shard
