"""A scrape of a running ingest, TA, trading and API process returns every metric family the
alert rules and the dashboard use.

The processes run as they run in production, each started the documented way with its own
``METRICS_PORT``: the market simulator → ``dataflows.ingest`` → the local Kafka →
``dataflows.ta`` (with recovery, so checkpoints and backups are written) → ClickHouse (chdb),
plus ``dataflows.trading`` (on its own chdb directory: chdb locks one per process) and
``python -m api``. The test waits until the SLI metrics carry real observations — bars reached
ClickHouse (bar latency observed), a checkpoint and a backup were written — and then checks
the names used by ``infra/prometheus`` and ``infra/grafana`` against what the four endpoints
export. The trading loop decides on signals seeded into its store, so its decision lag is
observed too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_until
from tests.ops.references import REPO, referenced_metrics
from tests.trading.test_crash import _SEED
from torghut.sim.market import MarketSimulator

POLLS = "bytewax_inp_part_next_batch_duration_seconds_count"
"""Bytewax's own series (the liveness probe's): served with ours on the one port."""
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def why(self) -> str:
        tail = self.log.read_text(errors="replace")[-3000:]
        return f"{self.name} exited={self.proc.poll()}:\n{tail}"


def exported(text: str) -> set[str]:
    """Every sample name a scrape can carry, also of families without samples yet (a labelled
    counter before its first increment is announced by HELP/TYPE only)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(name: str, args: list[str], env: dict[str, str], tmp: Path) -> Iterator[Running]:
    port = free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env={**env, "METRICS_PORT": str(port), "API_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Running(name, proc, port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


TRADING = {
    "ALPACA_SYMBOLS": "AAPL,MSFT",
    "TRADING_ENABLED": "true",
    "TRADING_STRATEGIES": "macd_rsi",
    "TRADING_POLL_INTERVAL_S": "0.1",
    "RISK_MAX_PIPELINE_LAG_S": "3600",
    "RISK_MAX_SIGNAL_STALENESS_S": "3600",
}
"""A trading loop that decides on the seeded signals (10 minutes old), so its decision lag is
observed."""


def seeded_signals(tmp: Path) -> Path:
    """A chdb store with crossing signals for AAPL and MSFT ending 10 minutes ago."""
    chdb = tmp / "trading-chdb"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    subprocess.run(
        [sys.executable, "-c", _SEED, str(chdb), start.isoformat(), "40"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        check=True,
        timeout=120,
    )
    return chdb


@pytest.fixture
def market() -> Iterator[str]:
    sim = MarketSimulator(symbols=["AAPL", "MSFT"], rate=200)
    with sim.run_in_thread() as url:
        yield url


def test_running_processes_export_every_metric_the_rules_and_dashboard_use(
    tmp_path: Path, kafka_bootstrap: str, unique_topic: Callable[..., str], market: str
) -> None:
    names = ("trades", "quotes", "bars", "status", "ingest_dlq")
    names += ("ta_bars", "ta_signals", "ta_status", "ta_dlq")
    topics = {"KAFKA_TOPIC_" + name.upper(): unique_topic(name) for name in names}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CH_", "TA_"))}
    base.update(PYTHONPATH=str(REPO), LOG_LEVEL="WARNING")

    def env(part: str, **extra: str) -> dict[str, str]:
        return {**base, "TORGHUT_DATA_DIR": str(tmp_path / part), **extra}

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    kafka = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, **topics}
    bytewax = ["-m", "bytewax.run"]
    with ExitStack() as stack:
        ingest = stack.enter_context(
            running(
                "ingest",
                [*bytewax, "dataflows.ingest:flow"],
                env("ingest", ALPACA_DATA_WS_URL=market, ALPACA_SYMBOLS="AAPL,MSFT", **kafka),
                tmp_path,
            )
        )
        ta = stack.enter_context(
            running(
                "ta",
                [*bytewax, "dataflows.ta:flow", "-r", str(recovery), "-s", "1", "-b", "10"],
                env(
                    "ta",
                    TA_ALLOWED_LATENESS_MS="200",
                    RECOVERY_BACKUP_INTERVAL_S="1",
                    CH_INSERT_BATCH_SECONDS="0.2",
                    **kafka,
                ),
                tmp_path,
            )
        )
        trading = stack.enter_context(
            running(
                "trading",
                [*bytewax, "dataflows.trading:flow"],
                env("trading", CH_DSN=f"chdb://{seeded_signals(tmp_path)}", **TRADING),
                tmp_path,
            )
        )
        api = stack.enter_context(running("api", ["-m", "api"], env("api"), tmp_path))
        dlq = stack.enter_context(
            running("dlq", ["-m", "dlq", "consume"], env("dlq", **kafka), tmp_path)
        )

        scrapes: dict[str, str] = {}

        def ready(p: Running, check: Callable[[str], bool]) -> bool:
            assert p.proc.poll() is None, p.why()
            text = p.scrape()
            scrapes[p.name] = text
            return check(text)

        wait_until(
            lambda: ready(ingest, lambda t: value(t, "torghut_ingest_ready") == 1),
            timeout=90,
            message=ingest.why,
            ignore=(OSError,),
        )
        wait_until(
            lambda: ready(
                ta,
                lambda t: (
                    value(t, "torghut_ta_bar_latency_seconds_count", table="ta_microbars") > 0
                    and value(t, "torghut_recovery_last_checkpoint_timestamp_seconds") > 0
                    and value(t, "torghut_recovery_last_backup_timestamp_seconds") > 0
                ),
            ),
            timeout=120,
            message=ta.why,
            ignore=(OSError,),
        )
        wait_until(
            lambda: ready(
                trading,
                lambda t: (
                    POLLS in exported(t)
                    and value(t, "torghut_trading_decision_lag_seconds_count") > 0
                ),
            ),
            timeout=120,
            message=trading.why,
            ignore=(OSError,),
        )
        wait_until(
            lambda: ready(api, lambda t: "torghut_api_requests_total" in exported(t)),
            timeout=60,
            message=api.why,
            ignore=(OSError,),
        )
        wait_until(
            lambda: ready(dlq, lambda t: "torghut_dead_letters_stored_total" in exported(t)),
            timeout=60,
            message=dlq.why,
            ignore=(OSError,),
        )

    by_process = {name: exported(text) for name, text in scrapes.items()}
    everything = set().union(*by_process.values())
    missing = {
        name: sorted(users)
        for name, users in referenced_metrics().items()
        if name not in everything
    }
    assert missing == {}, f"used by the rules or the dashboard, exported by no process: {missing}"

    # Each dataflow serves Bytewax's series and ours on the one METRICS_PORT.
    for name in ("ingest", "ta", "trading"):
        assert POLLS in by_process[name], name
    assert "torghut_ingest_ready" in by_process["ingest"]
    assert {
        "torghut_recovery_snapshot_interval_seconds",
        "torghut_clickhouse_insert_failures_total",
        "torghut_kafka_source_lag",
    } <= by_process["ta"]
    assert value(scrapes["ta"], "torghut_recovery_snapshot_interval_seconds") == 1
    assert {"torghut_trading_decision_lag_seconds_bucket", "torghut_trading_halts_active"} <= (
        by_process["trading"]
    )


def test_a_taken_metrics_port_stops_the_dataflow_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))  # where Bytewax would listen
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "bytewax.run", "dataflows.trading:flow"],
            cwd=REPO,
            env={**os.environ, "TORGHUT_DATA_DIR": str(tmp_path), "METRICS_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode != 0
    assert f"METRICS_PORT={port}: cannot serve /metrics there" in done.stderr
