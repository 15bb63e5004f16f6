"""The API under load while the embedded pipeline runs: wrk at 100 connections against the demo.

Run: ``.venv/bin/python -m bench.api [--symbols 500] [--minutes 60] [--connections 100]
[--duration 20] [--bars-symbols 20] [--accept-encoding identity]``

Setup, as ``make demo`` runs: a fresh data directory whose chdb store holds ``--symbols`` symbols
x ``--minutes`` of 1 s bars and signals ending now (written by ClickHouse itself with
``INSERT … SELECT FROM numbers()``, in a child process: chdb locks its directory per process),
the trading cursor placed after them (the trading loop trades the live market, not the seeded
hour); then ``python -m dataflows.demo --seconds 0`` on that directory: market simulator,
ingest → TA → ClickHouse → paper trading, and the API, in one process.

Load: `wrk <https://github.com/wg/wrk>`_ (Debian package ``wrk``; ``make sysdeps`` installs it)
with ``--connections`` connections on 2 threads for ``--duration`` seconds per endpoint, each
request taking the next path of a list (a Lua script):

* ``latest`` — ``/api/torghut/ta/latest?symbol=S`` over all seeded symbols;
* ``bars 1h`` — ``/api/torghut/ta/bars?symbol=S&from=<end-1h>&to=<end>`` (3,600 bars) over the
  first ``--bars-symbols`` symbols (viewers of a few popular symbols);
* ``update`` — ``/api/torghut/console/update?symbol=S``, the dashboard's update call, over the
  demo's live symbols.

Before each load every path is asked once, in turn (the first computation of each shared
answer, printed on its own as "first asks"); wrk then measures viewers asking answers that exist.
Every request sends ``Accept-Encoding: --accept-encoding``, by default what Chromium sends (the
console's requests are the browser's), so large shared answers come gzipped; ``identity``
measures the plain bytes.

Printed per endpoint: requests/s, p50/p95/p99 latency (wrk's own histogram), bytes per response
(as received), non-2xx count, and
the pipeline's lag sampled once a second from ``/trading/pipeline`` while the load runs
(``ta_lag_ms``: now - the newest signal; ``watermark``: now - the TA watermark), next to the same
lag measured for ``--duration`` seconds before any load (the same-run baseline). Targets (issue
12): ``latest`` p99 <= 50 ms, ``bars 1h`` p99 <= 150 ms. Not a timed test: the numbers depend on
the machine and its load (print ``lscpu`` and the load average with them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

LIVE_SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN")
BROWSER_ACCEPT_ENCODING = "gzip, deflate, br, zstd"
"""What Chromium sends: the console's requests are the browser's."""

WRK_SCRIPT = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Accept-Encoding"] = "%(accept)s"})
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'WRK {"requests": %%d, "seconds": %%f, "p50": %%f, "p95": %%f, "p99": %%f, '
      .. '"max": %%f, "errors": %%d, "non2xx": %%d, "bytes": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    errors, summary.errors.status, summary.bytes))
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--bars-symbols", type=int, default=20)
    parser.add_argument(
        "--accept-encoding",
        default=BROWSER_ACCEPT_ENCODING,
        help="sent with every request (default: what Chromium sends; 'identity' for plain)",
    )
    parser.add_argument("--seed-only", metavar="DATA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_only:
        _seed(Path(args.seed_only), args.symbols, args.minutes, datetime.fromisoformat(args.end))
        return
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("bench.api needs wrk: `make sysdeps` installs it (or: apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    end = datetime.now(UTC).replace(microsecond=0)
    env = {**os.environ, "TORGHUT_DATA_DIR": str(work), "LOG_LEVEL": "ERROR"}
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "bench.api", "--seed-only", str(work), "--end", end.isoformat(),
         "--symbols", str(args.symbols), "--minutes", str(args.minutes)],
        env=env, check=True,
    )  # fmt: skip
    rows = args.symbols * args.minutes * 60
    print(f"seeded {rows:,} bars + {rows:,} signals ({args.symbols} symbols x {args.minutes} min "
          f"of 1 s) in {time.monotonic() - t0:.0f} s into {work}")  # fmt: skip

    port = _free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "dataflows.demo", "--seconds", "0", "--port", str(port),
         "--symbols", ",".join(LIVE_SYMBOLS)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()
        if "dashboard:" not in first:
            raise RuntimeError(f"the demo did not start: {first!r}")
        _wait_for_signals(url)
        print(f"demo pipeline running, API on {url}")
        baseline = _sample_lag(url, args.duration)
        seeded = [f"S{i:03d}" for i in range(args.symbols)]
        span = f"from={(end - timedelta(hours=1)).isoformat()}&to={end.isoformat()}"
        span = span.replace("+", "%2B")
        loads = {
            "latest": [f"/api/torghut/ta/latest?symbol={s}" for s in seeded],
            "bars 1h": [
                f"/api/torghut/ta/bars?symbol={s}&{span}" for s in seeded[: args.bars_symbols]
            ],
            "update": [f"/api/torghut/console/update?symbol={s}" for s in LIVE_SYMBOLS],
        }
        results = {}
        first_asks: dict[str, list[float]] = {}
        for name, paths in loads.items():
            _settle(url)
            first_asks[name] = _first_asks(url, paths, args.accept_encoding)
            results[name] = _wrk(
                wrk, url, paths, args.connections, args.duration, args.accept_encoding, work
            )
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nwrk: {args.connections} connections, 2 threads, {args.duration} s per endpoint; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          f"({_cpu_model()}); Accept-Encoding: {args.accept_encoding}")  # fmt: skip
    head = f"{'endpoint':<9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(f"{head} {'kB/resp':>8} {'non2xx':>7}  pipeline lag during load "
          "(TA lag / watermark lag, p50-max)")  # fmt: skip
    print(f"{'baseline':<9} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>7}  "
          f"{_lag_text(baseline)}")  # fmt: skip
    for name, (r, lag) in results.items():
        kb = r["bytes"] / max(1, r["requests"]) / 1000
        print(f"{name:<9} {r['requests'] / r['seconds']:>8.0f} {r['p50']:>8.1f} {r['p95']:>8.1f} "
              f"{r['p99']:>8.1f} {r['max']:>8.1f} {kb:>8.1f} {r['non2xx']:>7}  "
              f"{_lag_text(lag)}")  # fmt: skip
    print("targets: latest p99 <= 50 ms, bars 1h p99 <= 150 ms")
    print("first asks before each load (each path once, in turn; a shared answer is computed):")
    for name, asks in first_asks.items():
        print(f"  {name:<9} {len(asks)} paths, p50 {statistics.median(asks):.1f} ms, "
              f"max {max(asks):.1f} ms")  # fmt: skip
    print("shared answers by outcome during each load (see api/shared_answers.py):")
    for name, (r, _) in results.items():
        outcomes = ", ".join(f"{k[7:]} {v:,.0f}" for k, v in r.items() if k.startswith("shared "))
        print(f"  {name:<9} {outcomes}")


def _seed(work: Path, symbols: int, minutes: int, end: datetime) -> None:
    """Bars and signals for ``S000..`` ending at ``end``, by ClickHouse; the cursor after them."""
    from torghut.clickhouse import connect, migrate
    from torghut.config import load_settings
    from trading.adapters.store import TradingStore
    from trading.core.ports import SignalCursor

    settings = load_settings()
    client = connect(settings.clickhouse)
    migrate(client, settings.clickhouse)
    seconds = minutes * 60
    start_ms = int((end - timedelta(seconds=seconds)).timestamp() * 1000)
    rows = (
        f"SELECT concat('S', leftPad(toString(intDiv(number, {seconds})), 3, '0')) AS symbol, "
        f"fromUnixTimestamp64Milli(toInt64({start_ms} + (number % {seconds}) * 1000), 'UTC') "
        "AS event_ts, number % {seconds} AS seq, "
        "event_ts + toIntervalMillisecond(60) AS ingest_ts, "
        "1 AS is_final, 'bench' AS source, 'PT1S' AS window_size, 'PT1S' AS window_step, "
        "event_ts AS window_start, event_ts + toIntervalSecond(1) AS window_end, 1 AS version, "
        "100 + intDiv(number, {seconds}) / 10 + sin(number / 300) AS price "
        f"FROM numbers({symbols * seconds})"
    ).replace("{seconds}", str(seconds))
    envelope = (
        "symbol, event_ts, seq, ingest_ts, is_final, source, window_size, window_step, "
        "window_start, window_end, version"
    )
    client.command(
        f"INSERT INTO ta_microbars ({envelope}, o, h, l, c, v, vwap, count) "
        f"SELECT {envelope}, price, price + 0.05, price - 0.05, price, 10, price, 3 FROM ({rows})"
    )
    client.command(
        f"INSERT INTO ta_signals ({envelope}, macd, macd_signal, macd_hist, ema12, ema26, rsi14, "
        "boll_mid, boll_upper, boll_lower, vwap_session, close) "
        f"SELECT {envelope}, 0.01, 0.009, 0.001, price, price, 50, price, price + 1, price - 1, "
        f"price, price FROM ({rows})"
    )
    client.close()
    store = TradingStore.open(settings.store.url)
    t = settings.trading
    with store.unit_of_work() as uow:
        uow.save_cursor(
            f"{t.signal_table}:{t.signal_window_size}",
            SignalCursor(t.signal_window_size, end, "~", 0),
        )
        uow.commit()
    store.close()


def _wait_for_signals(url: str, timeout: float = 120) -> None:
    """Until the live pipeline has written a signal newer than the seeded hour."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url}/api/torghut/ta/latest?symbol={LIVE_SYMBOLS[0]}").json()
            if body.get("event_ts"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the demo pipeline wrote no signal in time")


def _sample_lag(
    url: str, seconds: float, stop: threading.Event | None = None
) -> list[tuple[int, int]]:
    """(TA lag, watermark lag) in ms once a second for ``seconds`` (or until ``stop``)."""
    out: list[tuple[int, int]] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as http:
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            try:
                p = http.get(f"{url}/trading/pipeline").json()
            except httpx.HTTPError:
                continue  # the API is saturated: the next sample says more
            out.append((p["ta_lag_ms"] or -1, p["ta_watermark_lag_ms"] or -1))
            time.sleep(1)
    return out


def _settle(url: str, timeout: float = 60) -> None:
    """Until the API answers a trivial request quickly again: requests a finished wrk left
    queued in the server's thread pool must not be charged to the next endpoint."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as http:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                http.get(f"{url}/trading/pipeline")
            except httpx.HTTPError:
                continue
            if time.monotonic() - t0 < 0.2:
                return
            time.sleep(0.5)


def _first_asks(url: str, paths: list[str], accept: str) -> list[float]:
    """Each path asked once, in turn, before the load: its latency in ms.

    Why: wrk measures the steady state of viewers asking kept answers; the cost of an answer's
    first computation (100 connections would all wait for the first few) is reported here, on
    its own, instead of as the first second of the load's tail."""
    out = []
    with httpx.Client(base_url=url, timeout=60, headers={"accept-encoding": accept}) as http:
        for path in paths:
            t0 = time.perf_counter()
            http.get(path).raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _lag_text(samples: list[tuple[int, int]]) -> str:
    if not samples:
        return "no samples"
    ta = [s[0] for s in samples]
    wm = [s[1] for s in samples]
    return (f"{statistics.median(ta) / 1000:.1f}-{max(ta) / 1000:.1f} s / "
            f"{statistics.median(wm) / 1000:.1f}-{max(wm) / 1000:.1f} s")  # fmt: skip


def _wrk(
    wrk: str,
    url: str,
    paths: list[str],
    connections: int,
    duration: int,
    accept: str,
    work: Path,
) -> tuple[dict[str, float], list[tuple[int, int]]]:
    listing = work / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = work / "paths.lua"
    script.write_text(WRK_SCRIPT % {"paths": listing, "accept": accept})
    before = _shared_outcomes(url)
    stop = threading.Event()
    lag: list[tuple[int, int]] = []
    sampler = threading.Thread(
        target=lambda: lag.extend(_sample_lag(url, duration + 5, stop)), daemon=True
    )
    sampler.start()
    run = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s",
         str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stop.set()
    sampler.join()
    line = next(x for x in run.stdout.splitlines() if x.startswith("WRK "))
    result: dict[str, float] = json.loads(line[4:])
    after = _shared_outcomes(url)
    result.update({f"shared {k}": after[k] - before.get(k, 0.0) for k in after})
    return result, lag


def _shared_outcomes(url: str) -> dict[str, float]:
    """The shared answers' counters by outcome (``torghut_api_shared_answers_total``)."""
    head = 'torghut_api_shared_answers_total{result="'
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = (line[len(head) :].split('"} ') for line in text.splitlines() if line.startswith(head))
    return {result: float(value) for result, value in found}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
