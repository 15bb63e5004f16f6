"""``python -m torghut.sim.broker --follow-market``: the broker fills at the market's quotes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from decimal import Decimal

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from tests.helpers import wait_until
from tests.sim.test_market_support import KEY, SECRET, running


def test_market_orders_fill_at_an_ask_the_market_sent() -> None:
    with running(symbols=["AAPL", "MSFT"], rate=400) as (market, url):
        process = subprocess.Popen(
            [sys.executable, "-m", "torghut.sim.broker", "--port", "0", "--key-id", "PKF",
             "--secret-key", "follow-secret", "--follow-market", url, "--market-key", KEY,
             "--market-secret", SECRET],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            base_url = json.loads(process.stdout.readline())["base_url"]
            client = TradingClient("PKF", "follow-secret", paper=True, url_override=base_url)
            # quotes are flowing to the broker before the order: the market has sent some
            wait_until(lambda: sum(m.type == "q" for m in market.sent()) >= 20, 10)
            order = client.submit_order(
                MarketOrderRequest(
                    symbol="MSFT", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
                )
            )

            def filled() -> bool:
                return client.get_order_by_id(order.id).status == OrderStatus.FILLED

            wait_until(filled, timeout=10)
            price = Decimal(str(client.get_order_by_id(order.id).filled_avg_price))
            asks = {
                Decimal(str(m.fields["ap"]))
                for m in market.sent()
                if m.type == "q" and m.fields["S"] == "MSFT"
            }
            assert price in asks
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
