"""A stalled ingest is not a quiet market: the live TA flow corrects no bar across the stall.

``python -m bytewax.run dataflows.ta:flow`` (live, 1 s idle close) against the real Kafka; this
test plays the ingest: live trades of every symbol every 50 ms, and on the status topic the
ingest's heartbeats with ``caught_up_at`` (:class:`torghut.events.IngestStatus`). Then the
ingest stalls — no trades, no heartbeats, while the trades of the stall wait (as they would in
its socket) — until the TA flow has run 3 s past the stall's start, and delivers them when it
runs again. The TA flow's own sources are
caught up all the while, so without the ingest's word (:mod:`operators.upstream`) it took the
silence for a quiet market and closed every open bar after 1 s; the waiting trades then
corrected them (checked by running this test with the heartbeats not read: six of six
symbols' bars corrected). With it, the bars wait and are final once, complete.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, Producer, TopicPartition

from operators.market_events import INGEST_SYMBOL
from tests.helpers import wait_until
from tests.ta.conftest import SYMBOLS, flow_env, start_flow
from torghut.events import Envelope, IngestStatus, Trade

PAST_IDLE_S = 3.0
"""How far past the stall's start the TA flow must have run before the ingest resumes: the
1 s idle close plus its sources' margins, with room (the old flow closed at ~1.4 s)."""
FLOW_TIMEOUT = 120


class _Ingest:
    """The ingest's output: live trades and heartbeats, a stall, then the waiting trades."""

    def __init__(self, bootstrap: str, trades: str, status: str) -> None:
        self._p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self._trades, self._status = trades, status
        self._seq = 0
        self._waiting: list[Envelope[Trade]] = []
        self.stalled = threading.Event()
        self.done = threading.Event()
        self.stall_started: datetime | None = None
        self.stall_ended: datetime | None = None

    def run(self, until: threading.Event) -> None:
        next_beat = 0.0
        while not until.is_set():
            now = datetime.now(UTC)
            for sym in SYMBOLS:
                self._seq += 1
                env = Envelope(now, now, sym, self._seq, Trade(self._seq, "V", 10.0, 5.0))
                if self.stalled.is_set():
                    self._waiting.append(env)  # received during the stall, not yet produced
                else:
                    self._p.produce(self._trades, msgspec.json.encode(env), sym)
            if not self.stalled.is_set() and time.monotonic() >= next_beat:
                vouched = now - timedelta(milliseconds=100)
                beat = IngestStatus("healthy", now, True, caught_up_at=vouched)
                self._seq += 1
                msg = Envelope(now, now, INGEST_SYMBOL, self._seq, beat)
                self._p.produce(self._status, msgspec.json.encode(msg), INGEST_SYMBOL)
                next_beat = time.monotonic() + 0.25
            self._p.poll(0)
            until.wait(0.05)  # the feed's pace (50 ms between trades), not a synchronisation
        self._p.flush(30)
        self.done.set()

    def stall(self) -> None:
        self.stall_started = datetime.now(UTC)
        self.stalled.set()

    def resume(self) -> None:
        """Runs again: what waited first (in arrival order), then live again."""
        self.stall_ended = datetime.now(UTC)
        for env in self._waiting:
            self._p.produce(self._trades, msgspec.json.encode(env), env.symbol)
        self._waiting.clear()
        self.stalled.clear()


def _read_to_end(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        got: list[dict[str, Any]] = []
        at = dict.fromkeys(ends, 0)

        def read() -> bool:
            for m in c.consume(1000, 0.2):
                if m.error() is None and m.value() is not None:
                    got.append(json.loads(m.value()))
                    at[m.partition()] = m.offset() + 1
            return all(at[p] >= end for p, end in ends.items())

        wait_until(read, timeout=30, interval=0.01, message="ta.bars not read to its end")
        return got
    finally:
        c.close()


def test_a_stalled_ingest_is_not_a_quiet_market(
    kafka_bootstrap: str, unique_topic: Any, tmp_path: Path
) -> None:
    topics = {n: unique_topic(n, partitions=2) for n in ("trades", "quotes", "bars")}
    topics["status"] = unique_topic("status", partitions=1)
    for n in ("bars", "signals", "status", "dlq"):
        topics[f"ta_{n}"] = unique_topic(f"out-{n}", partitions=1)
    env = flow_env(bootstrap=kafka_bootstrap, topics=topics, work=tmp_path, exit_at_end=False)
    env.update(TA_IDLE_CLOSE_MS="1000", TA_ALLOWED_LATENESS_MS="300")
    ingest = _Ingest(kafka_bootstrap, topics["trades"], topics["status"])
    stop = threading.Event()
    feeder = threading.Thread(target=ingest.run, args=(stop,), daemon=True)
    flow = start_flow(env, tmp_path / "flow.log")
    feeder.start()
    try:
        wait_until(
            lambda: len(_read_to_end(kafka_bootstrap, topics["ta_bars"])) >= 4 * len(SYMBOLS),
            timeout=FLOW_TIMEOUT,
            interval=0.5,
            message=lambda: f"the flow closed no bars:\n{flow.tail()}",
        )
        ingest.stall()
        assert ingest.stall_started is not None
        past_idle = ingest.stall_started + timedelta(seconds=PAST_IDLE_S)
        # the stall lasts until the TA flow has run past its idle-close time (its own status
        # heartbeat, every 0.5 s, says so): it had every chance to close bars early
        wait_until(
            lambda: any(
                datetime.fromisoformat(m["ingest_ts"]) >= past_idle
                for m in _read_to_end(kafka_bootstrap, topics["ta_status"])
            ),
            timeout=FLOW_TIMEOUT,
            interval=0.2,
            message=lambda: f"the TA flow did not run through the stall:\n{flow.tail()}",
        )
        ingest.resume()
        resumed = datetime.now(UTC)
        wait_until(
            lambda: any(
                b.get("is_final", True) and datetime.fromisoformat(b["event_ts"]) > resumed
                for b in _read_to_end(kafka_bootstrap, topics["ta_bars"])
            ),
            timeout=FLOW_TIMEOUT,
            interval=0.5,
            message="no final bar after the stall",
        )
        stop.set()
        assert ingest.done.wait(30)
        flow.proc.send_signal(signal.SIGINT)
        assert flow.wait(FLOW_TIMEOUT) == 0, flow.tail()
    finally:
        stop.set()
        flow.kill()
    bars = _read_to_end(kafka_bootstrap, topics["ta_bars"])
    final = [b for b in bars if b.get("is_final", True)]
    corrected = [
        (b["symbol"], b["event_ts"], b["version"]) for b in final if b.get("version", 1) > 1
    ]
    assert corrected == [], f"bars corrected across the stall: {corrected[:10]}"
    assert ingest.stall_started is not None
    assert ingest.stall_ended is not None
    stall_end = ingest.stall_ended
    during = {
        b["symbol"]
        for b in final
        if ingest.stall_started < datetime.fromisoformat(b["event_ts"]) <= stall_end
    }
    assert during == set(SYMBOLS), "the trades that waited out the stall made their bars"
