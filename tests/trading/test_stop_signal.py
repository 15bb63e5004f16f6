"""SIGINT to a running ``python -m bytewax.run dataflows.trading:flow``: the process ends within
5 s and sends nothing to the broker after the signal.

The flow trades a long backlog of crossing signals against the paper broker in this process;
each submit is answered 0.2 s late (an in-flight call at the moment of the signal). The signal
is sent from the broker itself right after it has accepted an order, so the flow is mid-submit;
the broker's order log (accept times) is the evidence.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.helpers import wait_until
from tests.trading.conftest import LlmServer, Reply
from tests.trading.flow_fixtures import paper_broker
from tests.trading.test_crash import _SEED, REPO, _env
from torghut.sim.broker import BrokerSimulator

__all__ = ["paper_broker"]

ROWS_PER_SYMBOL = 200
SIGNAL_AFTER_ACCEPTS = 4


def _seed_signals(tmp_path: Path) -> Path:
    """A chdb store holding ``ROWS_PER_SYMBOL`` crossing signals per symbol, ending 10 min ago."""
    chdb = tmp_path / "chdb"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    subprocess.run(
        [sys.executable, "-c", _SEED, str(chdb), start.isoformat(), str(ROWS_PER_SYMBOL)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        check=True,
    )
    return chdb


def test_sigint_ends_the_flow_within_5s_and_nothing_is_sent_after_it(
    tmp_path: Path, pg_url: str, paper_broker: BrokerSimulator
) -> None:
    chdb = _seed_signals(tmp_path)
    env = _env(tmp_path, chdb, pg_url, paper_broker.base_url)
    env.update(TRADING_EXIT_AT_END="false", RISK_MAX_PIPELINE_LAG_S="3600")
    paper_broker.faults.delay_next_submits(0.2, count=10 * ROWS_PER_SYMBOL)
    log_path = tmp_path / "trading.log"
    signalled: dict[str, float | datetime] = {}
    accepted = {"n": 0}
    sent = threading.Event()

    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.trading:flow"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def on_accept(_: object) -> None:
            accepted["n"] += 1
            if accepted["n"] == SIGNAL_AFTER_ACCEPTS and not sent.is_set():
                signalled["at"] = datetime.now(UTC)
                signalled["mono"] = time.monotonic()
                os.kill(proc.pid, signal.SIGINT)
                sent.set()

        paper_broker.faults.on_accept(on_accept)
        try:
            wait_until(
                sent.is_set,
                timeout=90,
                message=lambda: f"only {accepted['n']} orders:\n{log_path.read_text()[-2000:]}",
            )
            code = proc.wait(timeout=30)
            ended = time.monotonic()
        finally:
            paper_broker.faults.on_accept(None)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    took = ended - float(signalled["mono"])  # type: ignore[arg-type]
    output = log_path.read_text()
    assert took < 5.0, f"exited {took:.2f}s after SIGINT:\n{output[-2000:]}"
    assert code != -signal.SIGKILL
    assert "trading_stopping" in output
    at = signalled["at"]
    assert isinstance(at, datetime)
    orders = paper_broker.orders()
    assert len(orders) == SIGNAL_AFTER_ACCEPTS, [
        (o.client_order_id, o.submitted_at) for o in orders
    ]
    late = [o for o in orders if o.submitted_at > at]
    assert late == [], f"orders accepted after the signal at {at.isoformat()}: {late}"


def test_sigint_with_a_review_in_flight_ends_within_5s_and_sends_nothing(
    tmp_path: Path, pg_url: str, paper_broker: BrokerSimulator, llm_server: LlmServer
) -> None:
    """The model drips a valid "approve" one byte every half second (its deadline is a minute
    away): reviews are in flight on the review lanes when SIGINT arrives. The process ends
    within 5 s without waiting for them, and no order reaches the broker — the approvals that
    were still arriving are never acted on."""
    chdb = _seed_signals(tmp_path)
    verdict = {"verdict": "approve", "confidence": 0.9, "reason": "fine"}
    completion = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(verdict)}}],
    }
    for _ in range(40):
        llm_server.script(Reply(200, json.dumps(completion).encode(), drip_s=0.5))
    env = _env(tmp_path, chdb, pg_url, paper_broker.base_url)
    env.update(
        TRADING_EXIT_AT_END="false",
        RISK_MAX_PIPELINE_LAG_S="3600",
        LLM_ENABLED="true",
        LLM_BASE_URL=llm_server.url,
        LLM_MODEL="m",
        LLM_SHADOW="false",
        LLM_TIMEOUT_S="60",
    )
    log_path = tmp_path / "trading.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.trading:flow"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: len(llm_server.requests) >= 2,
                timeout=90,
                message=lambda: f"no review started:\n{log_path.read_text()[-2000:]}",
            )
            at = datetime.now(UTC)
            signalled = time.monotonic()
            os.kill(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=30)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    output = log_path.read_text()
    assert took < 5.0, f"exited {took:.2f}s after SIGINT:\n{output[-2000:]}"
    assert code != -signal.SIGKILL
    assert "trading_stopping" in output
    late = [o for o in paper_broker.orders() if o.submitted_at > at]
    assert late == [], f"orders accepted after the signal at {at.isoformat()}: {late}"
    assert paper_broker.orders() == [], "every order waited for a review that never finished"
