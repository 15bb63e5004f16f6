"""The TA dataflow: Kafka market topics → 1 s microbars and indicators → Kafka + ClickHouse.

Run::

    python -m bytewax.run dataflows.ta:flow                       # no recovery
    python -m bytewax.run dataflows.ta:flow -r DIR -s 5 -b 300    # resumable, backed up

Configured from the environment (:func:`torghut.config.load_settings`): ``KAFKA_*`` (broker,
topic names), ``CH_*`` (ClickHouse; migrations are applied at start), ``TA_*`` (lateness,
correction horizon, idle close, ``TA_KAFKA_BATCH_SIZE`` / ``TA_KAFKA_PREFETCH_KB`` for the
input, ``TA_EXIT_AT_END`` for backfills: read every input partition up to its high watermark
at start, publish what is open, stop; no status heartbeat then), ``RECOVERY_*`` (backups).

Input: :class:`operators.kafka_source.KafkaBatchSource`, one input step per topic, one Bytewax
partition per topic-partition (spread over the workers), raw value bytes per poll, the next
offset of each partition in the recovery snapshot, bounded prefetch.

Backfills refuse data the ClickHouse TTLs would drop: with ``TA_EXIT_AT_END`` the TTLs of
``ta_microbars`` and ``ta_signals`` are read from ``system.tables`` at start, and the first
batch of each input partition is checked before it is handed on
(:class:`torghut.clickhouse.ttl.TtlGuard`); input older than a TTL stops the flow with an
error naming the table, its TTL and the oldest event time, instead of exiting 0 with nothing
stored.

Stopping: SIGINT (Ctrl-C) and SIGTERM end every input through EOF
(:mod:`operators.graceful_stop`): open bars are published, sinks flush, a final snapshot is
written and the process exits 0; a restart continues from exactly those offsets.

Recovery and backups. Bytewax opens the recovery directory after importing this module, so the
restore happens here, at import: when the process was started by ``bytewax.run`` with ``-r
DIR`` (or ``BYTEWAX_RECOVERY_DIRECTORY``) and ``DIR`` holds no partitions, the newest complete
backup set (S3 when ``RECOVERY_S3_BUCKET`` is set, else ``RECOVERY_BACKUP_DIR``) is restored
into it; with no backup at all, ``RECOVERY_PARTITIONS`` empty partitions are created. A
background loop then backs the directory up every ``RECOVERY_BACKUP_INTERVAL_S`` seconds (0 =
off) with the safe procedure of :mod:`operators.recovery_backup`; pass ``-b`` at least twice
that interval. Imported any other way (tests, ``bytewax.visualize``), the module touches
neither the directory nor the store. One recovery directory holds all partitions: run one process
with ``-w`` workers. Multi-process clusters (``-i/-a``) are not covered by this restore: every
process would restore a whole set into its own directory (``shared/bytewax-notes.md`` §4.4).

Outputs are at-least-once (a resume replays the last epoch) and deterministic given the input,
so replays rewrite identical rows; ClickHouse ``ReplacingMergeTree`` + ``FINAL`` collapses
them and Kafka consumers de-duplicate by ``(symbol, event_ts, seq, version)``.

:func:`operators.ta_pipeline.ta_pipeline` is the composable part (no Kafka): an all-in-one flow
wires it to in-process sources instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from operators.clickhouse_sink import ClickHouseSink, clickhouse_sink, row_or_mark
from operators.graceful_stop import GracefulStop, stoppable
from operators.kafka_io import KafkaSink, encode_dead_letter, encode_keyed
from operators.kafka_source import KafkaBatchSource, consumer_config
from operators.recovery_backup import BackupLoop, restore_latest_if_empty, store_from_settings
from operators.ta_pipeline import ta_pipeline
from operators.ta_status import TaProgress, TaStatusSource
from torghut.clickhouse import (
    MICROBAR_COLUMNS,
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    connect,
    microbar_row,
    migrate,
    signal_row,
)
from torghut.clickhouse.ttl import TtlGuard, oldest_envelope_time, table_ttls
from torghut.config import Settings, load_settings
from torghut.gc_policy import tune_for_streaming
from torghut.logs import configure_logging, get_logger

__all__ = ["build_flow", "flow", "recovery_directory"]

FLOW_ID = "ta"
X = TypeVar("X")
Y = TypeVar("Y")
log = get_logger("dataflows.ta")


def recovery_directory(argv: Sequence[str], environ: dict[str, str]) -> Path | None:
    """The ``-r`` directory ``bytewax.run`` will open, or None when not started by it."""
    if not argv or not argv[0].replace("\\", "/").endswith("bytewax/run.py"):
        return None
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg in ("-r", "--recovery-directory") and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--recovery-directory="):
            return Path(arg.split("=", 1)[1])
    env = environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    return Path(env) if env else None


def build_flow(
    settings: Settings,
    progress: TaProgress,
    stop: GracefulStop,
    ttl_guard: TtlGuard | None = None,
) -> Dataflow:
    """The Kafka-to-Kafka/ClickHouse TA flow (wiring only).

    ``stop`` ends every input through EOF when requested; ``ttl_guard`` (backfills) checks
    the first batch of every input partition against the ClickHouse TTLs.
    """
    kafka = settings.kafka
    if kafka.embedded:
        raise SystemExit(
            "dataflows.ta reads Kafka: set KAFKA_BOOTSTRAP_SERVERS, or run the all-in-one "
            "local flow that joins the stages in one process"
        )
    ta = settings.ta
    flow = Dataflow(FLOW_ID)
    consumer = consumer_config(
        kafka.client_config(), batch_size=ta.kafka_batch_size, prefetch_kb=ta.kafka_prefetch_kb
    )

    def check_ttl(source_id: str, values: list[bytes | None]) -> None:
        oldest = oldest_envelope_time(values)
        if ttl_guard is not None and oldest is not None:
            ttl_guard.check(oldest, f"Kafka {source_id}")

    def source(topic: str) -> Any:
        return stoppable(
            KafkaBatchSource(
                consumer,
                [topic],
                batch_size=ta.kafka_batch_size,
                exit_at_end=ta.exit_at_end,
                drained=progress,
                on_first_batch=check_ttl if ttl_guard is not None else None,
            ),
            stop,
        )

    trades = op.input("trades", flow, source(kafka.topic_trades))
    quotes = op.input("quotes", flow, source(kafka.topic_quotes))
    bars = op.input("bars", flow, source(kafka.topic_bars))
    out = ta_pipeline("pipeline", trades, quotes, bars, ta, progress)

    producer = kafka.client_config()
    op.output(
        "bars_kafka",
        op.flat_map_batch("bars_encode", out.microbars, _each(encode_keyed)),
        KafkaSink(producer, kafka.topic_ta_bars),
    )
    op.output(
        "signals_kafka",
        op.flat_map_batch("signals_encode", out.signals, _each(encode_keyed)),
        KafkaSink(producer, kafka.topic_ta_signals),
    )
    op.output(
        "dlq_kafka",
        op.map("dlq_encode", out.dead_letters, encode_dead_letter),
        KafkaSink(producer, kafka.topic_ta_dlq),
    )
    if not ta.exit_at_end:  # a heartbeat source never ends; a backfill must
        heartbeat = TaStatusSource(progress, timedelta(seconds=ta.status_interval_s))
        status = op.input("status", flow, stoppable(heartbeat, stop))
        op.output(
            "status_kafka",
            op.map("status_encode", status, encode_keyed),
            KafkaSink(producer, kafka.topic_ta_status),
        )

    ch = settings.clickhouse

    def client() -> Any:
        return connect(ch)

    clickhouse_sink(
        "bars_clickhouse",
        op.flat_map_batch("bars_rows", out.microbar_updates, _each(row_or_mark(microbar_row))),
        ClickHouseSink(
            client,
            MICROBARS_TABLE,
            MICROBAR_COLUMNS,
            batch_rows=ch.insert_batch_rows,
            batch_seconds=ch.insert_batch_seconds,
        ),
    )
    clickhouse_sink(
        "signals_clickhouse",
        op.flat_map_batch("signals_rows", out.signal_updates, _each(row_or_mark(signal_row))),
        ClickHouseSink(
            client,
            SIGNALS_TABLE,
            SIGNAL_COLUMNS,
            batch_rows=ch.insert_batch_rows,
            batch_seconds=ch.insert_batch_seconds,
        ),
    )
    return flow


def _each(fn: Callable[[X], Y]) -> Callable[[list[X]], list[Y]]:
    """``fn`` over a whole batch in one C-level ``map``: ``op.map`` runs a Python generator
    step per item, which at thousands of bars and signals a second is a cost of its own."""

    def over(batch: list[X]) -> list[Y]:
        return list(map(fn, batch))

    return over


def _prepare(settings: Settings, progress: TaProgress) -> TtlGuard | None:
    """Start-up side effects: ClickHouse migrations, recovery restore and backup loop.

    Returns the TTL guard of a backfill (``TA_EXIT_AT_END``), read after the migrations.
    """
    client = connect(settings.clickhouse)
    try:
        applied = migrate(client, settings.clickhouse)
        guard = None
        if settings.ta.exit_at_end:
            ttls = table_ttls(
                client, settings.clickhouse.database, (MICROBARS_TABLE, SIGNALS_TABLE)
            )
            guard = TtlGuard(ttls, datetime.now(UTC))
    finally:
        client.close()
    if applied:
        log.info("clickhouse_migrated", applied=applied)
    directory = recovery_directory(sys.argv, dict(os.environ))
    if directory is None:
        return guard
    rec = settings.recovery
    store = store_from_settings(rec, FLOW_ID)
    restored = restore_latest_if_empty(directory, store, rec.partitions)
    log.info("recovery_ready", dir=str(directory), restored_from_backup=restored)
    if rec.backup_interval_s > 0:
        loop = BackupLoop(directory, store, rec.backup_interval_s, rec.keep_sets)
        loop.start()
        progress.last_backup_at = lambda: loop.last_backup_at
    return guard


def _main() -> Dataflow:
    configure_logging()
    settings = load_settings()
    progress = TaProgress()
    guard = _prepare(settings, progress)
    stop = GracefulStop(progress.stop_requested)
    stop.install()
    dataflow = build_flow(settings, progress, stop, guard)
    tune_for_streaming()
    return dataflow


flow = _main()
