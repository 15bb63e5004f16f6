"""Latency of the cached TA endpoints, with and without the cache, over real HTTP.

Run: ``.venv/bin/python -m bench.api [--symbols 5] [--minutes 60] [--requests 400] [--clients 4]``

Setup (one process, as the embedded default runs): a fresh chdb data directory with the TA
migrations and ``--minutes`` of 1 s bars and signals for ``--symbols`` symbols, then the real
app served by uvicorn on a free localhost port. Each mode (cache TTL 0 = every request reads
ClickHouse with ``FINAL``; TTL 500 ms = the default) runs ``--requests`` requests per endpoint
per client from ``--clients`` concurrent keep-alive httpx clients:

* ``/api/torghut/ta/latest?symbol=S`` cycling over the symbols;
* ``/api/torghut/ta/bars?symbol=S&from=..&to=..`` over the last 15 minutes of data (900 bars),
  the dashboard's chart query.

Printed: p50 / p95 / max in ms per endpoint and mode, and the p95 ratio uncached / cached.
Not a timed test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from api.app import create_app
from api.server import BackgroundServer
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
from torghut.config import ApiSettings, ClickHouseSettings, Settings, StoreSettings, load_settings
from torghut.events import Envelope, Microbar, Signal, Window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", type=int, default=5)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)

    work = tempfile.mkdtemp(prefix="bench-api-")
    ch_settings = ClickHouseSettings(dsn=f"chdb://{work}/chdb", database="torghut")
    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(minutes=args.minutes)
    rows = _seed(ch_settings, symbols, start, end)
    print(f"seeded {rows} bars + {rows} signals ({args.symbols} symbols x {args.minutes} min)")

    base = load_settings()
    results: dict[tuple[str, str], list[float]] = {}
    chart_from = (end - timedelta(minutes=15)).isoformat()
    for mode, ttl_ms in (("uncached", 0), ("cached", 500)):
        settings = Settings(
            kafka=base.kafka,
            clickhouse=ch_settings,
            store=StoreSettings(url=f"sqlite:///{work}/trading.sqlite"),
            recovery=base.recovery,
            alpaca=base.alpaca,
            ta=base.ta,
            trading=base.trading,
            risk=base.risk,
            llm=base.llm,
            api=ApiSettings(ta_cache_ttl_ms=ttl_ms),
        )
        with BackgroundServer(create_app(settings), port=_free_port()) as url:
            queries: dict[str, Callable[[int], str]] = {
                "latest": lambda i: (
                    f"{url}/api/torghut/ta/latest?symbol={symbols[i % len(symbols)]}"
                ),
                "bars": lambda i: (
                    f"{url}/api/torghut/ta/bars?symbol={symbols[i % len(symbols)]}"
                    f"&from={chart_from}&to={end.isoformat()}"
                ).replace("+", "%2B"),
            }
            for name, make_url in queries.items():
                _run(make_url, 20, 1)  # warm up connections and the engine
                results[(name, mode)] = _run(make_url, args.requests, args.clients)

    print(f"\n{'endpoint':<8} {'mode':<9} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for (name, mode), samples in results.items():
        p50, p95 = _pct(samples, 50), _pct(samples, 95)
        print(f"{name:<8} {mode:<9} {len(samples):>6} {p50:>8.2f} {p95:>8.2f} {max(samples):>8.2f}")
    for name in ("latest", "bars"):
        ratio = _pct(results[(name, "uncached")], 95) / _pct(results[(name, "cached")], 95)
        print(f"p95 uncached/cached {name}: {ratio:.1f}x")


def _seed(settings: ClickHouseSettings, symbols: list[str], start: datetime, end: datetime) -> int:
    client = connect(settings)
    migrate(client, settings)
    rng = random.Random(7)
    n = 0
    for sym in symbols:
        price = 100.0
        bars, signals = [], []
        ts = start
        seq = 0
        while ts < end:
            price *= math.exp(rng.gauss(0, 0.0005))
            ingest = ts + timedelta(milliseconds=rng.randint(20, 400))
            window = Window(size="PT1S", start=ts - timedelta(seconds=1), end=ts)
            bars.append(
                Envelope(
                    event_ts=ts,
                    ingest_ts=ingest,
                    symbol=sym,
                    seq=seq,
                    payload=Microbar(
                        o=price, h=price, l=price, c=price, v=5.0, vwap=price, count=2
                    ),
                    is_final=True,
                    source="bench",
                    window=window,
                )
            )
            signals.append(
                Envelope(
                    event_ts=ts,
                    ingest_ts=ingest,
                    symbol=sym,
                    seq=seq,
                    payload=Signal(
                        close=price, rsi14=50.0, boll_upper=price + 1, boll_lower=price - 1
                    ),
                    is_final=True,
                    source="bench",
                    window=window,
                )
            )
            ts += timedelta(seconds=1)
            seq += 1
        client.insert(
            MICROBARS_TABLE, [microbar_row(b) for b in bars], column_names=MICROBAR_COLUMNS
        )
        client.insert(SIGNALS_TABLE, [signal_row(s) for s in signals], column_names=SIGNAL_COLUMNS)
        n += len(bars)
    client.close()
    return n


def _run(make_url: Callable[[int], str], requests: int, clients: int) -> list[float]:
    """Latency in ms of ``requests`` GETs per client, ``clients`` clients at once."""

    def one_client(offset: int) -> list[float]:
        out = []
        with httpx.Client(timeout=10) as http:
            for i in range(requests):
                url = make_url(i + offset)
                t0 = time.perf_counter()
                r = http.get(url)
                out.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [x for part in pool.map(one_client, range(clients)) for x in part]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100)[p - 1] if len(samples) > 1 else samples[0]


if __name__ == "__main__":
    main()
