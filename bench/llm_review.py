"""How long an LLM review takes, against an honest server and against hostile ones.

Run: ``.venv/bin/python -m bench.llm_review [--deadline 0.5] [--reviews 20] [--clients 4]``

A local ``http.server`` on 127.0.0.1 plays the OpenAI-compatible provider in one of these modes:

* ``honest``: a valid approve at once (the same-run baseline: what a review costs here);
* ``drip``: the same answer, one byte every 0.2 s (each read is quick, the whole is not);
* ``silent``: never answers;
* ``huge``: declares a 20 MB body and starts sending it;
* ``endless``: a chunked body that never ends.

Each mode runs ``--reviews`` reviews through the real policy and client
(:class:`trading.core.llm.DecisionReview` over
:class:`trading.adapters.openai_reviewer.OpenAiChatReviewer`, ``LLM_TIMEOUT_S=--deadline``) from
``--clients`` threads at once. Printed per mode: the outcome kinds, p50 / p95 / max of the review's
duration (measured around ``review()``) and the largest overshoot beyond the deadline. Not a timed
test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import SecretStr

from torghut.config import LlmSettings
from torghut.logs import configure_logging
from trading.adapters.openai_reviewer import OpenAiChatReviewer
from trading.adapters.system_clock import SystemClock
from trading.core.domain import Action, Decision, OrderType
from trading.core.llm import DecisionReview

MODES = ("honest", "drip", "silent", "huge", "endless")
_ANSWER = json.dumps(
    {"choices": [{"message": {"content": '{"verdict":"approve","confidence":0.9,"reason":"ok"}'}}]}
).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deadline", type=float, default=0.5)
    parser.add_argument("--reviews", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    configure_logging("ERROR")  # every hostile review logs a warning; the table is the output

    stop = threading.Event()
    server = _server(stop)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"deadline {args.deadline * 1000:.0f} ms, {args.reviews} reviews, {args.clients} clients")
    print(f"{'mode':<8} {'outcomes':<34} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'over ms':>8}")
    try:
        for mode in MODES:
            _run(mode, f"{base}/{mode}/v1", args.deadline, args.reviews, args.clients)
    finally:
        stop.set()
        server.shutdown()


def _run(mode: str, url: str, deadline: float, reviews: int, clients: int) -> None:
    settings = LlmSettings(
        enabled=True,
        base_url=url,
        model="bench",
        api_key=SecretStr("sk-bench"),
        timeout_s=deadline,
        shadow=False,
        fallback="veto",
        breaker_failures=1_000_000,
    )
    client = OpenAiChatReviewer(settings)
    review = DecisionReview(client, settings, live=True, clock=SystemClock())
    decision = Decision(
        strategy_id="bench",
        strategy_version="1",
        symbol="AAPL",
        event_ts=datetime.now(UTC),
        action=Action.BUY,
        qty=Decimal(10),
        order_type=OrderType.MARKET,
        params={"qty": "10"},
        rationale="bench",
        reference_price=Decimal(100),
    )

    def one(_: int) -> tuple[float, str]:
        started = time.monotonic()
        outcome = review.review(decision, [])
        kind = (outcome.error or outcome.effective_verdict).split(":", 1)[0]
        return (time.monotonic() - started) * 1000, kind

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(reviews)))
    client.close()
    durations = sorted(d for d, _ in results)
    kinds = ", ".join(f"{k} x{n}" for k, n in Counter(k for _, k in results).items())
    p95 = durations[min(len(durations) - 1, round(0.95 * (len(durations) - 1)))]
    over = max(0.0, durations[-1] - deadline * 1000)
    print(
        f"{mode:<8} {kinds:<34} {statistics.median(durations):7.1f} {p95:7.1f} "
        f"{durations[-1]:7.1f} {over:8.1f}"
    )


def _server(stop: threading.Event) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            mode = self.path.split("/")[1]
            try:
                self._answer(mode)
            except (BrokenPipeError, ConnectionResetError):
                return

        def _answer(self, mode: str) -> None:
            if mode == "silent":
                stop.wait(30)
                return
            self.send_response(200)
            if mode == "endless":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"10000\r\n" + b" " * 65_536 + b"\r\n"
                while not stop.is_set():
                    self.wfile.write(chunk)
                return
            size = 20_000_000 if mode == "huge" else len(_ANSWER)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if mode == "huge":
                for _ in range(size // 65_536):
                    self.wfile.write(b" " * 65_536)
            elif mode == "drip":
                for i in range(len(_ANSWER)):
                    self.wfile.write(_ANSWER[i : i + 1])
                    if stop.wait(0.2):
                        return
            else:
                self.wfile.write(_ANSWER)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


if __name__ == "__main__":
    main()
