"""The TA dataflow: Kafka market topics → 1 s microbars and indicators → Kafka + ClickHouse.

Run::

    python -m bytewax.run dataflows.ta:flow                       # no recovery
    python -m bytewax.run dataflows.ta:flow -r DIR -s 10 -b 300   # resumable, backed up

Configured from the environment (:func:`torghut.config.load_settings`): ``KAFKA_*`` (broker,
topic names), ``CH_*`` (ClickHouse; migrations are applied at start), ``TA_*`` (lateness,
correction horizon, idle close, ``TA_KAFKA_BATCH_SIZE`` / ``TA_KAFKA_PREFETCH_KB`` for the
input, ``TA_EXIT_AT_END`` for backfills: read every input partition up to its high watermark
at start, publish what is open, stop; no status heartbeat then), ``RECOVERY_*`` (backups).

Input: :class:`operators.kafka_source.KafkaBatchSource` over the three market topics, one
Bytewax partition per topic-partition (spread over the workers), raw value bytes per poll, the
next offset of each partition in the recovery snapshot, bounded prefetch; it and the status
heartbeat are read by **one** input step (:mod:`operators.one_input`: input steps of their
own would wait for each other at every epoch end, seconds at a time).

Backfills refuse data the ClickHouse TTLs would drop: with ``TA_EXIT_AT_END`` the TTLs of
``ta_microbars`` and ``ta_signals`` are read from ``system.tables`` at start, and the first
batch of each input partition is checked before it is handed on
(:class:`torghut.clickhouse.ttl.TtlGuard`); input older than a TTL stops the flow with an
error naming the table, its TTL and the oldest event time, instead of exiting 0 with nothing
stored.

Stopping: SIGINT (Ctrl-C) and SIGTERM end every input through EOF
(:mod:`operators.graceful_stop`): open bars are published, sinks flush, a final snapshot is
written and the process exits 0; a restart continues from exactly those offsets.

Recovery and backups. Bytewax opens the recovery directory after building the flow, so the
directory is prepared while ``flow`` is built (on its first lookup, which ``bytewax.run`` does;
importing the module opens nothing), by :func:`torghut.recovery.prepare_recovery`: when the
process was started by ``bytewax.run`` with ``-r DIR`` (or ``BYTEWAX_RECOVERY_DIRECTORY``) and
``DIR`` holds no partitions, the newest complete backup set (S3 when ``RECOVERY_S3_BUCKET`` is
set, else ``RECOVERY_BACKUP_DIR``) is restored into it; with no backup at all,
``RECOVERY_PARTITIONS`` empty partitions are created. A background loop then backs the
directory up every ``RECOVERY_BACKUP_INTERVAL_S`` seconds (0 = off) with the safe procedure of
:mod:`torghut.recovery.backup`; pass ``-b`` at least twice that interval. Steps renamed since
a store was written (:data:`MOVED_STEPS`) have their state re-filed under the new ids first.

Scale-out: N processes (``-i I -a "h0:p;h1:p;…"``, ``-w`` workers each, or a StatefulSet
through ``BYTEWAX_POD_NAME``/``BYTEWAX_HOSTFILE_PATH``) over partitioned input topics. Each
process has its own recovery directory holding the partitions ``p % N == I`` (so
``RECOVERY_PARTITIONS >= N``) and its own backup loop; the loops write one set together, and an
empty disk restores its share of one set. **A cluster restarts as a whole**: at start every
process waits for all the others (:mod:`torghut.recovery.cluster`, through the backup store),
so a process restarted alone stops with an error after ``RECOVERY_CLUSTER_START_TIMEOUT_S``
instead of hanging, a mix of empty and resumed directories is refused, and a running process
whose peer was restarted exits (code 75) so that the supervisor restarts it too.

Outputs are at-least-once (a resume replays the last epoch) and deterministic given the input,
so replays rewrite identical rows; ClickHouse ``ReplacingMergeTree`` + ``FINAL`` collapses
them and Kafka consumers de-duplicate by ``(symbol, event_ts, seq, version)``.

:func:`operators.ta_pipeline.ta_pipeline` is the composable part (no Kafka): an all-in-one flow
wires it to in-process sources instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows.startup import BytewaxRun, bytewax_run_args, migrate_clickhouse
from operators.clickhouse_sink import ClickHouseSink, clickhouse_sink, row_or_mark
from operators.graceful_stop import GracefulStop, stoppable
from operators.joints import TypeSplit, split_type
from operators.kafka_io import KafkaSink, encode_dead_letter, encode_keyed, kafka_output
from operators.kafka_source import KafkaBatchSource, PartitionBatch, consumer_config
from operators.key_groups import KeyGroupProgress
from operators.one_input import one_input
from operators.partitions import of_topic
from operators.ta_pipeline import ta_pipeline
from operators.ta_status import TaProgress, TaStatusSource
from operators.upstream import IngestFollower
from torghut.clickhouse import (
    MICROBAR_COLUMNS,
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    connect,
    microbar_row,
    signal_row,
)
from torghut.clickhouse.ttl import TtlGuard, oldest_envelope_time, table_ttls
from torghut.config import Settings, load_settings
from torghut.events import Envelope, Microbar, TaStatus
from torghut.gc_policy import tune_for_streaming
from torghut.logs import configure_logging, get_logger
from torghut.observability.metrics import serve_dataflow_metrics, watch_checkpoints
from torghut.observability.tracing import configure_tracing
from torghut.recovery import (
    BackupError,
    BackupLoop,
    ClusterStartError,
    ClusterWatch,
    join_cluster,
    prepare_recovery,
    store_from_settings,
)

__all__ = ["build_flow"]

FLOW_ID = "ta"
MOVED_STEPS = {
    "ta.bars_kafka": "ta.pipeline.bars_kafka",
    "ta.bars_clickhouse": "ta.pipeline.bars_clickhouse",
}
"""Steps renamed since recovery stores were first written (old id → new; their state is
re-filed at start): the bars' sinks moved into the pipeline, before its indicator step."""
X = TypeVar("X")
Y = TypeVar("Y")
log = get_logger("dataflows.ta")


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

    market = KafkaBatchSource(
        consumer,
        [kafka.topic_trades, kafka.topic_quotes, kafka.topic_bars],
        batch_size=ta.kafka_batch_size,
        exit_at_end=ta.exit_at_end,
        drained=progress,
        on_first_batch=check_ttl if ttl_guard is not None else None,
    )
    # One input step for every source: Bytewax keeps an epoch per input step, and steps
    # with their own epoch clocks wait for each other at every epoch end (operators.one_input).
    # A backfill has no heartbeat: a heartbeat source never ends, and a backfill must.
    heartbeat = TaStatusSource(
        progress, timedelta(seconds=ta.status_interval_s), enabled=not ta.exit_at_end
    )
    sources = one_input(market, heartbeat)
    polls = op.input("input", flow, stoppable(sources, stop))
    split: TypeSplit[PartitionBatch, Envelope[TaStatus]] = split_type("status", polls, Envelope)
    trades = of_topic("trades", split.rest, kafka.topic_trades)
    quotes = of_topic("quotes", split.rest, kafka.topic_quotes)
    bars = of_topic("bars", split.rest, kafka.topic_bars)
    # Kafka outputs wait for their acknowledgements at the end of each epoch, not per batch:
    # a blocking flush per batch stopped the whole worker (ClickHouse rows included).
    producer = kafka.client_config()
    ch = settings.clickhouse

    def clickhouse(table: str, columns: tuple[str, ...]) -> ClickHouseSink:
        return ClickHouseSink.configured(lambda: connect(ch), table, columns, ch)

    def bar_sinks(
        bars: Stream[Envelope[Microbar]], updates: Stream[Envelope[Microbar] | KeyGroupProgress]
    ) -> None:
        # built inside the pipeline, before its indicator step (operators.ta_pipeline)
        kafka_output(
            "bars_kafka",
            op.flat_map_batch("bars_encode", bars, _each(encode_keyed)),
            KafkaSink(producer, kafka.topic_ta_bars),
        )
        clickhouse_sink(
            "bars_clickhouse",
            op.flat_map_batch("bars_rows", updates, _each(row_or_mark(microbar_row))),
            clickhouse(MICROBARS_TABLE, MICROBAR_COLUMNS),
        )

    out = ta_pipeline("pipeline", trades, quotes, bars, ta, progress, bar_sinks)
    kafka_output(
        "signals_kafka",
        op.flat_map_batch("signals_encode", out.signals, _each(encode_keyed)),
        KafkaSink(producer, kafka.topic_ta_signals),
    )
    kafka_output(
        "dlq_kafka",
        op.map("dlq_encode", out.dead_letters, encode_dead_letter),
        KafkaSink(producer, kafka.topic_ta_dlq),
    )
    if not ta.exit_at_end:
        kafka_output(
            "status_kafka",
            op.map("status_encode", split.of_type, encode_keyed),
            KafkaSink(producer, kafka.topic_ta_status),
        )
    clickhouse_sink(
        "signals_clickhouse",
        op.flat_map_batch("signals_rows", out.signal_updates, _each(row_or_mark(signal_row))),
        clickhouse(SIGNALS_TABLE, SIGNAL_COLUMNS),
    )
    return flow


def _each(fn: Callable[[X], Y]) -> Callable[[list[X]], list[Y]]:
    """``fn`` over a whole batch in one C-level ``map``: ``op.map`` runs a Python generator
    step per item, which at thousands of bars and signals a second is a cost of its own."""

    def over(batch: list[X]) -> list[Y]:
        return list(map(fn, batch))

    return over


def _prepare(settings: Settings, progress: TaProgress) -> TtlGuard | None:
    """Start-up side effects: ClickHouse migrations, the ingest's follower (live), the cluster's
    start, recovery restore and backup loop. Returns the TTL guard of a backfill
    (``TA_EXIT_AT_END``)."""
    ch = settings.clickhouse
    migrate_clickhouse(ch)
    guard = None
    if settings.ta.exit_at_end:
        client = connect(ch)
        try:
            ttls = table_ttls(client, ch.database, (MICROBARS_TABLE, SIGNALS_TABLE))
        finally:
            client.close()
        guard = TtlGuard(ttls, datetime.now(UTC))
    else:  # a live flow: how far the ingest has read the market bounds idle closing
        IngestFollower(settings.kafka, progress).start()
    run = bytewax_run_args(sys.argv, os.environ)
    if run is None:
        return guard
    try:
        _prepare_recovery(settings, progress, run)
    except (ClusterStartError, BackupError) as exc:
        log.error("ta_start_refused", error=str(exc))
        raise SystemExit(f"dataflows.ta: {exc}") from None
    return guard


def _prepare_recovery(settings: Settings, progress: TaProgress, run: BytewaxRun) -> None:
    """Meet the other processes, make the recovery directory ready, start the backup loop
    and the watch that ends this process when a peer restarts alone."""
    rec = settings.recovery
    directory, member, gc_delay_s = run.recovery_dir, run.member, run.backup_interval_s
    store = store_from_settings(rec, FLOW_ID)
    if directory is None:  # no recovery: the processes still start together, or not at all
        start = join_cluster(store, member, "empty", rec.cluster_start_timeout_s)
        ClusterWatch(store, member, start).start()
        return
    ready = prepare_recovery(
        directory,
        store,
        rec.partitions,
        member=member,
        start_timeout_s=rec.cluster_start_timeout_s,
        moved_steps=MOVED_STEPS,
    )
    log.info(
        "recovery_ready",
        dir=str(directory),
        restored_from_backup=ready.restored is not None,
        backup_set=ready.restored,
        process=member.index,
        processes=member.count,
    )
    watch_checkpoints(directory, run.snapshot_interval_s or rec.snapshot_interval_s)
    if rec.backup_interval_s > 0:
        loop = BackupLoop(
            directory,
            store,
            rec.backup_interval_s,
            rec.keep_sets,
            gc_delay_s,
            member=member,
            generation=ready.cluster.generation,
        )
        loop.start()
        progress.last_backup_at = lambda: loop.last_backup_at
    ClusterWatch(store, member, ready.cluster).start()


def _main() -> Dataflow:
    configure_logging()
    settings = load_settings()
    serve_dataflow_metrics(settings.metrics)
    configure_tracing(settings.tracing, "torghut-ta")
    progress = TaProgress()
    guard = _prepare(settings, progress)
    stop = GracefulStop(progress.stop_requested)
    stop.install()
    dataflow = build_flow(settings, progress, stop, guard)
    tune_for_streaming()
    return dataflow


def __getattr__(name: str) -> Dataflow:
    """``flow`` (what ``bytewax.run dataflows.ta:flow`` looks up) is built on first access:
    importing this module connects to nothing and restores nothing."""
    if name == "flow":
        built = _main()
        globals()["flow"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
