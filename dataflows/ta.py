"""The TA dataflow: Kafka market topics → 1 s microbars and indicators → Kafka + ClickHouse.

Run::

    python -m bytewax.run dataflows.ta:flow                       # no recovery
    python -m bytewax.run dataflows.ta:flow -r DIR -s 5 -b 300    # resumable, backed up

Configured from the environment (:func:`torghut.config.load_settings`): ``KAFKA_*`` (broker,
topic names), ``CH_*`` (ClickHouse; migrations are applied at start), ``TA_*`` (lateness,
correction horizon, idle close, ``TA_EXIT_AT_END`` for backfills: read every input topic to
its end, publish what is open, stop; no status heartbeat then), ``RECOVERY_*`` (backups).

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

:func:`operators.indicators.ta_pipeline` is the composable part (no Kafka): an all-in-one flow
wires it to in-process sources instead.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING

from operators.clickhouse_sink import ClickHouseSink, clickhouse_sink, row_or_mark
from operators.indicators import ta_pipeline
from operators.kafka_io import KafkaSink, encode_dead_letter, encode_keyed
from operators.recovery_backup import BackupLoop, restore_latest_if_empty, store_from_settings
from operators.ta_status import TaProgress, TaStatusSource, report_drained
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
from torghut.config import Settings, load_settings
from torghut.logs import configure_logging, get_logger

__all__ = ["build_flow", "flow", "recovery_directory"]

FLOW_ID = "ta"
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


def build_flow(settings: Settings, progress: TaProgress) -> Dataflow:
    """The Kafka-to-Kafka/ClickHouse TA flow (wiring only)."""
    kafka = settings.kafka
    if kafka.embedded:
        raise SystemExit(
            "dataflows.ta reads Kafka: set KAFKA_BOOTSTRAP_SERVERS, or run the all-in-one "
            "local flow that joins the stages in one process"
        )
    ta = settings.ta
    flow = Dataflow(FLOW_ID)
    consumer = kafka.client_config()

    def source(topic: str) -> Any:
        kafka_source = KafkaSource(
            [kafka.bootstrap_servers],
            [topic],
            tail=not ta.exit_at_end,
            starting_offset=OFFSET_BEGINNING,
            add_config=consumer,
            batch_size=ta.kafka_batch_size,
        )
        return report_drained(kafka_source, progress)

    trades = op.input("trades", flow, source(kafka.topic_trades))
    quotes = op.input("quotes", flow, source(kafka.topic_quotes))
    bars = op.input("bars", flow, source(kafka.topic_bars))
    out = ta_pipeline("pipeline", trades, quotes, bars, ta, progress)

    producer = kafka.client_config()
    op.output(
        "bars_kafka",
        op.map("bars_encode", out.microbars, encode_keyed),
        KafkaSink(producer, kafka.topic_ta_bars),
    )
    op.output(
        "signals_kafka",
        op.map("signals_encode", out.signals, encode_keyed),
        KafkaSink(producer, kafka.topic_ta_signals),
    )
    op.output(
        "dlq_kafka",
        op.map("dlq_encode", out.dead_letters, encode_dead_letter),
        KafkaSink(producer, kafka.topic_ta_dlq),
    )
    if not ta.exit_at_end:  # a heartbeat source never ends; a backfill must
        status = op.input(
            "status", flow, TaStatusSource(progress, timedelta(seconds=ta.status_interval_s))
        )
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
        op.map("bars_rows", out.microbar_updates, row_or_mark(microbar_row)),
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
        op.map("signals_rows", out.signal_updates, row_or_mark(signal_row)),
        ClickHouseSink(
            client,
            SIGNALS_TABLE,
            SIGNAL_COLUMNS,
            batch_rows=ch.insert_batch_rows,
            batch_seconds=ch.insert_batch_seconds,
        ),
    )
    return flow


def _prepare(settings: Settings, progress: TaProgress) -> None:
    """Start-up side effects: ClickHouse migrations, recovery restore and backup loop."""
    client = connect(settings.clickhouse)
    try:
        applied = migrate(client, settings.clickhouse)
    finally:
        client.close()
    if applied:
        log.info("clickhouse_migrated", applied=applied)
    directory = recovery_directory(sys.argv, dict(os.environ))
    if directory is None:
        return
    rec = settings.recovery
    store = store_from_settings(rec, FLOW_ID)
    restored = restore_latest_if_empty(directory, store, rec.partitions)
    log.info("recovery_ready", dir=str(directory), restored_from_backup=restored)
    if rec.backup_interval_s > 0:
        loop = BackupLoop(directory, store, rec.backup_interval_s, rec.keep_sets)
        loop.start()
        progress.last_backup_at = lambda: loop.last_backup_at


def _main() -> Dataflow:
    configure_logging()
    settings = load_settings()
    progress = TaProgress()
    dataflow = build_flow(settings, progress)
    _prepare(settings, progress)
    # Start-up objects (modules, settings, the graph) live for good: keep full collections
    # from traversing them again and again as the keyed state grows.
    gc.freeze()
    return dataflow


flow = _main()
