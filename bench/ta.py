"""Benchmark of the TA operators against a bare pass-through flow with the same input.

Run: ``.venv/bin/python -m bench.ta [--events 2000000] [--symbols 500] [--batch 5000]``

The input is a synthetic market: ``--symbols`` symbols, one trade for every
``--quotes-per-trade`` quotes, ``--rate`` events per event-second spread evenly over the symbols
(prices random-walk on the penny grid, sizes vary), pre-encoded as the JSON ``Envelope`` bytes
the ingest stage writes to Kafka, and fed in batches of ``--batch`` messages per source
(default: the TA flow's ``TA_KAFKA_BATCH_SIZE``) from two sources, trades and quotes, as the
Kafka topics would be. The pre-encoded input is frozen out of the garbage collector's reach
(``gc.freeze()``): it is test data, not part of the system under test.

Every flow runs on one worker in this process, ``--rounds`` times, the kinds interleaved: the
machine is shared and its speed drifts, so the best round of each kind is compared with the
best of the others (the median is printed too). Reported:

* events/s of the TA pipeline (decode, pre-aggregation, 1 s microbars, indicators on the
  1 s lane with quote imbalance) into a counting sink;
* events/s of a pass-through flow (same sources, same batches, straight into the sink);
* events/s of a decode-only pass-through: the same batches decoded with the TA flow's own
  msgspec decoders (one call per message, the fields the TA steps read) and nothing else, the
  part of the TA cost no operator design can remove;
* the ratios TA / pass-through and TA / decode-only;
* per-batch service time: the interval between successive polls of the sources, which on one
  worker is the time one input batch takes to go through the whole graph (p50 / p99 / max).

Not a timed test: numbers depend on the machine and its load; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from operators.indicators import ta_pipeline
from operators.kafka_io import encode_envelope
from operators.microbars import TRADE_WIRE
from operators.quotes import QUOTE_WIRE
from operators.ta_status import TaProgress
from torghut.config import TaSettings
from torghut.events import Envelope, Quote, Trade

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def synthetic_market(
    events: int, symbols: int, quotes_per_trade: int, rate: int, seed: int = 7
) -> tuple[list[bytes], list[bytes]]:
    """Pre-encoded trade and quote envelopes in event-time order."""
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
    return trades, quotes


class _Polls:
    """Times of every source poll (shared by the two sources of one flow)."""

    def __init__(self) -> None:
        self.times: list[float] = []


class _BatchSource(FixedPartitionedSource[bytes, int]):
    def __init__(self, items: list[bytes], batch: int, polls: _Polls) -> None:
        self._items, self._batch, self._polls = items, batch, polls

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[bytes, int]:
        return _BatchPartition(self._items, self._batch, self._polls)


class _BatchPartition(StatefulSourcePartition[bytes, int]):
    def __init__(self, items: list[bytes], batch: int, polls: _Polls) -> None:
        self._items, self._batch, self._polls, self._at = items, batch, polls, 0

    def next_batch(self) -> list[bytes]:
        if self._at >= len(self._items):
            raise StopIteration
        self._polls.times.append(time.perf_counter())
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


def _run(
    kind: str, trades: list[bytes], quotes: list[bytes], batch: int
) -> tuple[float, float, list[float], int, TaProgress]:
    flow = Dataflow(f"bench_{kind}")
    polls = _Polls()
    t_in = op.input("trades", flow, _BatchSource(trades, batch, polls))
    q_in = op.input("quotes", flow, _BatchSource(quotes, batch, polls))
    sink = _CountSink()
    progress = TaProgress()
    if kind == "ta":
        out = ta_pipeline("ta", t_in, q_in, None, TaSettings(), progress)
        op.output("out", op.merge("all", out.microbars, out.signals, out.dead_letters), sink)
    elif kind == "decode":
        t_dec = op.flat_map_batch("t_dec", t_in, lambda b: _decode_all(TRADE_WIRE, b))
        q_dec = op.flat_map_batch("q_dec", q_in, lambda b: _decode_all(QUOTE_WIRE, b))
        op.output("out", op.merge("all", t_dec, q_dec), sink)
    else:
        op.output("out", op.merge("all", t_in, q_in), sink)
    started, cpu = time.perf_counter(), time.process_time()
    run_main(flow, epoch_interval=timedelta(seconds=5))  # type: ignore[no-untyped-call]
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    gaps = [b - a for a, b in zip(polls.times, polls.times[1:], strict=False)]
    return elapsed, cpu, gaps, sink.count, progress


def _decode_all(decoder: msgspec.json.Decoder[Any], batch: list[bytes]) -> list[Any]:
    return list(map(decoder.decode, batch))


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument(
        "--batch", type=int, default=TaSettings().kafka_batch_size, help="TA_KAFKA_BATCH_SIZE"
    )
    ap.add_argument("--quotes-per-trade", type=int, default=4)
    ap.add_argument("--rate", type=int, default=100_000, help="events per event-second")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each flow, interleaved")
    ap.add_argument(
        "--gc-gen0",
        type=int,
        default=None,
        help="set Python's generation-0 GC threshold (default: leave Python's 700)",
    )
    args = ap.parse_args()
    if args.gc_gen0 is not None:
        gc.set_threshold(args.gc_gen0, *gc.get_threshold()[1:])
    trades, quotes = synthetic_market(args.events, args.symbols, args.quotes_per_trade, args.rate)
    gc.freeze()  # the pre-encoded input is not part of the system under test: keep it out of GC
    n = len(trades) + len(quotes)
    print(
        f"input: {n} events ({len(trades)} trades, {len(quotes)} quotes), {args.symbols} symbols, "
        f"{n / args.rate:.0f} event-seconds, batches of {args.batch}, 1 worker, "
        f"GC thresholds {gc.get_threshold()}, {args.rounds} rounds"
    )
    kinds = ("passthrough", "decode", "ta")
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    service: list[float] = []
    progress = TaProgress()
    for _ in range(args.rounds):
        for kind in kinds:
            elapsed, used, gaps, _, progress = _run(kind, trades, quotes, args.batch)
            wall[kind].append(n / elapsed)
            cpu[kind].append(n / used)
            if kind == "ta":
                service += [g * 1000 for g in gaps]
    for kind in kinds:
        median = statistics.median(wall[kind])
        print(
            f"{kind:>11}: best {max(wall[kind]):>12,.0f} events/s wall, "
            f"{max(cpu[kind]):>12,.0f} events/CPU-s; median {median:>12,.0f} events/s wall"
        )
    print(
        f"{'':>11}  ta batch service time p50 {_pct(service, 50):.2f} ms  "
        f"p99 {_pct(service, 99):.2f} ms  max {max(service):.2f} ms; last round: bars "
        f"{progress.bars}, signals {progress.signals}, dead letters {progress.dead_letters}"
    )
    for base in ("passthrough", "decode"):
        print(
            f"ratio ta / {base} (best of each): {max(wall['ta']) / max(wall[base]):.3f} (wall), "
            f"{max(cpu['ta']) / max(cpu[base]):.3f} (CPU)"
        )
    with open("/proc/loadavg", encoding="ascii") as f:
        print(f"load average: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
