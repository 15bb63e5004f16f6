"""``python -m torghut.sim.market``: run the market-data simulator until SIGTERM/SIGINT.

Prints one JSON line on stdout once listening — ``{"url": "ws://host:port/v2/iex", ...}`` — so a
parent process (a test, a demo script) can read the bound port when ``--port 0`` was given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime

from torghut.logs import configure_logging
from torghut.sim.market.faults import FaultKind, FaultRule
from torghut.sim.market.replay import SessionReplay, write_session
from torghut.sim.market.server import FEEDS, MarketSimulator, MessageSource
from torghut.sim.market.synthetic import SyntheticMarket


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    return asyncio.run(_run(args))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m torghut.sim.market", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--symbols", default="AAPL,MSFT", help="comma-separated symbols")
    p.add_argument("--rate", type=float, default=1000.0, help="trade+quote messages per second")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", default=None, help="virtual start (RFC 3339); default now")
    p.add_argument("--max-events", type=int, default=None, help="stop the market after N events")
    p.add_argument("--replay", default=None, help="replay this session file instead")
    p.add_argument("--speed", type=float, default=1.0, help="virtual seconds per wall second")
    p.add_argument("--pacing", choices=("realtime", "fast"), default="realtime")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--clock-starts-on-subscribe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="realtime pacing: start the clock at the first subscription (default: only with "
        "--replay; a synthetic market keeps its timestamps on the wall clock)",
    )
    p.add_argument("--key", default="sim-key")
    p.add_argument("--secret", default="sim-secret")
    p.add_argument(
        "--msgpack-ok",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="honour Content-Type: application/msgpack (alpaca-py needs it)",
    )
    p.add_argument("--auth-timeout", type=float, default=10.0)
    p.add_argument("--connection-limit", type=int, default=1)
    p.add_argument("--dead-grace", type=float, default=90.0, help="slot hold for vanished clients")
    p.add_argument("--max-pending-frames", type=int, default=1000)
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[:EVERY[:SECONDS]]",
        help=f"scheduled fault, kinds: {', '.join(k.value for k in FaultKind)} (repeatable)",
    )
    p.add_argument(
        "--history-limit",
        type=int,
        default=1_000_000,
        help="messages kept in memory for --record and inspection (oldest dropped)",
    )
    p.add_argument("--record", default=None, help="on exit, write emitted messages to FILE")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p


def _fault(spec: str) -> FaultRule:
    kind, _, rest = spec.partition(":")
    every_text, _, seconds_text = rest.partition(":")
    return FaultRule(
        FaultKind(kind),
        every=int(every_text) if every_text else None,
        seconds=float(seconds_text) if seconds_text else 1.0,
    )


async def _run(args: argparse.Namespace) -> int:
    source: MessageSource
    if args.replay:
        source = SessionReplay(args.replay)
    else:
        # Not rounded to the second: realtime pacing keeps event time = wall clock only if the
        # virtual start is the instant the pump starts (rounding put events up to 1 s behind).
        start = args.start or datetime.now(UTC)
        symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
        source = SyntheticMarket(
            args.seed, symbols, rate=args.rate, start=start, max_events=args.max_events
        )
    sim = MarketSimulator(
        source,
        host=args.host,
        port=args.port,
        credentials={args.key: args.secret},
        pacing=args.pacing,
        speed=args.speed,
        batch_size=args.batch_size,
        clock_starts_on_subscribe=(
            bool(args.replay)
            if args.clock_starts_on_subscribe is None
            else args.clock_starts_on_subscribe
        ),
        auth_timeout_s=args.auth_timeout,
        connection_limit=args.connection_limit,
        dead_connection_grace_s=args.dead_grace,
        max_pending_frames=args.max_pending_frames,
        msgpack_ok=args.msgpack_ok,
        faults=[_fault(spec) for spec in args.fault],
        history_limit=args.history_limit,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    line = {
        "url": sim.url("iex"),
        "base_url": sim.base_url,
        "feeds": {feed: sim.url(feed) for feed in FEEDS},
        "control_url": sim.control_url,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await sim.stop()
    if args.record:
        write_session(args.record, sim.emitted())
    return 0


if __name__ == "__main__":
    sys.exit(main())
