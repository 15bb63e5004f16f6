"""The trading loop's broker calls against the paper broker simulator, through alpaca-py.

Run: ``.venv/bin/python -m bench.broker [--calls 30] [--open 0,50,500]``

Each batch of the trading loop reads the broker's open orders, account and positions
(:meth:`TradingPipeline._read_broker`) through :class:`AlpacaBroker`, one ``TradingClient``
whose ``requests`` session keeps its connection alive. Timed here per call, median and p95 of
``--calls``, with ``--open`` resting limit orders at the broker, against the same call on a
fresh connection each time (the baseline, measured in the same run: a kept-alive connection
should cost less, never more). Session 12 found every kept-alive call at 44 ms, new
connections at 1–4 ms: the simulator's socket left Nagle on, and each response's body waited
for the client's delayed ACK.

Not a timed test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from decimal import Decimal

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest

from bench.ta import _cpu_model
from torghut.sim.broker import AccountConfig, BrokerSimulator
from torghut.sim.quotes import StaticQuotes, Touch
from trading.adapters.alpaca_broker import AlpacaBroker

KEY, SECRET = "PKBENCH", "bench-secret"


def _times_ms(call: Callable[[], object], n: int) -> list[float]:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1000)
    return took


def _line(label: str, kept: list[float], fresh: list[float]) -> None:
    def p95(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=20)[-1]

    k, f = statistics.median(kept), statistics.median(fresh)
    print(
        f"{label:<34} {k:8.2f} {p95(kept):8.2f} {f:8.2f} {p95(fresh):8.2f} {k / f:7.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--open", default="0,50,500", help="resting orders, comma-separated")
    args = parser.parse_args()
    quotes = StaticQuotes({"AAPL": Touch(100.0, 500, 100.05, 500, None)})
    sim = BrokerSimulator(
        quotes, key_id=KEY, secret_key=SECRET, account=AccountConfig(cash=Decimal(10**8))
    )
    print(f"CPU: {_cpu_model()}; {args.calls} calls each; ms")
    print(f"{'call':<34} {'kept p50':>8} {'p95':>8} {'new p50':>8} {'p95':>8} {'ratio':>7}")
    with sim.run_in_thread() as url:
        kept = AlpacaBroker(TradingClient(KEY, SECRET, paper=True, url_override=url))

        def fresh(read: Callable[[AlpacaBroker], object]) -> Callable[[], object]:
            def call() -> object:
                client = TradingClient(KEY, SECRET, paper=True, url_override=url)
                try:
                    return read(AlpacaBroker(client))
                finally:
                    client._session.close()

            return call

        def compare(label: str, read: Callable[[AlpacaBroker], object]) -> None:
            _line(
                label, _times_ms(lambda: read(kept), args.calls), _times_ms(fresh(read), args.calls)
            )

        compare("account", AlpacaBroker.account)
        compare("positions", AlpacaBroker.positions)
        for target in (int(n) for n in args.open.split(",")):
            for _ in range(target - len(kept.open_orders())):
                kept.client.submit_order(
                    LimitOrderRequest(
                        symbol="AAPL",
                        qty=1,
                        side=OrderSide.BUY,
                        time_in_force=TimeInForce.GTC,
                        limit_price=50,
                    )
                )
            compare(f"open orders ({target} open)", AlpacaBroker.open_orders)


if __name__ == "__main__":
    main()
