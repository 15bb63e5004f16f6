"""Helpers for the TA tests: a deterministic market on Kafka, flow subprocesses, dumps, bars.

The TA flow runs as ``python -m bytewax.run dataflows.ta:flow`` in a subprocess, each run with
its own chdb directory (chdb locks its directory across processes and allows one path per
process), and its ClickHouse ``FINAL`` contents are read afterwards by another small
subprocess (:func:`dump_clickhouse`), never by the test process.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from torghut.events import Bar, Envelope, Microbar, Quote, Trade, Window
from torghut.ta.instants import US_PER_S, us_to_dt

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
"""Recent on purpose: the ClickHouse tables' TTL (30 / 14 days) drops older rows at once."""
SYMBOLS = tuple(f"S{i}" for i in range(6))


def final_bar(end_us: int, close: float, symbol: str = "AAA") -> Envelope[Microbar]:
    """A final 1 s bar of ``symbol`` ending at ``end_us``, every price ``close``."""
    end = us_to_dt(end_us)
    return Envelope(
        end,
        datetime.now(UTC),
        symbol,
        end_us // 100,
        Microbar(close, close, close, close, 5.0, close, 2),
        source="test",
        window=Window("PT1S", start=us_to_dt(end_us - US_PER_S), end=end),
    )


@dataclass
class Market:
    """Messages per input topic, in the order they are produced (= arrival order)."""

    trades: list[Envelope[Trade]] = field(default_factory=list)
    quotes: list[Envelope[Quote]] = field(default_factory=list)
    bars: list[Envelope[Bar]] = field(default_factory=list)
    valid_unique_trades: int = 0
    duplicates: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    beyond_horizon: int = 0


def make_market(seconds: int = 40, seed: int = 11, t0: datetime = T0) -> Market:
    """Trades with disorder within the lateness, late trades (corrections and beyond the
    10 s horizon), duplicates, invalid and unknown-symbol trades; quotes; minute bars; the
    first second starts at ``t0``."""
    rng = random.Random(seed)
    m = Market()
    arrivals: list[tuple[float, int, Envelope[Trade]]] = []
    tid = 0

    def trade(sym: str, ts: datetime, price: float, size: float) -> Envelope[Trade]:
        nonlocal tid
        tid += 1
        return Envelope(ts, ts, sym, tid, Trade(tid, "V", price, size, ("@",), "C"))

    for s_idx, sym in enumerate(SYMBOLS):
        price = 50.0 + 10 * s_idx
        for k in range(seconds * 8):
            ts = t0 + timedelta(microseconds=k * 125_000 + rng.randrange(0, 125_000))
            price = round(max(1.0, price + rng.gauss(0, 0.05)), 2)
            delay = rng.uniform(0, 1.5)  # within the 2 s lateness
            if k % 97 == 50:
                delay = 4.0  # late: its bar is closed, within the horizon -> correction
            if k == seconds * 4:
                delay = 25.0  # beyond the 10 s horizon -> dead letter
                m.beyond_horizon += 1
            else:
                m.valid_unique_trades += 1
            env = trade(sym, ts, price, float(rng.choice((1, 5, 100))))
            arrivals.append((ts.timestamp() + delay, len(arrivals), env))
            if k % 61 == 7:
                arrivals.append((ts.timestamp() + delay + 0.3, len(arrivals), env))  # duplicate
                m.duplicates += 1
    bad = [
        ("invalid_price", trade("S0", t0 + timedelta(seconds=3.1), math.nan, 5.0)),
        ("invalid_price", trade("S1", t0 + timedelta(seconds=4.2), -3.0, 5.0)),
        ("invalid_size", trade("S2", t0 + timedelta(seconds=5.3), 10.0, 0.0)),
        ("unknown_symbol", trade("ZZZ", t0 + timedelta(seconds=6.4), 10.0, 5.0)),
    ]
    for reason, env in bad:
        m.invalid[reason] = m.invalid.get(reason, 0) + 1
        arrivals.append((env.event_ts.timestamp() + 0.2, len(arrivals), env))
    m.trades = [e for _, _, e in sorted(arrivals, key=lambda a: (a[0], a[1]))]

    q_arrivals: list[tuple[float, int, Envelope[Quote]]] = []
    for s_idx, sym in enumerate(SYMBOLS):
        mid = 50.0 + 10 * s_idx
        for k in range(seconds * 4):
            ts = t0 + timedelta(microseconds=k * 250_000 + rng.randrange(0, 250_000))
            mid = round(max(1.0, mid + rng.gauss(0, 0.05)), 2)
            q = Quote("V", mid - 0.01, rng.randint(1, 5) * 100.0, "Q", mid + 0.01, 200.0)
            qenv = Envelope(ts, ts, sym, k, q)
            q_arrivals.append((ts.timestamp() + rng.uniform(0, 0.8), len(q_arrivals), qenv))
    m.quotes = [e for _, _, e in sorted(q_arrivals, key=lambda a: (a[0], a[1]))]

    for minute in range(seconds // 60 + 1):
        end = t0 + timedelta(minutes=minute + 1)
        w = Window("PT1M", start=end - timedelta(minutes=1), end=end)
        b = Bar("bar", 50.0, 51.0, 49.5, 50.5, 1000.0, 80, 50.2)
        m.bars.append(Envelope(end, end, "S0", 2 * minute, b, window=w))
        u = Bar("updated_bar", 50.0, 51.0, 49.5, 50.6, 1100.0, 81, 50.21)
        m.bars.append(Envelope(end, end, "S0", 2 * minute + 1, u, window=w))
    return m


def produce(bootstrap: str, topic: str, envelopes: Iterable[Envelope[Any]]) -> int:
    """Produce JSON envelopes keyed by symbol; returns how many, after all are acknowledged."""
    import msgspec

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    n = 0
    for env in envelopes:
        p.produce(topic, msgspec.json.encode(env), env.symbol)
        n += 1
    assert p.flush(30) == 0, f"undelivered messages to {topic}"
    return n


def count_messages(bootstrap: str, topic: str, partitions: int) -> int:
    """Messages in a topic = sum of high watermarks (topics here are never truncated)."""
    from confluent_kafka import TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ta-test-count"})
    try:
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        )
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[bytes]:
    """Read ``expected`` messages of a topic from the beginning."""
    from tests.helpers import wait_until

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ta-test-read-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got: list[bytes] = []

    def poll() -> bool:
        for msg in c.consume(500, timeout=0.5):
            value = msg.value()
            if msg.error() is None and value is not None:
                got.append(value)
        return len(got) >= expected

    try:
        wait_until(poll, timeout, interval=0.01, message=lambda: f"{len(got)}/{expected} read")
    finally:
        c.close()
    return got


@dataclass
class FlowRun:
    """One ``bytewax.run dataflows.ta:flow`` subprocess and where its logs go."""

    proc: subprocess.Popen[bytes]
    log: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"TA flow did not finish in {timeout}s:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def flow_env(
    *,
    bootstrap: str,
    topics: dict[str, str],
    work: Path,
    exit_at_end: bool,
    s3: Any = None,
    bucket: str | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CH_", "TA_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TORGHUT_DATA_DIR": str(work / "data"),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_TRADES": topics["trades"],
            "KAFKA_TOPIC_QUOTES": topics["quotes"],
            "KAFKA_TOPIC_BARS": topics["bars"],
            "KAFKA_TOPIC_STATUS": topics["status"],  # the ingest's heartbeats (a live flow reads)
            "KAFKA_TOPIC_TA_BARS": topics["ta_bars"],
            "KAFKA_TOPIC_TA_SIGNALS": topics["ta_signals"],
            "KAFKA_TOPIC_TA_STATUS": topics["ta_status"],
            "KAFKA_TOPIC_TA_DLQ": topics["ta_dlq"],
            "CH_DSN": f"chdb://{work / 'chdb'}",
            "CH_DATABASE": "ta_flow_test",
            "CH_INSERT_BATCH_SECONDS": "0.2",
            "TA_SYMBOL_ALLOWLIST": ",".join(SYMBOLS),
            "TA_IDLE_CLOSE_MS": "600000",  # no wall-clock closes mid-run: end of input closes
            "TA_CORRECTION_HORIZON_S": "10",
            "TA_EXIT_AT_END": "true" if exit_at_end else "false",
            "TA_KAFKA_BATCH_SIZE": "200",
            "TA_STATUS_INTERVAL_S": "0.5",
            "RECOVERY_PARTITIONS": "2",
            "RECOVERY_BACKUP_INTERVAL_S": "1",
        }
    )
    if s3 is not None and bucket is not None:
        env.update(
            {
                "RECOVERY_S3_BUCKET": bucket,
                "RECOVERY_S3_ENDPOINT_URL": s3.endpoint_url,
                "RECOVERY_S3_ACCESS_KEY": s3.access_key,
                "RECOVERY_S3_SECRET_KEY": s3.secret_key,
                "RECOVERY_S3_REGION": s3.region,
            }
        )
    return env


def start_flow(env: dict[str, str], log: Path, *args: str) -> FlowRun:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "bytewax.run", "dataflows.ta:flow", *args],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    return FlowRun(proc, log)


_DUMP = """
import json, sys
from torghut.clickhouse import MICROBAR_COLUMNS, SIGNAL_COLUMNS, connect
from torghut.config import ClickHouseSettings
s = ClickHouseSettings(dsn=sys.argv[1], database=sys.argv[2])
c = connect(s)
out = {}
for table, cols in (("ta_microbars", MICROBAR_COLUMNS), ("ta_signals", SIGNAL_COLUMNS)):
    keep = [x for x in cols if x != "ingest_ts"]
    q = f"SELECT {', '.join(keep)} FROM {s.database}.{table} FINAL ORDER BY symbol, event_ts, seq"
    rows = c.query(q).result_rows
    out[table] = {"columns": keep, "rows": [[v.isoformat() if hasattr(v, "isoformat") else v
                                             for v in r] for r in rows]}
print(json.dumps(out))
"""


def dump_clickhouse(work: Path) -> dict[str, Any]:
    """``FINAL`` contents (without ``ingest_ts``) of a stopped flow's chdb, via a subprocess."""
    res = subprocess.run(
        [PYTHON, "-c", _DUMP, f"chdb://{work / 'chdb'}", "ta_flow_test"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(res.stdout)
    return result
