"""``python -m torghut.sim.broker`` prints its URLs as one JSON line and serves alpaca-py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.models import Order
from alpaca.trading.requests import MarketOrderRequest

from tests.helpers import wait_until


def test_cli_serves_trading_client_until_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torghut.sim.broker",
            "--port",
            "0",
            "--key-id",
            "PKCLI",
            "--secret-key",
            "cli-secret",
            "--quote",
            "MSFT=400.10,400.20,50",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
        assert announced["stream_url"] == announced["base_url"].replace("http", "ws") + "/stream"
        client = TradingClient(
            "PKCLI", "cli-secret", paper=True, url_override=announced["base_url"]
        )
        order = client.submit_order(
            MarketOrderRequest(
                symbol="MSFT", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
        assert isinstance(order, Order)

        def filled() -> bool:
            return client.get_order_by_id(order.id).status == OrderStatus.FILLED

        wait_until(filled, timeout=5)
        assert client.get_open_position("MSFT").avg_entry_price == "400.2"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
