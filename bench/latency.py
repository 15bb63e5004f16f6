"""Latency of the live TA path: market simulator → ingest → Kafka → TA → Kafka + ClickHouse.

Run (needs the local Kafka, e.g. the one ``make services-up`` / the tests provision)::

    .venv/bin/python -m bench.latency                     # 500 symbols, 10 k events/s, 60 s
    .venv/bin/python -m bench.latency --seconds 30 --lateness-ms 1000

Every stage is the real one, each in its own process as in production:

* the market-data simulator (``python -m torghut.sim.market``, realtime pacing: event times
  are the wall clock), ``--symbols`` symbols at ``--rate`` trade+quote events per second;
* the ingest flow (``python -m bytewax.run dataflows.ingest:flow``) into fresh Kafka topics;
* the TA flow (``dataflows.ta``, default settings but ``--lateness-ms``) into fresh output
  topics and an embedded ClickHouse (chdb), resumable as production runs it (``--recovery``: a
  recovery directory, ``-s`` ``--epoch-s``, the backup loop). chdb locks its directory to one
  process, so the TA flow runs in a child process of this module (``--role ta``), its
  ClickHouse client wrapped to log each insert (start, end, rows). A row is queryable when its
  insert has returned (the inserts are synchronous: the part is committed and visible to every
  later query); a poller checks that independently, every ``--poll-ms`` reading the tables'
  newest block numbers, and the report says when the poll first saw each insert and how many
  rows no poll saw (0 expected). Why not time "queryable" by the poll itself: fine polls are
  not free on a 2-core machine (at 20 ms, 14 ms each, a fifth of a core of the TA process and
  the embedded ClickHouse's attention, between its inserts) and add their own period; the
  report's last stage shows the check;
* with ``--trading`` (the default) the paper trading flow beside the TA (in its process: it
  reads the embedded ClickHouse), sending to the broker simulator in a process of its own,
  which fills against the market's quotes as it reads them from the market's stream
  (``--fills``, the default; with ``--no-fills`` it has no quotes and every order rests);
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

The child ends with ``os._exit`` once it has written its measurements (nothing after the
measured window matters); the topics and the work directory are deleted at the end.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from array import array
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from bench.procfs import cpu_seconds

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
    p.add_argument(
        "--poll-ms", type=float, default=250.0, help="ClickHouse visibility check period"
    )
    p.add_argument(
        "--epoch-s",
        type=float,
        default=10.0,
        help="the TA flow's epoch (snapshot) interval; production runs with -s 10",
    )
    p.add_argument("--partitions", type=int, default=6, help="partitions of the input topics")
    p.add_argument(
        "--recovery",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the TA flow resumable, as production does (`-r DIR -s EPOCH -b BACKUP_S`: "
        "Bytewax writes each epoch's snapshots to its recovery directory, and the backup loop "
        "copies it every RECOVERY_BACKUP_INTERVAL_S into the embedded backup directory)",
    )
    p.add_argument(
        "--backup-s",
        type=int,
        default=300,
        help="Bytewax's -b: how long it keeps older snapshots; production runs with -b 300",
    )
    p.add_argument(
        "--trading",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the paper trading flow on the signals and measure its decisions",
    )
    p.add_argument(
        "--fills",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the paper broker fills against the market's quotes, over the market's stream as "
        "the ingest reads it (--no-fills: it has no quotes, every order rests, open orders "
        "pile up)",
    )
    p.add_argument(
        "--store-url",
        default="",
        help="the trading store (an empty Postgres database; default: a SQLite file)",
    )
    p.add_argument(
        "--slices",
        type=int,
        default=1,
        help="also report the headline latencies and each process's peak RSS over this many "
        "consecutive slices of the window (a soak: does anything drift?)",
    )
    p.add_argument("--role", default="orchestrate", choices=("orchestrate", "ta"))
    p.add_argument("--work", default="", help=argparse.SUPPRESS)
    p.add_argument("--topics", default="", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    return p


# --- the orchestrating process -----------------------------------------------------------


def _orchestrate(args: argparse.Namespace) -> None:
    from torghut.config import AlpacaSettings

    run = uuid.uuid4().hex[:8]
    topics = {name: f"bench-latency-{run}-{name}" for name in _TOPICS}
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    _create_topics(admin, topics, args.partitions)
    symbols = ",".join(f"S{i:03d}" for i in range(args.symbols))
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    env = _env(args, topics, work, symbols)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # --history-limit bounds each symbol's kept messages too: at 1,000, 500 symbols kept
        # 500 k messages (450 MB) and the simulator's full collections held frames back for
        # up to 0.7 s (event → websocket received p99 545-668 ms; with 10: 60-64 ms)
        sim = subprocess.Popen(
            [sys.executable, "-m", "torghut.sim.market", "--symbols", symbols, "--rate",
             str(args.rate), "--port", "0", "--history-limit", "10", "--log-level", "WARNING",
             "--max-pending-frames", "100000", "--connection-limit", "2"],
            stdout=subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        procs.append(sim)
        assert sim.stdout is not None
        url = json.loads(sim.stdout.readline())["url"]
        env["ALPACA_DATA_WS_URL"] = url
        if args.trading:  # the paper broker in its own process, as Alpaca is to production
            alpaca = AlpacaSettings()  # the market simulator's and the broker's credentials
            broker = subprocess.Popen(
                [sys.executable, "-m", "torghut.sim.broker", "--port", "0", "--key-id",
                 alpaca.key_id.get_secret_value(), "--secret-key",
                 alpaca.secret_key.get_secret_value(), "--log-level", "WARNING"]
                + (["--follow-market", url] if args.fills else []),
                stdout=subprocess.PIPE, env=env, cwd=ROOT,
            )  # fmt: skip
            procs.append(broker)
            assert broker.stdout is not None
            env["ALPACA_PAPER_BASE_URL"] = json.loads(broker.stdout.readline())["base_url"]
        t0 = time.time() + 5.0  # stages start; measuring starts after the warm-up from here
        done = t0 + args.warmup + args.seconds
        consumers = [
            _KafkaLatency(args.bootstrap, topics["ta_bars"], "ta_bars", t0 + args.warmup, done),
            _KafkaLatency(args.bootstrap, topics["trades"], "trades", t0 + args.warmup, done),
            _KafkaLatency(args.bootstrap, topics["quotes"], "quotes", t0 + args.warmup, done),
        ]
        for c in consumers:
            c.start()
        ta = subprocess.Popen(
            [sys.executable, "-m", "bench.latency", "--role", "ta", "--work", str(work),
             "--topics", json.dumps(topics), "--t0", str(t0), "--warmup", str(args.warmup),
             "--seconds", str(args.seconds), "--poll-ms", str(args.poll_ms),
             "--lateness-ms", str(args.lateness_ms), "--bootstrap", args.bootstrap,
             "--epoch-s", str(args.epoch_s),
             "--recovery" if args.recovery else "--no-recovery", "--backup-s", str(args.backup_s),
             "--trading" if args.trading else "--no-trading"],
            env=env, cwd=ROOT,
        )  # fmt: skip
        procs.append(ta)
        ingest = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.ingest:flow"], env=env, cwd=ROOT
        )
        procs.append(ingest)
        names = (
            ["simulator", "broker", "ta+trading", "ingest"]
            if args.trading
            else ["simulator", "ta", "ingest"]
        )
        rss = _RssSampler(dict(zip(names, (p.pid for p in procs), strict=True)))
        rss.start()
        rc = ta.wait(timeout=args.warmup + args.seconds + 120)
        rss.stop.set()
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
        shutil.rmtree(work, ignore_errors=True)  # the embedded ClickHouse and recovery store
    _report(args, consumers, ch)
    if args.slices > 1:
        _over_time(args, (t0 + args.warmup, done), (consumers[1], consumers[2]), ch, rss.samples)


class _RssSampler(threading.Thread):
    """Every second, each stage process's resident set size (``VmRSS``) and the CPU time it
    has used (user + system, all its threads), for the soak report."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(name="rss", daemon=True)
        self._pids = pids
        self.samples: list[tuple[float, str, float, float]] = []
        """``(wall time, process, RSS in MiB, CPU seconds used so far)``."""
        self.stop = threading.Event()
        """Set once the TA process has ended: the window is over."""

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            for name, pid in self._pids.items():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) / 1024
                        self.samples.append((now, name, rss, cpu_seconds(stat)))
            self.stop.wait(1.0)


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
            # the trading flow: paper, at the broker simulator, the store of --store-url
            "TRADING_ENABLED": "true",
            "TRADING_DB_URL": args.store_url or f"sqlite:///{work / 'trading.sqlite'}",
            "RISK_REQUIRE_MARKET_OPEN": "false",
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
        # typed arrays, not a tuple per message: ~3.6 M trades in 20 minutes made this
        # process's full garbage collections long enough to stall it (and steal a core)
        self._rows = (array("d"), array("B"), array("d"))
        self._emitted = (array("d"), array("B"), array("d"), array("d"))
        self.broker = array("d")
        self.feed: dict[int, tuple[array[float], array[float]]] = {}

    @property
    def rows(self) -> list[tuple[float, bool, float]]:
        """``(event time, is_final, received)`` in s, per message in the window."""
        event, final, received = self._rows
        return list(zip(event, map(bool, final), received, strict=True))

    @property
    def emitted(self) -> list[tuple[float, bool, float, float]]:
        """``(event time, is_final, ingest_ts, Kafka create time)`` in s, per message."""
        event, final, at, created = self._emitted
        return list(zip(event, map(bool, final), at, created, strict=True))

    @property
    def hops(self) -> list[tuple[float, float]]:
        """``(event → ingest_ts, ingest_ts → Kafka create time)`` in ms, per message."""
        return [((at - e) * 1000, (created - at) * 1000) for e, _f, at, created in self.emitted]

    def run(self) -> None:
        c = self._consumer
        r_event, r_final, r_received = self._rows
        e_event, e_final, e_at, e_created = self._emitted
        while time.time() < self._end + 10:
            # at most 10 ms, as the TA's source polls a drained partition again after its
            # idle_poll_ms (10): consume() returns at its timeout unless it has 1,000, and
            # 50 ms here added ~25 ms to the feed's and the baseline's figures
            for m in c.consume(1000, 0.01):
                received = time.time()
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(m.error()))
                    continue
                stamp = _STAMP.decode(m.value())
                event = _epoch(stamp.event_ts)
                tops, times = self.feed.setdefault(m.partition(), (array("d"), array("d")))
                if not tops or event > tops[-1]:
                    tops.append(event)
                    times.append(received)
                if not self._start <= event <= self._end:
                    continue
                r_event.append(event)
                r_final.append(stamp.is_final)
                r_received.append(received)
                created = m.timestamp()[1]
                self.broker.append(received * 1000 - created)
                if stamp.ingest_ts:  # trades: websocket receive time; TA rows: emit time
                    at = _epoch(stamp.ingest_ts)
                    e_event.append(event)
                    e_final.append(stamp.is_final)
                    e_at.append(at)
                    e_created.append(created / 1000)
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
    """The TA flow of ``dataflows.ta`` on the environment, the trading flow of
    ``dataflows.trading`` beside it (a thread: chdb locks its directory to one process), and
    the ClickHouse poller. The sinks' row inserts are wrapped so that each insert's rows are
    stamped with when the insert started and ended (bench instrumentation; the product's code
    runs unchanged)."""
    from bytewax.testing import run_main

    from torghut.clickhouse import connect, row_binary

    inserts = _InsertLog()
    insert_rows = row_binary.insert_rows

    def logged(client: Any, table: str, layout: Any, rows: Any) -> None:
        began = time.time()
        insert_rows(client, table, layout, rows)
        inserts.record(table, rows, layout.columns, began, time.time())

    row_binary.insert_rows = logged  # the sink calls it through the module
    snapshots = _time_snapshots()
    epoch = timedelta(seconds=args.epoch_s)
    recovery = None
    if args.recovery:
        import bytewax.run
        from bytewax.recovery import RecoveryConfig

        directory = Path(args.work) / "recovery"
        backup_s = args.backup_s
        # the flow's start-up reads the recovery directory from `bytewax.run`'s command line
        # (dataflows.startup): it creates the partitions and starts the backup loop
        sys.argv = [bytewax.run.__file__, "dataflows.ta:flow", "-r", str(directory)]
        sys.argv += ["-s", str(args.epoch_s), "-b", str(backup_s)]
        recovery = RecoveryConfig(str(directory), timedelta(seconds=backup_s))
    import dataflows.ta

    ta_flow = dataflows.ta.flow  # built on first lookup; migrates ClickHouse before trading reads
    from torghut.config import ClickHouseSettings

    work = Path(args.work)
    start, end = args.t0 + args.warmup, args.t0 + args.warmup + args.seconds
    if args.trading:
        _start_trading(run_main)
    poller = _ClickHousePoller(
        connect(ClickHouseSettings()), work, start, end, args.poll_ms / 1000, inserts,
        args.trading, snapshots,
    )  # fmt: skip
    poller.start()
    run_main(ta_flow, epoch_interval=epoch, recovery_config=recovery)  # type: ignore[no-untyped-call]


_AWAY = "away from the input"
"""The :func:`_time_snapshots` entries of the worker's gaps between two input polls."""


def _time_snapshots() -> list[tuple[str, float, float]]:
    """Record ``(step, started, seconds)`` of what stops the TA worker at each epoch end:

    * the ``snapshot()`` of the flow's stateful steps and sinks (Bytewax calls them on the
      worker at the end of every epoch, stopping everything else meanwhile);
    * Bytewax pickling the snapshots for its recovery store (``pickle.dumps`` on the worker
      outside those methods; Bytewax looks it up at each call), only with ``--recovery``;
    * every gap over 20 ms between two input polls (step :data:`_AWAY`): it covers the whole
      stop, the recovery store's writes included, which nothing in Python can time.
    """
    import pickle

    from operators.clickhouse_sink import _QueuedInsertPartition
    from operators.indicators import IndicatorLogic
    from operators.kafka_io import _EpochPartition
    from operators.kafka_source import _KafkaBatchPartition
    from operators.microbars import MicrobarLogic

    timed: list[tuple[str, float, float]] = []
    worker = threading.get_ident()  # run_main runs the flow on this thread
    inside = [False]
    for cls in (IndicatorLogic, MicrobarLogic, _QueuedInsertPartition, _EpochPartition):
        original = cls.snapshot

        def snapshot(self: Any, _original: Any = original, _name: str = cls.__name__) -> Any:
            began = time.time()
            inside[0] = True
            try:
                return _original(self)
            finally:
                inside[0] = False
                timed.append((_name, began, time.time() - began))

        cls.snapshot = snapshot  # type: ignore[method-assign]
    dumps = pickle.dumps

    def timed_dumps(*args: Any, **kwargs: Any) -> bytes:
        if inside[0] or threading.get_ident() != worker:
            return dumps(*args, **kwargs)
        began = time.time()
        try:
            return dumps(*args, **kwargs)
        finally:
            timed.append((f"pickle {type(args[0]).__name__}", began, time.time() - began))

    pickle.dumps = timed_dumps
    next_batch = _KafkaBatchPartition.next_batch
    polled = [0.0]

    def timed_next_batch(self: Any) -> Any:
        began = time.time()
        if polled[0] and began - polled[0] > 0.02:
            timed.append((_AWAY, polled[0], began - polled[0]))
        try:
            return next_batch(self)
        finally:
            polled[0] = time.time()

    _KafkaBatchPartition.next_batch = timed_next_batch  # type: ignore[method-assign]
    return timed


def _start_trading(run_main: Any) -> None:
    """``dataflows.trading``'s flow (paper, the built-in broker simulator, a SQLite store) in
    a thread of this process, as ``python -m bytewax.run dataflows.trading:flow`` builds it."""
    from dataflows.trading import TradingRuntime, build_flow
    from torghut.clickhouse import connect
    from torghut.config import load_settings

    settings = load_settings()
    runtime = TradingRuntime.open(settings)
    runtime.start()
    ch = settings.clickhouse
    flow = build_flow(runtime, lambda: connect(ch))
    threading.Thread(target=run_main, args=(flow,), name="trading", daemon=True).start()


class _InsertLog:
    """Per ClickHouse insert: the table, when it started and ended, its number among the
    table's inserts, and per row its bar end (µs), ``is_final`` and ``ingest_ts`` (when the TA
    step emitted it).

    Kept in typed arrays, one per field (~45 B a row), not a tuple per row: the log grows by
    ~1.5 k rows a second inside the TA process it measures, and as tuples (~160 B each, with
    their floats) it added 300 MiB to that process's RSS over 25 minutes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._tables: list[str] = []
        self._columns = (
            array("B"), array("q"), array("B"), array("d"), array("d"), array("d"), array("L")
        )  # fmt: skip
        self._inserts: dict[str, int] = {}

    def record(self, table: str, rows: Any, columns: Any, began: float, done: float) -> None:
        cols = list(columns)
        with self.lock:
            k = self._inserts[table] = self._inserts.get(table, 0) + 1
            if "event_ts" not in cols or "ingest_ts" not in cols:
                return
            if table not in self._tables:
                self._tables.append(table)
            e, f, i = cols.index("event_ts"), cols.index("is_final"), cols.index("ingest_ts")
            w = cols.index("window_size")
            mine = [r for r in rows if r[w] == "PT1S"]
            t_, e_, f_, i_, b_, d_, k_ = self._columns
            t_.extend([self._tables.index(table)] * len(mine))
            e_.extend(_us(r[e]) for r in mine)
            f_.extend(int(r[f]) for r in mine)
            i_.extend(r[i].timestamp() for r in mine)
            b_.extend([began] * len(mine))
            d_.extend([done] * len(mine))
            k_.extend([k] * len(mine))

    def rows(self) -> list[tuple[str, int, int, float, float, float, int]]:
        """Every logged row: ``(table, bar end µs, is_final, emitted, began, done, insert
        number)``."""
        with self.lock:
            t_, e_, f_, i_, b_, d_, k_ = self._columns
            names = list(self._tables)
            return [
                (names[t], e, f, i, b, d, k)
                for t, e, f, i, b, d, k in zip(t_, e_, f_, i_, b_, d_, k_, strict=True)
            ]


def _us(ts: Any) -> int:
    return int(ts.timestamp() * US) if not isinstance(ts, int) else ts


class _ClickHousePoller(threading.Thread):
    """Every ``period`` reads the newest block number of each TA table's active parts
    (``system.parts``: metadata, so the poller itself costs next to nothing, unlike a query
    over the rows, which took 50 ms a poll and a core's worth of CPU); writes
    ``clickhouse.json`` (the polls, the insert log, the decisions) and ends the process after
    the window.

    Why block numbers: each insert of a MergeTree table becomes one part numbered by the
    table's block counter (1, 2, … in commit order, and merges keep the largest), so the
    table's ``k``-th insert is queryable from the first poll that reports a block number
    ``>= k``. A row count would not do: merges collapse a provisional row into its final one."""

    def __init__(
        self,
        client: Any,
        work: Path,
        start: float,
        end: float,
        period: float,
        inserts: _InsertLog,
        trading: bool,
        snapshots: list[tuple[str, float, float]],
    ) -> None:
        super().__init__(name="clickhouse-poller", daemon=True)
        self._client, self._work = client, work
        self._start, self._end, self._period = start, end, period
        self._inserts, self._trading, self._snapshots = inserts, trading, snapshots

    def run(self) -> None:
        try:
            self._measure()
        except BaseException:  # noqa: BLE001 - a bench: say why, and end the child visibly
            traceback.print_exc()
            os._exit(1)

    def _measure(self) -> None:
        counts: dict[str, list[tuple[float, int]]] = {t: [] for t in _CH_TABLES}
        polls: list[float] = []
        cpu: list[tuple[float, float]] = []  # (wall, process CPU) at the window's ends
        while time.time() < self._end + 10:
            began = time.time()
            found = dict(
                self._client.query(
                    "SELECT table, max(max_block_number) FROM system.parts WHERE active "
                    "AND database = currentDatabase() AND table IN {t:Array(String)} "
                    "GROUP BY table",
                    parameters={"t": list(_CH_TABLES)},
                ).result_rows
            )
            now = time.time()
            for table in _CH_TABLES:
                counts[table].append((now, int(found.get(table, 0))))
            polls.append((time.time() - began) * 1000)
            if len(cpu) < 2 and time.time() >= (self._end if cpu else self._start):
                cpu.append((time.time(), time.process_time()))
            time.sleep(max(0.0, self._period - (time.time() - began)))
        from prometheus_client import REGISTRY

        inserts = {
            table: [
                REGISTRY.get_sample_value(
                    f"torghut_clickhouse_insert_seconds_{k}", {"table": table}
                )
                for k in ("count", "sum")
            ]
            for table in _CH_TABLES
        }
        logged = self._inserts.rows()
        out = {
            "rows": _visible(logged, counts, self._start, self._end),
            "polls": polls,
            "inserts": inserts,
            "insert_log": [r for r in logged if self._start <= r[1] / US <= self._end],
            "decisions": self._decisions() if self._trading else None,
            "snapshots": [s for s in self._snapshots if self._start <= s[1] <= self._end],
            "cpu": (cpu[1][1] - cpu[0][1]) / (cpu[1][0] - cpu[0][0]) if len(cpu) == 2 else None,
        }
        (self._work / "clickhouse.json").write_text(json.dumps(out))
        os._exit(0)

    def _decisions(self) -> list[tuple[float, float]]:
        """``(bar end, stored)`` of every decision on a bar that ended in the window, from the
        trading store (``trade_decisions.created_at``: the store's clock at the insert)."""
        import sqlalchemy as sa

        from torghut.config import StoreSettings
        from trading.adapters.store.models import TradeDecisionRow

        engine = sa.create_engine(StoreSettings().url)
        with engine.connect() as conn:
            got = conn.execute(
                sa.select(TradeDecisionRow.event_ts, TradeDecisionRow.created_at)
            ).all()
        engine.dispose()
        out = []
        for event_ts, created in got:
            e = _aware(event_ts).timestamp()
            if self._start <= e <= self._end:
                out.append((e, _aware(created).timestamp()))
        return out


_CH_TABLES = ("ta_microbars", "ta_signals")


def _visible(
    logged: list[tuple[str, int, int, float, float, float, int]],
    counts: dict[str, list[tuple[float, int]]],
    start: float,
    end: float,
) -> list[tuple[float, str, float, float | None]]:
    """``(bar end, kind, insert returned, first poll that saw it)`` per inserted row in the
    window (see :class:`_ClickHousePoller`); ``None``: no poll saw its insert."""
    out: list[tuple[float, str, float, float | None]] = []
    for table in _CH_TABLES:
        polls = counts[table]
        blocks = [n for _t, n in polls]
        for t, end_us, final, _emitted, _began, done, k in logged:
            if t != table or not start <= end_us / US <= end:
                continue
            i = bisect.bisect_left(blocks, k)
            kind = "signals" if table == "ta_signals" else str(final)
            out.append((end_us / US, kind, done, polls[i][0] if i < len(polls) else None))
    return out


def _aware(ts: Any) -> Any:
    from datetime import UTC

    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


# --- report --------------------------------------------------------------------------------


def _report(args: argparse.Namespace, consumers: list[_KafkaLatency], ch: dict[str, Any]) -> None:
    """Latency after the bar end, and after the feed's time passed the instant the row waits
    for (the bar end for a provisional row, the end plus the lateness for a final one) at the
    TA flow's input: the TA flow's own share, without the upstream stages'. Then the same rows
    stage by stage, the trading decisions, and the same-run baselines."""
    bars, trades, quotes = consumers
    lateness = args.lateness_ms / 1000
    kinds = {"0": ("provisional bars", 0.0), "1": ("final bars", lateness)}
    kinds["signals"] = ("signals (final)", lateness)
    ch_rows: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    unseen = 0
    for end, kind, committed, seen in ch["rows"]:
        ch_rows[kind].append((end, committed))
        unseen += seen is None
    kafka_rows: dict[str, list[tuple[float, float]]] = {"1": [], "0": []}
    for end, final, received in bars.rows:
        kafka_rows["1" if final else "0"].append((end, received))
    print(
        f"{args.symbols} symbols, {args.rate:,.0f} events/s, {args.seconds:g} s measured after "
        f"{args.warmup:g} s warm-up; TA_ALLOWED_LATENESS_MS={args.lateness_ms}; input topics "
        f"with {args.partitions} partitions; queryable = insert returned, checked by a poll "
        f"every {args.poll_ms:g} ms (a poll took p50 {_pct(ch['polls'], 50):.1f} ms; rows no "
        f"poll saw: {unseen})"
    )
    print(f"{'ms':<66} {'n':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}")
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
    _stages(ch, (trades, quotes), bars, kinds)
    if ch.get("decisions") is not None:
        _decisions(ch, ch_rows["signals"])
    _stalls(ch, args.epoch_s)
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


def _stages(
    ch: dict[str, Any],
    feeds: tuple[_KafkaLatency, _KafkaLatency],
    bars: _KafkaLatency,
    kinds: dict[str, tuple[str, float]],
) -> None:
    """Each row's way, stage by stage: the instant it waits for (bar end, or end + lateness)
    → the feed passed it at the TA input (the last trades partition delivered a trade at or
    after it, seen by this process's consumer) → the TA step emitted the row (its
    ``ingest_ts``, ms) → its ClickHouse insert started → ended → the check's poll saw it; and
    emitted → Kafka create time → consumed. A signal waits for the quote feed as well (its
    bar's quotes must be complete): its rows also show the trade feed passed → the quote feed
    passed (0 when the quotes were first), and "TA emitted" counts from the later of the two.
    The k-th inserted row of a (table, bar end, is_final) is paired with the k-th row the
    polls saw."""
    print("stages, per row (ms)")
    index = _stage_index(ch)
    for kind, (label, wait) in kinds.items():
        st = _kind_stages(index, feeds, kind, wait)
        feed, quoted, ta = st["feed"], st["quoted"], st["ta"]
        queued, insert, poll = st["queued"], st["insert"], st["poll"]
        at = "end + lateness" if wait else "end"
        _line(f"{label}: bar {at} → feed passed it at the TA input", feed)
        if kind == "signals":
            _line("  trade feed passed → quote feed passed (0: it was first)", quoted)
        _line("  feed passed → TA emitted the row", ta)
        _line("  emitted → ClickHouse insert started", queued)
        _line("  insert started → ended", insert)
        _line("  insert ended → the check's poll saw it", poll)
    for final, label in ((False, "provisional"), (True, "final")):
        rows = [(e, t, c) for e, f, t, c in bars.emitted if f is final]
        _line(
            f"Kafka ta.bars, {label}: emitted → Kafka create time",
            [(c - t) * 1000 for _e, t, c in rows],
        )


_StageIndex = tuple[
    dict[tuple[str, float], list[float]], dict[tuple[str, float], list[tuple[float, float, float]]]
]
"""Per (kind of row, bar end): the times the polls saw its rows, and each insert's (emitted,
began, done)."""


def _stage_index(ch: dict[str, Any]) -> _StageIndex:
    """The rows seen and inserted, per (kind, bar end): built once for every report."""
    visible: dict[tuple[str, float], list[float]] = {}
    for end, kind, _committed, seen in ch["rows"]:
        if seen is not None:
            visible.setdefault((kind, end), []).append(seen)
    inserted: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for table, end_us, final, emitted, began, done, _k in ch["insert_log"]:
        kind = "signals" if table == "ta_signals" else str(final)
        inserted.setdefault((kind, end_us / US), []).append((emitted, began, done))
    return visible, inserted


def _kind_stages(
    index: _StageIndex,
    feeds: tuple[_KafkaLatency, _KafkaLatency],
    kind: str,
    wait: float,
    window: tuple[float, float] | None = None,
) -> dict[str, list[float]]:
    """The stage samples (ms) of one kind of row (see :func:`_stages`), of the bar ends in
    ``window`` if given: ``feed``, ``quoted`` (signals), ``ta``, ``queued``, ``insert``,
    ``poll``."""
    trades, quotes = feeds
    visible, inserted = index
    out: dict[str, list[float]] = {
        n: [] for n in ("feed", "quoted", "ta", "queued", "insert", "poll")
    }
    for (k, end), rows in inserted.items():
        if k != kind or (window is not None and not window[0] <= end < window[1]):
            continue
        passed = trades.passed(end + wait)
        ready = passed  # when the TA flow had what the row waits for
        if passed is not None and kind == "signals":
            quotes_passed = quotes.passed(end + wait)
            ready = None if quotes_passed is None else max(passed, quotes_passed)
        seen = sorted(visible.get((kind, end), []))
        for i, (emitted, began, done) in enumerate(sorted(rows, key=lambda r: r[2])):
            if passed is not None and ready is not None:
                out["feed"].append((passed - end - wait) * 1000)
                if kind == "signals":
                    out["quoted"].append((ready - passed) * 1000)
                out["ta"].append((emitted - ready) * 1000)
            out["queued"].append((began - emitted) * 1000)
            out["insert"].append((done - began) * 1000)
            if i < len(seen):
                out["poll"].append((seen[i] - done) * 1000)
    return out


def _stalls(ch: dict[str, Any], epoch_s: float) -> None:
    """The worker's stop at each epoch end: the snapshots of the stateful steps and sinks
    (Bytewax calls them one after the other on the worker, nothing else runs meanwhile), and
    the whole gap between two input polls around them."""
    per_epoch: dict[int, float] = {}
    per_step: dict[str, float] = {}
    gaps: list[tuple[float, float]] = []
    firsts: list[float] = []  # IndicatorLogic's: the gap holding one holds an epoch's stop
    for step, began, seconds in ch["snapshots"]:
        if step == _AWAY:
            gaps.append((began, seconds))
            continue
        if step == "IndicatorLogic":
            firsts.append(began)
        key = int(began // epoch_s)
        per_epoch[key] = per_epoch.get(key, 0.0) + seconds * 1000
        per_step[step] = per_step.get(step, 0.0) + seconds * 1000
    n = max(1, len(per_epoch))
    steps = ", ".join(
        f"{k} {v / n:.0f}" for k, v in sorted(per_step.items(), key=lambda kv: -kv[1])
    )
    _line(f"worker stopped for snapshots, per {epoch_s:g} s epoch", list(per_epoch.values()))
    print(f"  mean ms per epoch by step: {steps}")
    firsts.sort()
    stops = []
    for began, seconds in gaps:
        i = bisect.bisect_left(firsts, began)
        if i < len(firsts) and firsts[i] <= began + seconds:
            stops.append(seconds * 1000)
    _line("  the input's gap holding them (the whole stop)", stops)
    _line("worker away from its input > 20 ms, any cause", [s * 1000 for _, s in gaps])
    if ch.get("cpu") is not None:
        print(f"TA process CPU in the window: {100 * ch['cpu']:.0f} % of one core")


def _decisions(ch: dict[str, Any], signals: list[tuple[float, float]]) -> None:
    """Trading decisions (paper flow on the final signals): after the bar end, and after the
    signal rows of that bar end were first queryable (conservative: the earliest such row)."""
    first: dict[float, float] = {}
    for end, seen in signals:
        key = round(end, 3)
        first[key] = min(seen, first.get(key, seen))
    decided = ch["decisions"]
    _line("decision stored: after the bar end", [(t - e) * 1000 for e, t in decided])
    beyond = [(t - first[round(e, 3)]) * 1000 for e, t in decided if round(e, 3) in first]
    _line("  ... after its final signal rows were queryable", beyond)


def _over_time(
    args: argparse.Namespace,
    window: tuple[float, float],
    feeds: tuple[_KafkaLatency, _KafkaLatency],
    ch: dict[str, Any],
    rss: list[tuple[float, str, float, float]],
) -> None:
    """The headline figures per consecutive slice of the window (by bar end; RSS and CPU by
    wall time): p50 / p99 in ms, and each process's peak RSS in MiB and CPU in % of one core.
    The TA process's RSS includes this bench's own log of every inserted row (``log rows``).
    Then the p99 of each stage per slice (:func:`_stages`): which stage a drift is in."""
    trades = feeds[0]
    lateness = args.lateness_ms / 1000
    start, end = window
    width = (end - start) / args.slices
    first: dict[float, float] = {}
    for e, kind, committed, _seen in ch["rows"]:
        if kind == "signals":
            first[round(e, 3)] = min(committed, first.get(round(e, 3), committed))
    names = list(dict.fromkeys(name for _t, name, _r, _c in rss))
    print(
        f"over time: {args.slices} slices of {width:.0f} s "
        "(p50 / p99 ms; per process peak RSS MiB / CPU % of a core)"
    )
    head = ["slice", "provisional", "final bars", "signals", "decision", "feed lag"]
    print(" ".join(f"{h:>13}" for h in head) + "".join(f" {n:>11}" for n in names)
          + f" {'log rows':>9}")  # fmt: skip
    for i in range(args.slices):
        lo, hi = start + i * width, start + (i + 1) * width
        lat: dict[str, list[float]] = {"0": [], "1": [], "signals": []}
        for e, kind, committed, _seen in ch["rows"]:
            if lo <= e < hi:
                lat[kind].append((committed - e) * 1000)
        decided = [
            (t - first[round(e, 3)]) * 1000
            for e, t in (ch.get("decisions") or [])
            if lo <= e < hi and round(e, 3) in first
        ]
        feed = [
            ((trades.passed(e + lateness) or e + lateness) - e - lateness) * 1000
            for e in sorted({e for e, k, _c, _s in ch["rows"] if lo <= e < hi and k == "1"})
        ]
        cells = [f"{int(lo - start)}-{int(hi - start)} s"] + [
            f"{_pct(xs, 50):.0f} / {_pct(xs, 99):.0f}" if xs else "-"
            for xs in (lat["0"], lat["1"], lat["signals"], decided, feed)
        ]
        usage = [_usage([(t, r, c) for t, n, r, c in rss if n == name and lo <= t < hi])
                 for name in names]  # fmt: skip
        logged = sum(1 for r in ch["insert_log"] if r[5] < hi)
        print(" ".join(f"{c:>13}" for c in cells) + "".join(f" {u:>11}" for u in usage)
              + f" {logged:>9}")  # fmt: skip
    stages = ("feed", "ta", "queued", "insert")
    index = _stage_index(ch)
    print("stages over time, p99 ms: feed passed / TA emitted / insert started / insert ended")
    print(f"{'slice':>13} {'provisional':>24} {'signals':>24}")
    for i in range(args.slices):
        lo, hi = start + i * width, start + (i + 1) * width
        cells = [f"{int(lo - start)}-{int(hi - start)} s"]
        for kind, wait in (("0", 0.0), ("signals", lateness)):
            st = _kind_stages(index, feeds, kind, wait, (lo, hi))
            cells.append(" / ".join(f"{_pct(st[n], 99):.0f}" if st[n] else "-" for n in stages))
        print(f"{cells[0]:>13} {cells[1]:>24} {cells[2]:>24}")


def _usage(samples: list[tuple[float, float, float]]) -> str:
    """``peak RSS / CPU %`` over one slice's ``(wall, RSS, CPU seconds)`` samples."""
    if len(samples) < 2:
        return "-"
    (t0, _r0, c0), (t1, _r1, c1) = samples[0], samples[-1]
    return f"{max(r for _t, r, _c in samples):.0f} / {(c1 - c0) / (t1 - t0) * 100:.0f}"


def _line(label: str, xs: list[float]) -> None:
    if not xs:
        print(f"{label:<66} {0:>7}")
        return
    print(
        f"{label:<66} {len(xs):>7} {_pct(xs, 50):>7.0f} {_pct(xs, 95):>7.0f} "
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
