"""The ingest's heartbeats bound the TA flow's idle closing (:mod:`operators.upstream`).

Unit level: :class:`UpstreamVouches` and :meth:`TaProgress.drained_through` with an upstream,
and :class:`IngestFollower` on the real Kafka. The flow level (a stalled ingest, the real TA
flow process and Kafka) is ``tests/ta/test_ingest_stall.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from confluent_kafka import Producer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from operators.market_events import INGEST_SYMBOL
from operators.ta_status import TaProgress
from operators.upstream import INGEST, UPSTREAM_DELIVERY_US, IngestFollower, UpstreamVouches
from tests.helpers import wait_until
from torghut.config import KafkaSettings
from torghut.events import Envelope, IngestStatus, TradingStatus
from torghut.ta.instants import us_to_dt

S = 1_000_000
T = 1_800_000_000 * S


def test_without_an_upstream_heartbeat_the_own_sources_decide() -> None:
    p = TaProgress()
    p.mark_source_drained("trades/0", T)
    assert p.drained_through() == T


def test_a_heartbeat_counts_once_the_own_sources_are_caught_up_past_its_delivery() -> None:
    p = TaProgress()
    p.mark_source_drained("trades/0", T)
    p.mark_upstream_caught_up(INGEST, T, T - 2 * S)  # sent at T, vouching for T - 2 s
    assert p.drained_through() == 0, "a known upstream with nothing accepted blocks idle closing"
    p.mark_source_drained("trades/0", T + UPSTREAM_DELIVERY_US - 1)
    assert p.drained_through() == 0, "its trades may still be on their way to Kafka"
    p.mark_source_drained("trades/0", T + UPSTREAM_DELIVERY_US)
    assert p.drained_through() == T - 2 * S


def test_a_stalled_upstream_holds_idle_closing_where_it_last_vouched() -> None:
    p = TaProgress()
    for k in range(5):
        p.mark_upstream_caught_up(INGEST, T + k * S, T + k * S - S)
        p.mark_source_drained("trades/0", T + k * S + UPSTREAM_DELIVERY_US)
    held = p.drained_through()
    assert held == T + 3 * S
    p.mark_source_drained("trades/0", T + 60 * S)  # the TA's topics quiet for a minute
    assert p.drained_through() == held
    # what operators see: the gauge stays where the ingest last vouched
    assert REGISTRY.get_sample_value("torghut_ta_caught_up_seconds") == held / 1e6


def test_the_own_sources_still_bound_a_fresher_upstream() -> None:
    p = TaProgress()
    p.mark_upstream_caught_up(INGEST, T, T)
    p.mark_source_drained("trades/0", T + 2 * S)
    p.mark_source_drained("quotes/0", T + UPSTREAM_DELIVERY_US - S // 2)  # behind
    assert p.drained_through() == 0  # not yet: the slowest own source is before delivery
    p.mark_source_drained("quotes/0", T + 3 * S)
    assert p.drained_through() == T


@given(
    beats=st.lists(
        st.tuples(st.integers(0, 100 * S), st.integers(-10 * S, 10 * S)), min_size=1, max_size=40
    ),
    own=st.lists(st.integers(0, 120 * S), min_size=1, max_size=40),
)
def test_vouches_never_exceed_a_delivered_heartbeat_and_never_go_back(
    beats: list[tuple[int, int]], own: list[int]
) -> None:
    """Oracle: the heartbeats themselves. Whatever the order of heartbeats and own progress,
    the upstream time is the newest ``caught_up`` among heartbeats sent at least the delivery
    time before the own sources' time (the largest seen so far), and it never decreases."""
    v = UpstreamVouches()
    sent = sorted(beats)  # the ingest's heartbeats, in the order it sent them
    for s_us, lag in sent:
        v.add(INGEST, T + s_us, T + s_us + lag)
    best = 0
    seen_own = 0
    for o in own:
        seen_own = max(seen_own, T + o)
        got = v.through(seen_own)
        delivered = [T + s + lag for s, lag in sent if T + s + UPSTREAM_DELIVERY_US <= seen_own]
        expected = max([best, *delivered])
        assert got == expected
        best = got


def _status(payload: IngestStatus | TradingStatus, at: datetime, symbol: str) -> bytes:
    return msgspec.json.encode(Envelope(at, at, symbol, 1, payload))


def test_the_follower_reads_the_newest_ingest_heartbeats_and_skips_everything_else(
    kafka_bootstrap: str, unique_topic: Any
) -> None:
    """Each TA process follows the status topic on its own (a Bytewax partition would reach one
    worker of one process): from near the end of each partition, heartbeats with
    ``caught_up_at`` only; halts, heartbeats of an older ingest, bad JSON and tombstones are
    skipped (counted), and a heartbeat produced after it started is read too."""
    topic = unique_topic("status", partitions=2)
    at = us_to_dt(T)
    beat = IngestStatus(state="healthy", last_message_at=at, connected=True, caught_up_at=at)
    older = IngestStatus(state="healthy", last_message_at=at, connected=True)  # no caught_up_at
    halt = TradingStatus("H", "Trading Halt", "T1", "News Pending")  # a symbol's halt notice
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in (
        _status(older, at, INGEST_SYMBOL),
        _status(halt, at, "AAPL"),
        b"{not json",
        None,
        _status(beat, us_to_dt(T - S), INGEST_SYMBOL),  # sent at T - 1 s, vouching for T
    ):
        producer.produce(topic, value, partition=0)
    assert producer.flush(10) == 0
    ignored = REGISTRY.get_sample_value("torghut_ta_status_messages_ignored_total") or 0.0
    progress = TaProgress()
    progress.mark_source_drained("trades/0", T + 10 * S)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_status=topic)
    follower = IngestFollower(kafka, progress)
    follower.start()
    try:
        wait_until(lambda: progress.drained_through() == T, timeout=30, interval=0.05)
        after = us_to_dt(T + 2 * S)  # a newer heartbeat, on the other partition
        newer = IngestStatus("healthy", after, True, caught_up_at=after)
        producer.produce(topic, _status(newer, after, INGEST_SYMBOL), partition=1)
        assert producer.flush(10) == 0
        wait_until(lambda: progress.drained_through() == T + 2 * S, timeout=30, interval=0.05)
    finally:
        follower.stop()
    now_ignored = REGISTRY.get_sample_value("torghut_ta_status_messages_ignored_total")
    assert now_ignored == ignored + 2  # the bad JSON and the tombstone
