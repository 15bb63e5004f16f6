"""Run the paper broker on its own: ``python -m torghut.sim.broker --port 0``.

Prints one JSON line with the URLs to hand alpaca-py (``base_url`` for ``TradingClient``,
``stream_url`` for ``TradingStream``) and serves until SIGINT/SIGTERM. Without a market simulator
in the process, orders fill against fixed quotes given as ``--quote AAPL=187.40,187.45[,500]``,
or against a market's live quotes with ``--follow-market ws://…/v2/iex`` (its stream's
credentials in ``--market-key`` / ``--market-secret``; see :mod:`torghut.sim.broker.follow`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from decimal import Decimal
from types import FrameType

from torghut.logs import configure_logging
from torghut.sim.broker.app import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, BrokerSimulator
from torghut.sim.broker.book import AccountConfig
from torghut.sim.broker.clock import AlwaysOpen, NyseSchedule, Schedule
from torghut.sim.broker.follow import MarketFollower
from torghut.sim.quotes import StaticQuotes, Touch

DEFAULT_QUOTE_SIZE = 1_000.0


def parse_quote(text: str) -> tuple[str, Touch]:
    """``SYMBOL=BID,ASK[,SIZE]`` as a touch with SIZE shares on each side."""
    symbol, _, prices = text.partition("=")
    parts = prices.split(",")
    if not symbol or len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected SYMBOL=BID,ASK[,SIZE], got {text!r}")
    try:
        bid, ask = float(parts[0]), float(parts[1])
        size = float(parts[2]) if len(parts) == 3 else DEFAULT_QUOTE_SIZE
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad number in {text!r}") from exc
    return symbol, Touch(bid, size, ask, size, datetime.now(UTC))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torghut.sim.broker", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key-id", default=DEFAULT_KEY_ID)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument("--cash", type=Decimal, default=Decimal(100_000))
    parser.add_argument("--multiplier", type=int, choices=(1, 2, 4), default=1)
    parser.add_argument("--shorting", action="store_true", help="allow short selling")
    parser.add_argument("--schedule", choices=("always", "nyse"), default="always")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quote", type=parse_quote, action="append", default=[])
    parser.add_argument(
        "--follow-market",
        default=None,
        help="fill against this market-data stream's quotes (an Alpaca stocks-v2 URL)",
    )
    # the stream's credentials, as the ingest reads them (the market simulator's defaults)
    parser.add_argument("--market-key", default=os.environ.get("ALPACA_KEY_ID", "sim-key"))
    parser.add_argument(
        "--market-secret", default=os.environ.get("ALPACA_SECRET_KEY", "sim-secret")
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)

    schedule: Schedule = NyseSchedule() if args.schedule == "nyse" else AlwaysOpen()
    quotes = StaticQuotes(dict(args.quote))
    sim = BrokerSimulator(
        quotes,
        key_id=args.key_id,
        secret_key=args.secret_key,
        account=AccountConfig(
            cash=args.cash, multiplier=args.multiplier, shorting_enabled=args.shorting
        ),
        schedule=schedule,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with sim.run_in_thread() as base_url:
        follower = None
        if args.follow_market:
            follower = MarketFollower(
                args.follow_market, args.market_key, args.market_secret, quotes, sim.on_quote
            )
            follower.start()
        # No key id: the caller chose the credentials, and no output carries them.
        line = {"base_url": base_url, "stream_url": sim.stream_url}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        stop.wait()
        if follower is not None:
            follower.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
