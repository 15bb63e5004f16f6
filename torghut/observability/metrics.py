"""The metrics endpoint of the dataflow processes and the SLI metrics the alert rules use.

Endpoint. A Bytewax process serves HTTP only through Bytewax's dataflow API, which its Rust
runtime starts when ``bytewax.run`` hands it the flow, if ``BYTEWAX_DATAFLOW_API_ENABLED`` is
in the environment then: ``GET /metrics`` serves Bytewax's own series (``bytewax_*``: the
liveness probe of ``infra/k8s/probe.py`` reads one) followed by every ``prometheus_client``
metric of the process (``shared/bytewax-notes.md`` §5.3). An endpoint of our own could not
serve Bytewax's series, so :func:`serve_dataflow_metrics` turns that API on from the documented
setting ``METRICS_PORT`` while the flow is built (before ``bytewax.run`` starts it), after
checking the port is free: Bytewax itself only panics its web thread on a taken port and runs on
without metrics, which nobody would notice until an incident.

SLI metrics (``shared/torghut-design.md``, "SLOs and SLIs"), each recorded by a one-line hook
where the fact is known, so the hot paths stay as they are:

* :data:`BAR_LATENCY` — end-to-end bar latency: a bar's end (event time) to its row stored in
  ClickHouse, observed once per bar second, table and finality per insert (not per row: 500
  symbols' rows of one second are one observation, and cost one set comprehension);
* :data:`INSERT_FAILURES` — ClickHouse insert attempts that failed, by table and a bounded
  error class (:func:`insert_error_class`);
* :data:`LAST_CHECKPOINT` / :data:`SNAPSHOT_INTERVAL` — recovery checkpoint age: Bytewax
  commits every epoch to the recovery partitions (SQLite WAL), idle or not, so the newest
  modification time of those files is the last checkpoint; read at scrape time, nothing runs
  in the flow. The rule compares ``timestamp(x) - x`` (the age when scraped) with twice the
  snapshot interval;
* ``torghut_trading_decision_lag_seconds`` — trading decision lag: now minus the event time of
  the newest signal of each batch the trading loop decides on. Kept by
  :mod:`trading.core.controls` beside the lag gauge it observes (the trading core imports no
  storage client, and this module does).

Consumer lag (``torghut_kafka_source_lag``), backup age
(``torghut_recovery_last_backup_timestamp_seconds``) and dead letters by reason
(``torghut_{ingest,ta,trading_signal}_dead_letters_total``) are kept by the modules that own
those facts.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)
from prometheus_client import Counter, Gauge, Histogram

from torghut.config import MetricsSettings, SettingsError
from torghut.logs import get_logger

__all__ = [
    "BAR_LATENCY",
    "INSERT_FAILURES",
    "LAST_CHECKPOINT",
    "SNAPSHOT_INTERVAL",
    "BarLatency",
    "count_insert_failure",
    "insert_error_class",
    "serve_dataflow_metrics",
    "watch_checkpoints",
]

log = get_logger("torghut.observability")

BAR_LATENCY = Histogram(
    "torghut_ta_bar_latency_seconds",
    "Bar end (event time) to its rows stored in ClickHouse, per bar second, table and finality",
    ["table", "final"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 30, 60, 300),
)
INSERT_FAILURES = Counter(
    "torghut_clickhouse_insert_failures_total",
    "ClickHouse insert attempts that failed (retried or final), by table and error class",
    ["table", "error"],
)
LAST_CHECKPOINT = Gauge(
    "torghut_recovery_last_checkpoint_timestamp_seconds",
    "Unix time of the newest write to this process's recovery partitions (0 = none yet)",
)
SNAPSHOT_INTERVAL = Gauge(
    "torghut_recovery_snapshot_interval_seconds",
    "The dataflow's snapshot interval (bytewax.run -s): the checkpoint period",
)

_ERROR_CLASSES: tuple[tuple[type[BaseException], str], ...] = (
    (OperationalError, "connection"),  # network, timeouts, server restarts, stream failures
    (DataError, "data"),  # rows the server refused
    (ProgrammingError, "schema"),  # unknown table or column, bad query
    (DatabaseError, "server"),  # any other error the server answered with
)


def serve_dataflow_metrics(
    settings: MetricsSettings, environ: MutableMapping[str, str] | None = None
) -> int | None:
    """Serve ``/metrics`` on ``METRICS_PORT`` from this dataflow process; the port, or None.

    Call it while the flow is built for ``bytewax.run``. Raises :class:`SettingsError` when
    the port is taken, naming the setting, instead of a process that runs without metrics.
    """
    port = settings.port
    if port is None:
        return None
    env = os.environ if environ is None else environ
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # where Bytewax listens: every interface
        except OSError as exc:
            raise SettingsError(
                f"METRICS_PORT={port}: cannot serve /metrics there ({exc.strerror}); another "
                "process holds the port: give every process on a host its own METRICS_PORT"
            ) from None
    settings.graph_dir.mkdir(parents=True, exist_ok=True)
    env["BYTEWAX_DATAFLOW_API_ENABLED"] = "true"
    env["BYTEWAX_DATAFLOW_API_PORT"] = str(port)
    env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(settings.graph_dir)
    log.info("metrics_endpoint", url=f"http://0.0.0.0:{port}/metrics")
    return port


class BarLatency:
    """Observes :data:`BAR_LATENCY` for the rows of one table's successful insert.

    A no-op for a table without ``event_ts`` and ``is_final`` columns.
    """

    def __init__(self, table: str, columns: Sequence[str]) -> None:
        self._key: Callable[[Sequence[Any]], tuple[datetime, Any]] | None = None
        if "event_ts" in columns and "is_final" in columns:
            self._key = itemgetter(columns.index("event_ts"), columns.index("is_final"))
        self._by_final = {
            final: BAR_LATENCY.labels(table, str(final).lower()) for final in (True, False)
        }

    def observe(self, rows: Iterable[Sequence[Any]], now: float | None = None) -> None:
        if self._key is None:
            return
        stored = time.time() if now is None else now
        for event_ts, final in set(map(self._key, rows)):
            self._by_final[bool(final)].observe(stored - event_ts.timestamp())


def insert_error_class(exc: BaseException) -> str:
    """A bounded label for a failed insert: connection, data, schema, server or other."""
    for kind, label in _ERROR_CLASSES:
        if isinstance(exc, kind):
            return label
    return "other"


def count_insert_failure(table: str, exc: BaseException) -> None:
    INSERT_FAILURES.labels(table, insert_error_class(exc)).inc()


def watch_checkpoints(directory: Path, interval_s: float) -> None:
    """Export the age of this process's recovery checkpoints in ``directory`` (see above)."""
    SNAPSHOT_INTERVAL.set(interval_s)
    LAST_CHECKPOINT.set_function(lambda: _newest_write(directory))


def _newest_write(directory: Path) -> float:
    newest = 0.0
    for path in directory.glob("part-*.sqlite3*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except FileNotFoundError:  # a WAL file checkpointed away between glob and stat
            continue
    return newest
