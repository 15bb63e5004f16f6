"""Benchmark of the TA flow: through Kafka and ClickHouse, and its operators in process.

Run: ``.venv/bin/python -m bench.ta [--events 2000000] [--symbols 500,5000] [--bootstrap H:P]``

The input is a synthetic market: ``--symbols`` symbols, one trade for every
``--quotes-per-trade`` quotes, ``--rate`` events per event-second spread evenly over the symbols
(prices random-walk on the penny grid, sizes vary), pre-encoded as the JSON ``Envelope`` bytes
the ingest stage writes to Kafka. Its event times start yesterday at 14:30 UTC: recent enough
for the ClickHouse TTLs (an older start date would be refused by the TA flow's TTL check, and
before that check existed it was silently dropped by ClickHouse). For each symbol count in
``--symbols`` the benchmark reports:

**Through Kafka** (unless ``--no-kafka``; needs a broker, default ``KAFKA_BOOTSTRAP_SERVERS`` or
the test services' ``127.0.0.1:19092``): the market is produced to fresh topics (trades, quotes,
an empty bars topic; ``--partitions`` each), then

* ``raw consume``: a plain confluent-kafka consumer (``consume(20000)``, ``fetch.queue.backoff.ms``
  1 ms, 64 MB prefetch) reads the trade and quote topics to their end, taking each message's
  value — the most any Kafka consumer in Python can do with these topics on this machine;
* ``ta flow``: ``python -m bytewax.run dataflows.ta:flow`` as a backfill (``TA_EXIT_AT_END``) in
  a child process, Kafka → TA → Kafka (bars, signals, dead letters) + ClickHouse (chdb in a
  temporary directory), with the flow's defaults. Timed from its first
  ``kafka_partition_assigned`` log line (imports, migrations and start-up excluded, as for the raw
  consumer) to its exit; the whole process time is printed too. Peak RSS is the flow process's
  ``ru_maxrss`` (``os.wait4`` in a small launcher process, see ``_LAUNCHER``). The rows it
  produced are counted from the output topics.

The ratio ``ta flow / raw consume`` is the share of the broker's Python-side rate the product
keeps. Targets (issue #9): ≥ 0.5 with 500 and with 5,000 symbols, peak RSS ≤ 600 MiB, and
5,000 symbols at ≥ 0.8× the events/s of 500.

**In process** (unless ``--no-inprocess``): the same pre-encoded batches (``--batch``, default
``TA_KAFKA_BATCH_SIZE``) from two in-memory sources, one worker, ``--rounds`` rounds with the
kinds interleaved (best and median printed; the machine is shared and drifts), into a counting
sink:

* ``passthrough``: sources straight to the sink (Bytewax moving batches);
* ``decode``: each message decoded with the TA flow's own msgspec decoders, nothing else;
* ``ta``: :func:`operators.ta_pipeline.ta_pipeline` (the operators of the TA flow);
* ``idiomatic`` (``--idiomatic-rounds``, default 1: it is slow): what a Bytewax user writes
  first — per message ``op.map`` decoding the envelope, ``key_on`` symbol, ``fold_window`` with
  an ``EventClock`` (2 s wait, replay-safe settings from ``shared/bytewax-notes.md`` §1.6) and a
  1 s ``TumblingWindower`` for the bars, then ``stateful_map`` per symbol feeding talipp's
  EMA 12/26, MACD 12/26/9, RSI 14 and Bollinger 20/2 for the indicators, and a ``stateful_map``
  per symbol keeping its latest quote.

The ratio ``ta / idiomatic`` (target ≥ 5) says what the operator design buys over that.
Not a timed test: numbers depend on the machine and its load; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from talipp.indicators import BB, EMA, MACD, RSI

from bench.procfs import cpu_seconds, thread_name
from operators.kafka_io import encode_envelope
from operators.quotes import QUOTE_WIRE
from operators.ta_pipeline import ta_pipeline
from operators.ta_status import TaProgress
from operators.trade_wire import TRADE_WIRE
from torghut.config import TaSettings
from torghut.events import Envelope, Quote, Trade
from torghut.gc_policy import tune_for_streaming

ROOT = Path(__file__).resolve().parents[1]
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(hour=14, minute=30, second=0, microsecond=0)
"""Yesterday 14:30 UTC: within both TA tables' TTLs (14 and 30 days)."""


def synthetic_market(
    events: int, symbols: int, quotes_per_trade: int, rate: int, seed: int = 7
) -> tuple[list[bytes], list[bytes], list[str]]:
    """Pre-encoded trade and quote envelopes in event-time order, and each one's symbol."""
    rng = random.Random(seed)
    names = [f"S{i:04d}" for i in range(symbols)]
    prices = [rng.uniform(5, 500) for _ in range(symbols)]
    step_us = 1_000_000 / rate
    trades: list[bytes] = []
    quotes: list[bytes] = []
    for i in range(events):
        s = i % symbols
        ts = T0 + timedelta(microseconds=int(i * step_us))
        prices[s] = max(1.0, prices[s] * (1 + rng.gauss(0, 2e-4)))
        px = round(prices[s], 2)
        if (i // symbols) % (quotes_per_trade + 1) == 0:  # whole rounds: every symbol trades
            payload: Any = Trade(i, "V", px, float(rng.choice((1, 10, 100, 200, 500))), ("@",), "C")
            trades.append(encode_envelope(Envelope(ts, ts, names[s], i, payload)))
        else:
            bid, ask = round(px - 0.01, 2), round(px + 0.01, 2)  # quotes are on the penny grid
            payload = Quote("V", bid, rng.randint(1, 9) * 100.0, "Q", ask, 300.0)
            quotes.append(encode_envelope(Envelope(ts, ts, names[s], i, payload)))
    return trades, quotes, names


# --- in process -----------------------------------------------------------------------------


class _BatchSource(FixedPartitionedSource[bytes, int]):
    def __init__(self, items: list[bytes], batch: int) -> None:
        self._items, self._batch = items, batch

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[bytes, int]:
        return _BatchPartition(self._items, self._batch)


class _BatchPartition(StatefulSourcePartition[bytes, int]):
    def __init__(self, items: list[bytes], batch: int) -> None:
        self._items, self._batch, self._at = items, batch, 0

    def next_batch(self) -> list[bytes]:
        if self._at >= len(self._items):
            raise StopIteration
        out = self._items[self._at : self._at + self._batch]
        self._at += self._batch
        return out

    def snapshot(self) -> int:
        return self._at


class _CountSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.count = 0

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountPartition:
        return _CountPartition(self)


class _CountPartition(StatelessSinkPartition[Any]):
    def __init__(self, sink: _CountSink) -> None:
        self._sink = sink

    def write_batch(self, items: list[Any]) -> None:
        self._sink.count += len(items)


def _run_inprocess(
    kind: str, trades: list[bytes], quotes: list[bytes], batch: int
) -> tuple[float, float, int]:
    """(wall s, CPU s, items out) of one in-process flow of ``kind``."""
    flow = Dataflow(f"bench_{kind}")
    t_in = op.input("trades", flow, _BatchSource(trades, batch))
    q_in = op.input("quotes", flow, _BatchSource(quotes, batch))
    sink = _CountSink()
    if kind == "ta":
        out = ta_pipeline("ta", t_in, q_in, None, TaSettings(), TaProgress())
        op.output("out", op.merge("all", out.microbars, out.signals, out.dead_letters), sink)
    elif kind == "idiomatic":
        op.output("out", _idiomatic(t_in, q_in), sink)
    elif kind == "decode":
        t_dec = op.flat_map_batch("t_dec", t_in, lambda b: list(map(TRADE_WIRE.decode, b)))
        q_dec = op.flat_map_batch("q_dec", q_in, lambda b: list(map(QUOTE_WIRE.decode, b)))
        op.output("out", op.merge("all", t_dec, q_dec), sink)
    else:
        op.output("out", op.merge("all", t_in, q_in), sink)
    started, cpu = time.perf_counter(), time.process_time()
    run_main(flow, epoch_interval=timedelta(seconds=5))  # type: ignore[no-untyped-call]
    return time.perf_counter() - started, time.process_time() - cpu, sink.count


# --- the idiomatic baseline -------------------------------------------------------------------

_TRADE = msgspec.json.Decoder(Envelope[Trade])
_QUOTE = msgspec.json.Decoder(Envelope[Quote])
_WAIT = timedelta(seconds=2)


@dataclass
class _Bar:
    o: float = 0.0
    h: float = float("-inf")
    l: float = float("inf")  # noqa: E741 - the domain's name
    c: float = 0.0
    v: float = 0.0
    pv: float = 0.0
    n: int = 0


def _fold(bar: _Bar, env: Envelope[Trade]) -> _Bar:
    p, q = env.payload.price, env.payload.size
    if bar.n == 0:
        bar.o = p
    bar.h, bar.l, bar.c = max(bar.h, p), min(bar.l, p), p
    bar.v += q
    bar.pv += p * q
    bar.n += 1
    return bar


def _merge(a: _Bar, b: _Bar) -> _Bar:  # only session windows merge; tumbling never calls it
    return a


class _Indicators:
    def __init__(self) -> None:
        self.ema12, self.ema26 = EMA(12), EMA(26)
        self.macd, self.rsi, self.bb = MACD(12, 26, 9), RSI(14), BB(20, 2.0)

    def add(self, close: float) -> tuple[Any, ...]:
        for ind in (self.ema12, self.ema26, self.macd, self.rsi, self.bb):
            ind.add(close)
        return (self.ema12[-1], self.ema26[-1], self.macd[-1], self.rsi[-1], self.bb[-1])


def _signal(
    state: _Indicators | None, item: tuple[int, _Bar]
) -> tuple[_Indicators, tuple[Any, ...]]:
    ind = state or _Indicators()
    _, bar = item
    return ind, (bar.c, bar.v, bar.pv / bar.v if bar.v else None, *ind.add(bar.c))


def _latest_quote(
    state: Envelope[Quote] | None, q: Envelope[Quote]
) -> tuple[Envelope[Quote], None]:
    return q, None


def _idiomatic(trades: Any, quotes: Any) -> Any:
    """1 s bars with ``fold_window`` + talipp indicators, as a Bytewax user writes them first."""
    t = op.map("t_decode", trades, _TRADE.decode)
    keyed = op.key_on("t_key", t, lambda e: e.symbol)
    clock: win.EventClock[Envelope[Trade]] = win.EventClock(
        lambda e: e.event_ts,
        wait_for_system_duration=_WAIT,
        now_getter=lambda: T0,  # replay: event time only (bytewax-notes §1.6)
        to_system_utc=lambda _: None,
    )
    windows = win.fold_window(
        "bars",
        keyed,
        clock,
        win.TumblingWindower(timedelta(seconds=1), align_to=T0),
        _Bar,
        _fold,
        _merge,
    )
    signals = op.stateful_map("indicators", windows.down, _signal)
    q = op.key_on("q_key", op.map("q_decode", quotes, _QUOTE.decode), lambda e: e.symbol)
    latest = op.filter(
        "no_output", op.stateful_map("latest_quote", q, _latest_quote), lambda _: False
    )
    return op.merge("all", signals, latest, windows.late)


# --- through Kafka ----------------------------------------------------------------------------


def _produce(bootstrap: str, topic: str, values: list[bytes], keys: list[str]) -> None:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": "20",
            "batch.size": "1000000",
            "compression.type": "lz4",
            "queue.buffering.max.messages": "1000000",
        }
    )
    for value, key in zip(values, keys, strict=True):
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0, f"undelivered messages to {topic}"


def _keys(values: list[bytes], names: list[str]) -> list[str]:
    sym = msgspec.json.Decoder(_Symbol)
    return [sym.decode(v).symbol for v in values]


class _Symbol(msgspec.Struct):
    symbol: str


def _ends(c: Consumer, topics: list[str], partitions: int) -> dict[tuple[str, int], int]:
    return {
        (t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
        for t in topics
        for p in range(partitions)
    }


def raw_consume(bootstrap: str, topics: list[str], partitions: int) -> tuple[int, float, float]:
    """(messages, seconds, CPU seconds of all threads) of a tuned plain consumer reading
    ``topics`` to their end."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": "false",
            "fetch.queue.backoff.ms": "1",
            "queued.max.messages.kbytes": "65536",
        }
    )
    try:
        ends = _ends(c, topics, partitions)
        total = sum(ends.values())
        started, cpu = time.perf_counter(), time.process_time()
        c.assign([TopicPartition(t, p, 0) for (t, p) in ends])
        n = 0
        value = Message.value
        while n < total:
            msgs = c.consume(20_000, 0.1)
            values = list(map(value, msgs))
            n += len(values)
        return n, time.perf_counter() - started, time.process_time() - cpu
    finally:
        c.close()


@dataclass
class FlowRun:
    seconds: float
    """From the first partition assigned to the exit."""
    process_seconds: float
    max_rss_mib: float
    cpu_seconds: float
    """User + system CPU of the whole process (all threads, start-up included)."""
    code: int
    log_tail: str
    threads: dict[str, float]
    """CPU seconds by kind of thread (:class:`_ThreadCpu`), start-up included."""


_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs the flow and writes its peak RSS (KiB). Why a launcher: a child's ``ru_maxrss`` also
counts what its parent had mapped when it forked (before ``exec``), and this benchmark holds
the whole market in memory; forked from a small launcher the figure is the flow's own."""


def run_ta_flow(env: dict[str, str], log: Path) -> FlowRun:
    """``bytewax.run dataflows.ta:flow`` to its end; timing, peak RSS and CPU of that process."""
    rss_file = log.with_suffix(".maxrss")
    started = time.time()
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCHER,
                str(rss_file),
                sys.executable,
                "-m",
                "bytewax.run",
                "dataflows.ta:flow",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        threads = _ThreadCpu(launcher)
        threads.start()
        code = launcher.wait()
        threads.join(timeout=5)
    ended = time.time()
    first = None
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        if line.startswith("{") and "kafka_partition_assigned" in line:
            first = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
            break
    seconds = ended - (first if first is not None else started)
    rss_kib, cpu = rss_file.read_text().split() if rss_file.exists() else ("nan", "nan")
    return FlowRun(
        seconds,
        ended - started,
        int(rss_kib) / 1024,
        float(cpu),
        code,
        text[-3000:],
        threads.by_kind(),
    )


class _ThreadCpu(threading.Thread):
    """The flow process's CPU per kind of thread, from ``/proc/<pid>/task/*/stat`` read every
    0.2 s until it exits (the last reading of each thread counts): Python's threads (the
    worker, the ClickHouse insert threads — the embedded ClickHouse runs an insert on the
    thread that calls it, so its work is counted here too), librdkafka's (``rdk:*``: fetching,
    decompressing, producing) and the rest (Bytewax's runtime, ClickHouse's background pools).
    Why: the raw consumer's CPU is librdkafka's and its own loop; this says how much of the
    flow's is the Kafka client's and how much is ours."""

    def __init__(self, launcher: subprocess.Popen[bytes]) -> None:
        super().__init__(name="thread-cpu", daemon=True)
        self._launcher = launcher
        self._last: dict[int, tuple[str, float]] = {}

    def run(self) -> None:
        pid = None
        while True:
            if pid is None:
                kids = Path(f"/proc/{self._launcher.pid}/task/{self._launcher.pid}/children")
                found = kids.read_text().split() if kids.exists() else []
                pid = int(found[0]) if found else None
            if pid is not None:
                for task in Path(f"/proc/{pid}/task").glob("*"):
                    try:
                        stat = (task / "stat").read_text()
                    except OSError:
                        continue
                    self._last[int(task.name)] = (thread_name(stat), cpu_seconds(stat))
            try:
                self._launcher.wait(timeout=0.2)  # the next reading, or none once it exits
                return
            except subprocess.TimeoutExpired:
                continue

    def by_kind(self) -> dict[str, float]:
        out = {"python": 0.0, "librdkafka": 0.0, "other native": 0.0}
        for name, used in self._last.values():
            kind = "librdkafka" if name.startswith("rdk:") else "other native"
            out["python" if name.startswith("python") else kind] += used
        return out


def _topic_total(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        return sum(_ends(c, [topic], 1).values())
    finally:
        c.close()


def kafka_round(
    bootstrap: str,
    trades: list[bytes],
    quotes: list[bytes],
    names: list[str],
    partitions: int,
    work: Path,
    extra_env: dict[str, str],
) -> dict[str, Any]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    run = uuid.uuid4().hex[:8]
    names_in = {n: f"bench-{run}-{n}" for n in ("trades", "quotes", "bars")}
    names_out = {n: f"bench-{run}-ta-{n}" for n in ("bars", "signals", "status", "dlq")}
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in names_in.values()]
    new += [NewTopic(t, num_partitions=1, replication_factor=1) for t in names_out.values()]
    for fut in admin.create_topics(new, operation_timeout=30).values():
        fut.result(timeout=60)
    try:
        started = time.perf_counter()
        _produce(bootstrap, names_in["trades"], trades, _keys(trades, names))
        _produce(bootstrap, names_in["quotes"], quotes, _keys(quotes, names))
        produced = time.perf_counter() - started
        raw_n, raw_s, raw_cpu = raw_consume(
            bootstrap, [names_in["trades"], names_in["quotes"]], partitions
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CH_", "TA_"))}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "TORGHUT_DATA_DIR": str(work / "data"),
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC_TRADES": names_in["trades"],
                "KAFKA_TOPIC_QUOTES": names_in["quotes"],
                "KAFKA_TOPIC_BARS": names_in["bars"],
                "KAFKA_TOPIC_TA_BARS": names_out["bars"],
                "KAFKA_TOPIC_TA_SIGNALS": names_out["signals"],
                "KAFKA_TOPIC_TA_STATUS": names_out["status"],
                "KAFKA_TOPIC_TA_DLQ": names_out["dlq"],
                "CH_DSN": f"chdb://{work / 'chdb'}",
                "CH_DATABASE": "bench",
                "TA_EXIT_AT_END": "true",
                **extra_env,
            }
        )
        flow = run_ta_flow(env, work / "ta.log")
        if flow.code != 0:
            raise SystemExit(f"TA flow failed with {flow.code}:\n{flow.log_tail}")
        empty = names_in["bars"]  # the same flow on empty inputs: its start-up and shutdown
        idle = run_ta_flow(
            {
                **env,
                "KAFKA_TOPIC_TRADES": empty,
                "KAFKA_TOPIC_QUOTES": empty,
                "CH_DSN": f"chdb://{work / 'chdb-empty'}",
            },
            work / "empty.log",
        )
        return {
            "produce_s": produced,
            "raw_n": raw_n,
            "raw_s": raw_s,
            "raw_cpu": raw_cpu,
            "flow": flow,
            "idle": idle,
            "bars": _topic_total(bootstrap, names_out["bars"]),
            "signals": _topic_total(bootstrap, names_out["signals"]),
            "dead": _topic_total(bootstrap, names_out["dlq"]),
        }
    finally:
        topics = [*names_in.values(), *names_out.values()]
        for fut in admin.delete_topics(topics, operation_timeout=30).values():
            fut.result(timeout=60)


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--symbols", default="500,5000", help="comma-separated symbol counts")
    ap.add_argument(
        "--batch", type=int, default=TaSettings().kafka_batch_size, help="TA_KAFKA_BATCH_SIZE"
    )
    ap.add_argument("--quotes-per-trade", type=int, default=4)
    ap.add_argument("--rate", type=int, default=100_000, help="events per event-second")
    ap.add_argument("--rounds", type=int, default=3, help="in-process runs of each kind")
    ap.add_argument("--idiomatic-rounds", type=int, default=1)
    ap.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
        help="Kafka broker for the Kafka part",
    )
    ap.add_argument("--partitions", type=int, default=2, help="partitions of each input topic")
    ap.add_argument(
        "--flow-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the TA flow (e.g. TA_KAFKA_BATCH_SIZE=5000); repeatable",
    )
    ap.add_argument("--no-kafka", action="store_true")
    ap.add_argument("--no-inprocess", action="store_true")
    args = ap.parse_args()
    cpu = _cpu_model()
    print(f"CPU: {cpu}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    per_symbols: dict[int, float] = {}
    for symbols in (int(x) for x in args.symbols.split(",")):
        trades, quotes, names = synthetic_market(
            args.events, symbols, args.quotes_per_trade, args.rate
        )
        tune_for_streaming()  # as the TA flow does; the pre-encoded input is frozen with it
        n = len(trades) + len(quotes)
        print(
            f"\n== {symbols} symbols: {n} events ({len(trades)} trades, {len(quotes)} quotes), "
            f"{n / args.rate:.0f} event-seconds from {T0.isoformat()}"
        )
        if not args.no_kafka:
            with tempfile.TemporaryDirectory(prefix="bench-ta-") as tmp:
                extra = dict(kv.split("=", 1) for kv in args.flow_env)
                k = kafka_round(
                    args.bootstrap, trades, quotes, names, args.partitions, Path(tmp), extra
                )
            f: FlowRun = k["flow"]
            idle: FlowRun = k["idle"]
            net_cpu = f.cpu_seconds - idle.cpu_seconds
            raw_rate = k["raw_n"] / k["raw_s"]
            ta_rate = n / f.seconds
            per_symbols[symbols] = ta_rate
            print(
                f"  kafka ({args.partitions} partitions per topic, produced in "
                f"{k['produce_s']:.1f} s)\n"
                f"    raw consume : {raw_rate:>12,.0f} events/s "
                f"({k['raw_n']} in {k['raw_s']:.2f} s)\n"
                f"    ta flow     : {ta_rate:>12,.0f} events/s ({f.seconds:.2f} s from the first "
                f"partition assigned; {n / f.process_seconds:,.0f} events/s over the whole "
                f"process, {f.process_seconds:.2f} s)\n"
                f"    ratio ta flow / raw consume: {ta_rate / raw_rate:.3f} (wall); per CPU-second "
                f"{n / net_cpu:,.0f} / {k['raw_n'] / k['raw_cpu']:,.0f} = "
                f"{(n / net_cpu) / (k['raw_n'] / k['raw_cpu']):.3f} (the flow's CPU net of "
                f"its start-up and shutdown, {idle.cpu_seconds:.2f} CPU-s on empty inputs)\n"
                f"    peak RSS of the ta flow: {f.max_rss_mib:.0f} MiB ({idle.max_rss_mib:.0f} MiB "
                "on empty inputs: modules and the embedded ClickHouse)\n"
                f"    rows out: {k['bars']} bars, {k['signals']} signals, "
                f"{k['dead']} dead letters\n"
                "    the flow's CPU net of start-up by thread: "
                + ", ".join(
                    f"{kind} {used - idle.threads[kind]:.2f} s" for kind, used in f.threads.items()
                )
                + f" (raw consume: {k['raw_cpu']:.2f} s)"
            )
        if not args.no_inprocess:
            _inprocess(trades, quotes, n, args)
        del trades, quotes
        gc.unfreeze()
        gc.collect()
    if len(per_symbols) >= 2:
        lo, hi = min(per_symbols), max(per_symbols)
        print(
            f"\nscaling: ta flow with {hi} symbols at {per_symbols[hi] / per_symbols[lo]:.2f}x "
            f"the events/s of {lo}"
        )
    with open("/proc/loadavg", encoding="ascii") as fh:
        print(f"load average: {' '.join(fh.read().split()[:3])}")


def _inprocess(trades: list[bytes], quotes: list[bytes], n: int, args: Any) -> None:
    kinds = ("passthrough", "decode", "ta")
    wall: dict[str, list[float]] = {k: [] for k in (*kinds, "idiomatic")}
    cpu: dict[str, list[float]] = {k: [] for k in (*kinds, "idiomatic")}
    for r in range(max(args.rounds, args.idiomatic_rounds)):
        for kind in (*kinds, "idiomatic"):
            if r >= (args.idiomatic_rounds if kind == "idiomatic" else args.rounds):
                continue
            elapsed, used, _ = _run_inprocess(kind, trades, quotes, args.batch)
            wall[kind].append(n / elapsed)
            cpu[kind].append(n / used)
    print(f"  in process (batches of {args.batch}, 1 worker; best / median of the rounds)")
    for kind in (*kinds, "idiomatic"):
        if wall[kind]:
            print(
                f"    {kind:<11} : {max(wall[kind]):>12,.0f} / "
                f"{statistics.median(wall[kind]):>12,.0f} events/s wall, "
                f"{max(cpu[kind]):>12,.0f} events/CPU-s ({len(wall[kind])} rounds)"
            )
    best = max(wall["ta"])
    for base in ("passthrough", "decode", "idiomatic"):
        if wall[base]:
            print(f"    ratio ta / {base}: {best / max(wall[base]):.3f}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
