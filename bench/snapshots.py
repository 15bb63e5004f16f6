"""Cost of the TA flow's recovery snapshots, as its worker pays them at epoch ends.

Run: ``.venv/bin/python -m bench.snapshots [--engines 1000] [--rounds 7] [--bars 600]
[--symbols 500] [--trades-per-s 7]``

The TA flow stops its worker at every epoch end while ``IndicatorLogic.snapshot`` pickles
every engine that changed during the epoch (500 symbols' 1 s lanes: all of them), so this cost
times the number of engines is a stop every bar ending meanwhile waits for (``bench/latency``'s
"worker stopped for snapshots"). ``--engines`` engines of the 1 s lane are fed ``--bars`` bars
each (a full 5-minute VWAP window) with a quote before every bar, as a traded symbol's are.
Timed per engine, best and median of ``--rounds`` rounds, the kinds interleaved in each round:

* ``snapshot``: :meth:`IndicatorEngine.snapshot` — the engine's flat tuple state, pickled;
* ``restore``: :meth:`IndicatorEngine.restore` of that (a restart, not paid per epoch);
* ``before (baseline)``: :meth:`IndicatorEngine.snapshot` of the code before the flat state
  (``--baseline-rev``, default 19ebd42: the engine pickled as its object graph), loaded from
  git into a private package (``_ta_before``) and fed the same bars, in the same run.

The microbar step's state is pickled by Bytewax itself (``pickle.dumps`` of each key group's
snapshot, for its recovery store; ``bench/latency`` times it on the worker): ``--symbols``
symbols fed ``--trades-per-s`` trades a second for the correction horizon plus a minute
(``TaSettings``' defaults), so each holds the horizon's closed bars packed. Timed per epoch (all
symbols), best and median of the rounds:

* ``microbars: snapshot()``: every symbol's :meth:`SymbolBars.snapshot` (the step's own);
* ``microbars: pickle``: those snapshots pickled, as Bytewax pickles them;
* ``microbars: pickle, before (baseline)``: the same snapshots in the form they had before
  (bars as objects: ``_Bar`` open, ``_PackedBar`` closed, by second), pickled.

Not a timed test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.ta import _cpu_model
from torghut.config import TaSettings
from torghut.events import Microbar, Quote
from torghut.ta.indicators import IndicatorEngine
from torghut.ta.microbars import (
    US_PER_S,
    Applied,
    ClosedBars,
    SymbolBars,
    SymbolBarsState,
    _Bar,
    _PackedBar,
    preaggregate,
)

_START = datetime(2026, 3, 9, 14, 0, 0, tzinfo=UTC)
_MODULES = (
    "__init__",
    "bollinger",
    "ema",
    "imbalance",
    "indicators",
    "instants",
    "macd",
    "rolling",
    "rsi",
    "volatility",
    "vwap",
)


def engines(count: int, bars: int, engine_class: type[Any] = IndicatorEngine) -> list[Any]:
    """``count`` 1 s lane engines, each fed ``bars`` bars of a random walk and quotes."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        engine = engine_class("PT1S", TaSettings())
        closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, bars)))
        for i, close in enumerate(closes.tolist()):
            end = _START + timedelta(seconds=i + 1)
            engine.on_quote(
                end - timedelta(milliseconds=5), Quote("V", close - 0.01, 3, "N", close, 4)
            )
            bar = Microbar(o=close, h=close, l=close, c=close, v=50.0, vwap=close, count=2)
            engine.on_bar(end, bar)
        out.append(engine)
    return out


def symbol_bars(symbols: int, trades_per_s: int) -> list[SymbolBars]:
    """``symbols`` symbols' bars after the correction horizon plus a minute of trades."""
    ta = TaSettings()
    lateness, horizon = ta.allowed_lateness_ms * 1000, ta.correction_horizon_s * US_PER_S
    start = int(_START.timestamp()) * US_PER_S
    names = [f"S{i:04d}" for i in range(symbols)]
    held = {name: SymbolBars(name, lateness, horizon) for name in names}
    out, trade_id = Applied(), 0
    for second in range(ta.correction_horizon_s + 60):
        ticks = []
        for name in names:
            for k in range(trades_per_s):
                trade_id += 1
                ts = start + second * US_PER_S + k * US_PER_S // trades_per_s
                ticks.append((name, ts, trade_id, "V", 100.0 + k / 100, 10.0))
        batches, _, _ = preaggregate(ticks, lateness)
        for name, batch in batches.items():
            held[name].apply(batch, out)
        out.bars.clear()
    return list(held.values())


def load_before(rev: str) -> type[Any]:
    """The ``IndicatorEngine`` class of ``rev``: its ``torghut/ta`` modules from git, renamed
    to the package ``_ta_before`` so both versions live in one process."""
    root = tempfile.mkdtemp(prefix="ta-snapshots-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = Path(root) / "_ta_before"
    package.mkdir()
    for name in _MODULES:
        source = subprocess.run(
            ["git", "show", f"{rev}:torghut/ta/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (package / f"{name}.py").write_text(source.replace("torghut.ta.", "_ta_before."))
    sys.path.insert(0, str(package.parent))
    engine_class: type[Any] = importlib.import_module("_ta_before.indicators").IndicatorEngine
    return engine_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline-rev", default="19ebd42")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--trades-per-s", type=int, default=7)
    args = parser.parse_args()
    engines_snapshots(args)
    microbars_snapshots(args)


def engines_snapshots(args: argparse.Namespace) -> None:
    fleet = engines(args.engines, args.bars)
    before = engines(args.engines, args.bars, load_before(args.baseline_rev))
    snaps = [engine.snapshot() for engine in fleet]
    olds = [engine.snapshot() for engine in before]
    kinds = {
        "snapshot": lambda: [engine.snapshot() for engine in fleet],
        "restore": lambda: [IndicatorEngine.restore(snap) for snap in snaps],
        "before (baseline)": lambda: [engine.snapshot() for engine in before],
        "before: restore": lambda: [type(before[0]).restore(old) for old in olds],
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind, run in kinds.items():
            t0 = time.perf_counter()
            run()
            times[kind].append((time.perf_counter() - t0) / args.engines * 1e6)
    print(f"CPU: {_cpu_model()}; {args.engines} engines × {args.bars} bars, {args.rounds} rounds")
    print(
        f"bytes per engine: snapshot {statistics.mean(map(len, snaps)):.0f}, "
        f"before {statistics.mean(map(len, olds)):.0f}"
    )
    for kind, values in times.items():
        print(f"{kind:>18}: best {min(values):6.1f} µs, median {statistics.median(values):6.1f} µs")
    ratio = statistics.median(times["before (baseline)"]) / statistics.median(times["snapshot"])
    print(f"snapshot: {ratio:.1f}× faster than before (medians)")


def microbars_snapshots(args: argparse.Namespace) -> None:
    bars = symbol_bars(args.symbols, args.trades_per_s)

    def before() -> list[SymbolBarsState]:
        out = []
        for symbol in bars:
            snap = symbol.snapshot()
            assert isinstance(snap.closed, ClosedBars)
            open_ = {sec: _Bar(*held) for sec, held in snap.open.items()}
            closed = {
                sec: _PackedBar(records, tuple(codes), late)  # the codes were a tuple then
                for sec, (records, codes, late) in snap.closed.bars().items()
            }
            out.append(SymbolBarsState(snap.symbol, snap.max_ts_us, open_, closed))
        return out

    snaps, olds = [b.snapshot() for b in bars], before()
    kinds = {
        "microbars: snapshot()": lambda: [b.snapshot() for b in bars],
        "microbars: pickle": lambda: pickle.dumps(snaps),
        "microbars: pickle, before (baseline)": lambda: pickle.dumps(olds),
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind, run in kinds.items():
            t0 = time.perf_counter()
            run()
            times[kind].append((time.perf_counter() - t0) * 1000)
    closed = sum(len(old.closed) for old in olds)
    print(f"microbars: {args.symbols} symbols, {closed} closed bars held; ms per epoch")
    for kind, values in times.items():
        print(f"{kind:>36}: best {min(values):6.1f} ms, median {statistics.median(values):6.1f} ms")
    ratio = statistics.median(times["microbars: pickle, before (baseline)"]) / statistics.median(
        times["microbars: pickle"]
    )
    print(f"microbars: pickle {ratio:.1f}× faster than before (medians)")


if __name__ == "__main__":
    main()
