"""``python -m dlq`` as an operator runs it: ``consume`` stores what the DLQ topics hold, serves
its counter on ``/metrics`` and stops cleanly on SIGTERM; ``list`` and ``replay`` work on what it
stored; an unreachable Kafka or an unfiltered replay is refused with a clear message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from dlq.store import DeadLetterQuery, DeadLetterStore
from tests.helpers import wait_until
from tests.infra.services import free_ports
from tests.ops_dlq.conftest import dead, publish, read_all
from torghut.config import KafkaSettings

REPO = Path(__file__).resolve().parents[2]


def _env(kafka: KafkaSettings, pg_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DLQ_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        KAFKA_TOPIC_INGEST_DLQ=kafka.topic_ingest_dlq,
        KAFKA_TOPIC_TA_DLQ=kafka.topic_ta_dlq,
        KAFKA_TOPIC_TRADES=kafka.topic_trades,
        DLQ_DB_URL=pg_url,
        DLQ_POLL_TIMEOUT_S="0.2",
    )
    return env


def _run(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dlq", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_consume_list_and_replay(kafka: KafkaSettings, store: DeadLetterStore, pg_url: str) -> None:
    env = _env(kafka, pg_url)
    publish(
        kafka,
        kafka.topic_ta_dlq,
        [dead("invalid_message", b'{"symbol":"AAPL"}', stage="ta_microbars")] * 2,
    )
    [port] = free_ports(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlq", "consume", "--metrics-port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: [x.count for x in store.find(DeadLetterQuery())] == [2],
            timeout=60,
            message="the consumer did not store the two copies",
            ignore=(Exception,),
        )

        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return str(r.read().decode())

        text = wait_until(scraped, timeout=30, ignore=(OSError,))
        line = (
            f'torghut_dead_letters_stored_total{{reason="invalid_message",'
            f'topic="{kafka.topic_ta_dlq}"}} 2.0'
        )
        assert line in text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]

    listed = _run(["list", "--reason", "invalid_message"], env)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["topic"], row["stage"], row["count"]) == (kafka.topic_ta_dlq, "ta_microbars", 2)

    refused = _run(["replay", "--note", "no filter"], env)
    assert refused.returncode == 2
    assert "replay needs a selection" in refused.stderr

    replayed = _run(["replay", "--id", str(row["id"]), "--note", "fixed the decoder"], env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {row['id']}: 1 message(s)" in replayed.stdout
    assert [v for _, v in read_all(kafka, kafka.topic_trades, 1)] == [b'{"symbol":"AAPL"}']
    assert store.replays_of(row["id"])[0].note == "fixed the decoder"


def test_an_unreachable_kafka_is_reported_within_the_deadline(
    kafka: KafkaSettings, pg_url: str
) -> None:
    [closed] = free_ports(1)
    env = _env(kafka, pg_url) | {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
        "DLQ_CONNECT_TIMEOUT_S": "2",
    }
    t0 = time.monotonic()
    out = _run(["consume"], env)
    assert out.returncode == 2
    assert f"cannot reach Kafka at 127.0.0.1:{closed} over PLAINTEXT within 2 s" in out.stderr
    assert time.monotonic() - t0 < 30
