"""The pods' exec probes (``python -m infra.k8s.probe``) against a real ingest process.

The ingest runs exactly as its Deployment runs it — ``python -m bytewax.run
dataflows.ingest:flow`` with ``METRICS_PORT`` set — against the market simulator and
the local Kafka: the readiness probe passes once the websocket is authenticated and
subscribed, and keeps failing with wrong credentials; the liveness probe passes while the
worker loop polls, and fails once the process is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.k8s.probe import changed, unmet
from tests.helpers import wait_until
from torghut.sim.market import MarketSimulator

REPO = Path(__file__).resolve().parents[2]
ADVANCING = "bytewax_inp_part_next_batch_duration_seconds_count"


def test_unmet_requires_every_sample_to_equal_the_value() -> None:
    text = 'g{state="a"} 1.0\ng{state="b"} 0.0\nready 1.0\n'
    assert unmet(text, [("ready", 1)]) == []
    assert unmet(text, [("ready", 0)]) == ["ready is 1, want 0"]
    assert unmet(text, [("g", 1)]) == ["g is 1, 0, want 1"]
    assert unmet(text, [("absent", 1)]) == ["absent is not exported (yet)"]


def test_liveness_wants_the_counter_to_move() -> None:
    assert changed(None, 3.0)  # first probe
    assert changed(3.0, 7.0)
    assert changed(7.0, 2.0)  # the container restarted: counters start again
    assert not changed(7.0, 7.0)
    assert not changed(7.0, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.k8s.probe",
            "--url",
            f"http://127.0.0.1:{port}/metrics",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextmanager
def ingest_process(
    tmp_path: Path, bootstrap: str, topic: Callable[..., str], url: str, secret: str
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_TRADES": topic("trades"),
        "KAFKA_TOPIC_QUOTES": topic("quotes"),
        "KAFKA_TOPIC_BARS": topic("bars"),
        "KAFKA_TOPIC_STATUS": topic("status"),
        "KAFKA_TOPIC_INGEST_DLQ": topic("dlq"),
        "ALPACA_DATA_WS_URL": url,
        "ALPACA_KEY_ID": "sim-key",
        "ALPACA_SECRET_KEY": secret,
        "ALPACA_SYMBOLS": "AAPL",
        "ALPACA_RECONNECT_MAX_S": "0.5",
        "ALPACA_HEARTBEAT_INTERVAL_S": "0.2",
        "TORGHUT_DATA_DIR": str(tmp_path / "data"),
        "METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflows.ingest:flow"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def market() -> Iterator[str]:
    sim = MarketSimulator(symbols=["AAPL"], rate=50)
    with sim.run_in_thread() as url:
        yield url


def test_ingest_is_ready_once_authenticated_and_alive_while_polling(
    tmp_path: Path, kafka_bootstrap: str, unique_topic: Callable[..., str], market: str
) -> None:
    with ingest_process(tmp_path, kafka_bootstrap, unique_topic, market, "sim-secret") as (
        proc,
        port,
    ):
        wait_until(
            lambda: probe(port, "require", "torghut_ingest_ready=1").returncode == 0,
            timeout=60,
            message=lambda: f"ingest never became ready; exited={proc.poll()}",
        )
        state = tmp_path / "liveness.json"
        assert probe(port, "advancing", ADVANCING, "--state", str(state)).returncode == 0
        wait_until(
            lambda: probe(port, "advancing", ADVANCING, "--state", str(state)).returncode == 0,
            timeout=30,
            message="the worker loop's poll count never moved",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        gone = probe(port, "advancing", ADVANCING, "--state", str(state))
        assert gone.returncode == 1
        assert "cannot scrape" in gone.stderr


def test_ingest_with_a_wrong_secret_is_never_ready(
    tmp_path: Path, kafka_bootstrap: str, unique_topic: Callable[..., str], market: str
) -> None:
    with ingest_process(tmp_path, kafka_bootstrap, unique_topic, market, "wrong") as (_, port):

        def auth_failed() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            return 'torghut_ingest_connection_state{state="auth_failed"} 1.0' in text

        wait_until(
            auth_failed,
            timeout=60,
            message="the source never reported auth_failed",
            ignore=(OSError,),
        )
        result = probe(port, "require", "torghut_ingest_ready=1")
        assert result.returncode == 1
        assert "torghut_ingest_ready is 0, want 1" in result.stderr
