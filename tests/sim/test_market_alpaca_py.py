"""alpaca-py's own StockDataStream against the simulator: it must see our messages unchanged."""

from __future__ import annotations

import threading
from typing import Any

import msgpack
from alpaca.data.live import StockDataStream
from alpaca.data.models import Quote, Trade

from tests.helpers import wait_until
from tests.sim.test_market_support import KEY, SECRET, running


def _run(stream: StockDataStream) -> threading.Thread:
    thread = threading.Thread(target=stream.run, name="alpaca-py-stream", daemon=True)
    thread.start()
    return thread


def _stop(stream: StockDataStream, thread: threading.Thread) -> None:
    stream.stop()
    thread.join(15)
    assert not thread.is_alive(), "alpaca-py stream did not stop"


def test_raw_messages_arrive_unchanged_over_msgpack() -> None:
    got: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> None:
        got.append(message)

    with running(symbols=["AAPL", "MSFT", "NVDA"], rate=3000) as (sim, url):
        stream = StockDataStream(KEY, SECRET, raw_data=True, url_override=url)
        stream.subscribe_trades(handler, "AAPL")
        stream.subscribe_quotes(handler, "MSFT")
        thread = _run(stream)
        try:
            wait_until(lambda: len(got) >= 300, 20, message=lambda: f"got {len(got)}")
        finally:
            _stop(stream, thread)
        received = list(got)
        assert all(isinstance(m["t"], msgpack.Timestamp) for m in received)
        assert {(m["T"], m["S"]) for m in received} == {("t", "AAPL"), ("q", "MSFT")}
        wait_until(lambda: len(sim.sent()) >= len(received), 5)
        sent = [m.fields for m in sim.sent()]
        as_sent = [{**m, "t": m["t"].to_unix_nano()} for m in received]
        assert as_sent == sent[: len(as_sent)]


def test_models_parse_and_match_the_simulator() -> None:
    trades: list[Trade] = []
    quotes: list[Quote] = []

    async def on_trade(trade: Trade) -> None:
        trades.append(trade)

    async def on_quote(quote: Quote) -> None:
        quotes.append(quote)

    with running(symbols=["AAPL", "MSFT"], rate=3000) as (sim, url):
        stream = StockDataStream(KEY, SECRET, url_override=url)
        stream.subscribe_trades(on_trade, "*")
        stream.subscribe_quotes(on_quote, "AAPL")
        thread = _run(stream)
        try:
            wait_until(lambda: len(trades) >= 100 and len(quotes) >= 100, 20)
        finally:
            _stop(stream, thread)
        wait_until(lambda: len(sim.sent()) >= len(trades) + len(quotes), 5)
        sent_trades = [m.fields for m in sim.sent() if m.type == "t"]
        sent_quotes = [m.fields for m in sim.sent() if m.type == "q"]
        for model, fields in zip(trades, sent_trades, strict=False):
            assert (model.symbol, model.id, model.price, model.size, model.exchange) == (
                fields["S"],
                fields["i"],
                fields["p"],
                fields["s"],
                fields["x"],
            )
            assert int(model.timestamp.timestamp() * 1_000_000) == fields["t"] // 1000
        for model, fields in zip(quotes, sent_quotes, strict=False):
            assert (model.bid_price, model.bid_size, model.ask_price, model.ask_size) == (
                fields["bp"],
                fields["bs"],
                fields["ap"],
                fields["as"],
            )
        assert len(trades) <= len(sent_trades)
        assert {t.symbol for t in trades} == {"AAPL", "MSFT"}
