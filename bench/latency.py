"""Latency of the live TA path: market simulator → ingest → Kafka → TA → Kafka + ClickHouse.

Run (needs the local Kafka, e.g. the one ``make services-up`` / the tests provision)::

    .venv/bin/python -m bench.latency                     # 500 symbols, 10 k events/s, 60 s
    .venv/bin/python -m bench.latency --seconds 30 --lateness-ms 1000

Every stage is the real one, each in its own process as in production:

* the market-data simulator (``python -m torghut.sim.market``, realtime pacing: event times
  are the wall clock), ``--symbols`` symbols at ``--rate`` trade+quote events per second;
* the ingest flow (``python -m bytewax.run dataflows.ingest:flow``) into fresh Kafka topics;
* the TA flow (``dataflows.ta``, default settings but ``--lateness-ms``) into fresh output
  topics and an embedded ClickHouse (chdb). chdb locks its directory to one process, so the
  TA flow runs in a child process of this module (``--role ta``) together with the poller that
  measures ClickHouse: every ``--poll-ms`` it counts the rows per (bar end, ``is_final``), and
  each row that appeared since the last poll is stamped "queryable" then (the poll period
  bounds the measurement error; it is printed);
* this process consumes the TA bars topic (bar end → row in Kafka, by ``is_final``) and, as a
  same-run baseline, the trades topic: each trade's Kafka produce → consume time (the
  broker's own latency on this machine at this load) and event time → consume (everything
  upstream of the TA flow: simulator, websocket, ingest, Kafka), split at the envelope's
  ``ingest_ts`` (when the ingest's websocket reader received the frame) and the message's
  Kafka create time (when the ingest's sink handed it to the producer).

Reported per kind: p50 / p95 / p99 / max in ms over the bars that ended in the measured window
(after ``--warmup`` seconds). Bar end is the bar's ``event_ts`` (the end of its second); the
wall clock is this machine's, the same for every process. Not a test: numbers depend on the
machine and its load (the load average is printed); see ``bench/README.md``.

The TA flow has no clean stop on Kafka yet (another change adds one), so the child ends with
``os._exit`` once it has written its measurements; the topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
US = 1_000_000
_TOPICS = ("trades", "quotes", "bars", "status", "ingest_dlq", "ta_bars", "ta_signals")
_TOPICS += ("ta_status", "ta_dlq")


class _Stamp(msgspec.Struct):
    event_ts: str
    ingest_ts: str = ""
    is_final: bool = True


_STAMP = msgspec.json.Decoder(_Stamp)


def main() -> None:
    args = _parser().parse_args()
    if args.role == "ta":
        _ta_child(args)
        return
    _orchestrate(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    p.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--rate", type=float, default=10_000.0, help="trade+quote events per second")
    p.add_argument("--seconds", type=float, default=60.0, help="measured window")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    p.add_argument("--lateness-ms", type=int, default=2000, help="TA_ALLOWED_LATENESS_MS")
    p.add_argument("--poll-ms", type=float, default=20.0, help="ClickHouse poll period")
    p.add_argument("--partitions", type=int, default=6, help="partitions of the input topics")
    p.add_argument("--role", default="orchestrate", choices=("orchestrate", "ta"))
    p.add_argument("--work", default="", help=argparse.SUPPRESS)
    p.add_argument("--topics", default="", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    return p


# --- the orchestrating process -----------------------------------------------------------


def _orchestrate(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {name: f"bench-latency-{run}-{name}" for name in _TOPICS}
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    _create_topics(admin, topics, args.partitions)
    symbols = ",".join(f"S{i:03d}" for i in range(args.symbols))
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    env = _env(args, topics, work, symbols)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim = subprocess.Popen(
            [sys.executable, "-m", "torghut.sim.market", "--symbols", symbols, "--rate",
             str(args.rate), "--port", "0", "--history-limit", "1000", "--log-level", "WARNING",
             "--max-pending-frames", "100000"],
            stdout=subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        procs.append(sim)
        assert sim.stdout is not None
        url = json.loads(sim.stdout.readline())["url"]
        env["ALPACA_DATA_WS_URL"] = url
        t0 = time.time() + 5.0  # stages start; measuring starts after the warm-up from here
        done = t0 + args.warmup + args.seconds
        consumers = [
            _KafkaLatency(args.bootstrap, topics["ta_bars"], "ta_bars", t0 + args.warmup, done),
            _KafkaLatency(args.bootstrap, topics["trades"], "trades", t0 + args.warmup, done),
        ]
        for c in consumers:
            c.start()
        ta = subprocess.Popen(
            [sys.executable, "-m", "bench.latency", "--role", "ta", "--work", str(work),
             "--topics", json.dumps(topics), "--t0", str(t0), "--warmup", str(args.warmup),
             "--seconds", str(args.seconds), "--poll-ms", str(args.poll_ms),
             "--lateness-ms", str(args.lateness_ms), "--bootstrap", args.bootstrap],
            env=env, cwd=ROOT,
        )  # fmt: skip
        procs.append(ta)
        ingest = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.ingest:flow"], env=env, cwd=ROOT
        )
        procs.append(ingest)
        rc = ta.wait(timeout=args.warmup + args.seconds + 120)
        for c in consumers:
            c.join(timeout=30)
        if rc != 0:
            raise SystemExit(f"the TA process failed ({rc})")
        ch = json.loads((work / "clickhouse.json").read_text())
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        admin.delete_topics(list(topics.values()))
    _report(args, consumers, ch)


def _env(
    args: argparse.Namespace, topics: dict[str, str], work: Path, symbols: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CH_", "TA_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TORGHUT_DATA_DIR": str(work / "data"),
            "LOG_LEVEL": "WARNING",
            "KAFKA_BOOTSTRAP_SERVERS": args.bootstrap,
            "ALPACA_SYMBOLS": symbols,
            "CH_DSN": f"chdb://{work / 'chdb'}",
            "TA_ALLOWED_LATENESS_MS": str(args.lateness_ms),
            **{f"KAFKA_TOPIC_{name.upper()}": topic for name, topic in topics.items()},
        }
    )
    return env


def _create_topics(admin: AdminClient, topics: dict[str, str], partitions: int) -> None:
    inputs = {"trades", "quotes", "bars", "ta_bars", "ta_signals"}
    new = [
        NewTopic(t, num_partitions=partitions if name in inputs else 1, replication_factor=1)
        for name, t in topics.items()
    ]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)


class _KafkaLatency(threading.Thread):
    """Consumes one topic. Records, per message whose event time is in the window, ``(event
    time, is_final, received)`` and receive − Kafka create time; and per partition, each time
    its largest event time grew, ``(largest event time, received)``: when the feed's time
    passed a given instant at the input of the TA flow (this consumer reads as it does)."""

    def __init__(self, bootstrap: str, topic: str, name: str, start: float, end: float) -> None:
        super().__init__(name=f"latency-{name}", daemon=True)
        self.label = name
        self._start, self._end = start, end
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.subscribe([topic])
        self.rows: list[tuple[float, bool, float]] = []
        self.broker: list[float] = []
        self.hops: list[tuple[float, float]] = []
        self.feed: dict[int, tuple[list[float], list[float]]] = {}

    def run(self) -> None:
        c = self._consumer
        while time.time() < self._end + 10:
            for m in c.consume(1000, 0.05):
                received = time.time()
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(m.error()))
                    continue
                stamp = _STAMP.decode(m.value())
                event = _epoch(stamp.event_ts)
                tops, times = self.feed.setdefault(m.partition(), ([], []))
                if not tops or event > tops[-1]:
                    tops.append(event)
                    times.append(received)
                if not self._start <= event <= self._end:
                    continue
                self.rows.append((event, stamp.is_final, received))
                created = m.timestamp()[1]
                self.broker.append(received * 1000 - created)
                if stamp.ingest_ts:  # the ingest's websocket receive time
                    at_ws = _epoch(stamp.ingest_ts) * 1000
                    self.hops.append((at_ws - event * 1000, created - at_ws))
        c.close()

    def passed(self, instant: float) -> float | None:
        """When every partition's time had passed ``instant`` (None: not seen)."""
        latest = None
        for tops, times in self.feed.values():
            i = bisect.bisect_left(tops, instant)
            if i == len(tops):
                return None
            latest = times[i] if latest is None else max(latest, times[i])
        return latest


# --- the TA process ----------------------------------------------------------------------


def _ta_child(args: argparse.Namespace) -> None:
    """The TA flow of ``dataflows.ta`` on the environment, plus the ClickHouse poller."""
    from bytewax.testing import run_main

    import dataflows.ta  # builds the flow from the environment and migrates ClickHouse
    from torghut.clickhouse import connect
    from torghut.config import ClickHouseSettings

    work = Path(args.work)
    poller = _ClickHousePoller(
        connect(ClickHouseSettings()), work, args.t0 + args.warmup,
        args.t0 + args.warmup + args.seconds, args.poll_ms / 1000,
    )  # fmt: skip
    poller.start()
    run_main(dataflows.ta.flow)  # type: ignore[no-untyped-call]


class _ClickHousePoller(threading.Thread):
    """Counts rows per (table, bar end, is_final); new rows since the last poll are stamped
    queryable now. Writes ``clickhouse.json`` and ends the process after the window."""

    def __init__(self, client: Any, work: Path, start: float, end: float, period: float) -> None:
        super().__init__(name="clickhouse-poller", daemon=True)
        self._client, self._work = client, work
        self._start, self._end, self._period = start, end, period

    def run(self) -> None:
        try:
            self._measure()
        except BaseException:  # noqa: BLE001 - a bench: say why, and end the child visibly
            traceback.print_exc()
            os._exit(1)

    def _measure(self) -> None:
        seen: dict[tuple[str, int, int], int] = {}
        rows: list[tuple[float, str, float, int]] = []
        polls: list[float] = []
        while time.time() < self._end + 10:
            began = time.time()
            for table in ("ta_microbars", "ta_signals"):
                found = self._client.query(
                    f"SELECT toUnixTimestamp64Micro(event_ts) AS e, is_final, count() "
                    f"FROM {table} WHERE window_size = 'PT1S' AND event_ts >= "
                    "fromUnixTimestamp64Micro(toInt64({lo:Int64})) GROUP BY e, is_final",
                    parameters={"lo": int((began - 15) * US)},
                ).result_rows
                now = time.time()
                for e, final, n in found:
                    key = (table, int(e), int(final))
                    new = int(n) - seen.get(key, 0)
                    if new <= 0:
                        continue
                    seen[key] = int(n)
                    end = int(e) / US
                    if not self._start <= end <= self._end:
                        continue
                    kind = "signals" if table == "ta_signals" else str(final)
                    rows.append((end, kind, now, new))
            polls.append((time.time() - began) * 1000)
            time.sleep(max(0.0, self._period - (time.time() - began)))
        from prometheus_client import REGISTRY

        inserts = {
            table: [
                REGISTRY.get_sample_value(
                    f"torghut_clickhouse_insert_seconds_{k}", {"table": table}
                )
                for k in ("count", "sum")
            ]
            for table in ("ta_microbars", "ta_signals")
        }
        (self._work / "clickhouse.json").write_text(
            json.dumps({"rows": rows, "polls": polls, "inserts": inserts})
        )
        os._exit(0)


# --- report --------------------------------------------------------------------------------


def _report(args: argparse.Namespace, consumers: list[_KafkaLatency], ch: dict[str, Any]) -> None:
    """Latency after the bar end, and after the feed's time passed the instant the row waits
    for (the bar end for a provisional row, the end plus the lateness for a final one) at the
    TA flow's input: the TA flow's own share, without the upstream stages'."""
    bars, trades = consumers
    lateness = args.lateness_ms / 1000
    kinds = {"1": ("final bars", lateness), "0": ("provisional bars", 0.0)}
    kinds["signals"] = ("signals (final)", lateness)
    ch_rows: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for end, kind, visible, n in ch["rows"]:
        ch_rows[kind] += [(end, visible)] * n
    kafka_rows: dict[str, list[tuple[float, float]]] = {"1": [], "0": []}
    for end, final, received in bars.rows:
        kafka_rows["1" if final else "0"].append((end, received))
    print(
        f"{args.symbols} symbols, {args.rate:,.0f} events/s, {args.seconds:g} s measured after "
        f"{args.warmup:g} s warm-up; TA_ALLOWED_LATENESS_MS={args.lateness_ms}; input topics "
        f"with {args.partitions} partitions; ClickHouse polled every {args.poll_ms:g} ms "
        f"(a poll took p50 {_pct(ch['polls'], 50):.1f} ms)"
    )
    print(f"{'ms':<58} {'n':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
    for where, table in (("ClickHouse queryable", ch_rows), ("Kafka ta.bars received", kafka_rows)):
        for kind, got in table.items():
            label, wait = kinds[kind]
            _line(f"{where}, {label}: after the bar end", [(t - e) * 1000 for e, t in got])
            own = []
            for e, t in got:
                passed = trades.passed(e + wait)
                if passed is not None:
                    own.append((t - passed) * 1000)
            _line(f"  ... after the feed passed end{' + lateness' if wait else ''}", own)
    for table, (count, total) in ch["inserts"].items():
        if count:
            print(f"{table}: {count:.0f} inserts, {1000 * total / count:.1f} ms each on average")
    print("same-run baseline")
    _line("trades: event → consumed from Kafka", [(t - e) * 1000 for e, _f, t in trades.rows])
    _line("trades: event → websocket received by ingest", [a for a, _b in trades.hops])
    _line("trades: websocket received → Kafka produce", [b for _a, b in trades.hops])
    _line("trades: Kafka produce → consume", trades.broker)
    _line("ta.bars: Kafka produce → consume", bars.broker)
    with open("/proc/loadavg", encoding="ascii") as f:
        print(f"load average: {' '.join(f.read().split()[:3])}")


def _line(label: str, xs: list[float]) -> None:
    if not xs:
        print(f"{label:<58} {0:>7}")
        return
    print(
        f"{label:<58} {len(xs):>7} {_pct(xs, 50):>7.0f} {_pct(xs, 95):>7.0f} "
        f"{_pct(xs, 99):>7.0f} {max(xs):>7.0f}"
    )


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q / 100))]


def _epoch(ts: str) -> float:
    from torghut.ta.instants import rfc3339_micros

    return rfc3339_micros(ts) / US


if __name__ == "__main__":
    main()
