"""The paper broker following a market's quotes over its data stream (``--follow-market``).

Why: on its own the broker fills against fixed quotes (``--quote``). Beside a market simulator
in another process — the latency bench, a soak — it would have no touch at all: every market
order would rest, and open orders would pile up as no live account's do (a 30-minute soak
ended with 660 resting orders and a reconciliation pass that grew with them). Alpaca's paper
engine fills against the live feed; this follower does the same with the market's own
stream, read through alpaca-py's ``StockDataStream`` — the client and protocol production
speaks — so each quote re-matches that symbol's open orders as it arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from alpaca.data.live import StockDataStream
from alpaca.data.models import Quote

from torghut.logs import get_logger
from torghut.sim.quotes import StaticQuotes, Touch

__all__ = ["MarketFollower"]

_log = get_logger("torghut.sim.broker.follow")


class MarketFollower:
    """Keeps ``quotes`` at the market's latest touch of every symbol and calls ``on_quote``
    with the symbol after each update (the broker re-matches that symbol's open orders).

    A quote without a two-sided touch (a zero or missing price) leaves the last one in place:
    Alpaca's engine does not fill against an empty side either."""

    def __init__(
        self,
        url: str,
        key_id: str,
        secret_key: str,
        quotes: StaticQuotes,
        on_quote: Callable[[str], None],
    ) -> None:
        self._quotes, self._on_quote = quotes, on_quote
        self._stream = StockDataStream(key_id, secret_key, raw_data=True, url_override=url)
        self._stream.subscribe_quotes(self._quote, "*")
        self._thread = threading.Thread(target=self._run, name="market-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stream.stop()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        _log.info("market_follow_started")
        self._stream.run()

    async def _quote(self, message: Quote | dict[Any, Any]) -> None:
        if not isinstance(message, dict):  # raw_data: never a model
            raise TypeError(f"expected a raw quote message, got {type(message).__name__}")
        bid, ask = message.get("bp"), message.get("ap")
        if not bid or not ask:
            return
        symbol = message["S"]
        self._quotes.set(
            symbol,
            Touch(
                bid, message.get("bs", 0.0), ask, message.get("as", 0.0), message["t"].to_datetime()
            ),
        )
        self._on_quote(symbol)
