"""Replay against the real Kafka and Postgres: selected records go back to the topic they came
from (an ingest record through today's Alpaca decoder, a TA record unchanged), only delivered
ones are recorded as replayed; records that cannot be replayed are refused with the reason and
publish nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import msgspec
import pytest

from dlq.replay import NotReplayable, plan, replay
from dlq.store import DeadLetterQuery, DeadLetterStore, StoredLetter
from tests.ops_dlq.conftest import T0, incoming, read_all
from torghut.config import KafkaSettings
from torghut.events import Envelope, Trade

NOW = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
TRADE_TS = datetime(2025, 12, 1, 14, 30, tzinfo=UTC)
TRADE = msgpack.packb(
    {
        "T": "t",
        "S": "AAPL",
        "i": 7,
        "x": "V",
        "p": 187.4,
        "s": 5,
        "t": msgpack.Timestamp(int(TRADE_TS.timestamp()), 0),
    }
)
"""A valid Alpaca trade message, as if an older decoder had rejected it."""
STILL_BAD = msgpack.packb({"T": "t", "S": "AAPL", "i": "not-an-id"})
QUOTE = msgspec.json.encode({"symbol": "MSFT", "payload": {"bid_price": "x", "ask_price": 1}})
TA_TRADE = b'{"symbol":"NVDA","payload":{"price":"NaN?"}}'


def test_records_go_back_to_their_topics_and_each_replay_is_recorded(
    kafka: KafkaSettings, store: DeadLetterStore
) -> None:
    ingest, ta = kafka.topic_ingest_dlq, kafka.topic_ta_dlq
    store.record(
        [
            incoming(ingest, 0, stage="alpaca_decode", reason="invalid_message", raw=TRADE),
            incoming(ta, 0, stage="ta_microbars", reason="invalid_message", raw=TA_TRADE),
            incoming(ta, 1, stage="ta_indicators", reason="invalid_message", raw=QUOTE),
        ],
        {(ingest, 0): 1, (ta, 0): 2},
    )
    letters = store.find(DeadLetterQuery(reason="invalid_message"))
    report = replay(store, letters, kafka, note="decoder fixed in 1a2b3c", now=lambda: NOW)

    assert report.ok, report
    assert sorted(report.replayed.values()) == [1, 1, 1]
    trades = read_all(kafka, kafka.topic_trades, 2)
    assert len(trades) == 2
    by_key = dict(trades)
    env = msgspec.json.decode(by_key[b"AAPL"], type=Envelope[Trade])
    assert (env.symbol, env.payload.price, env.payload.size, env.event_ts) == (
        "AAPL",
        187.4,
        5,
        TRADE_TS,
    )
    assert TA_TRADE in by_key.values()  # unchanged, byte for byte
    assert [v for _, v in read_all(kafka, kafka.topic_quotes, 1)] == [QUOTE]
    assert read_all(kafka, kafka.topic_bars, 0) == []

    for x in store.find(DeadLetterQuery(limit=10)):
        assert x.replays == 1
        assert x.last_replayed_at == NOW
        [r] = store.replays_of(x.id)
        assert r.note == "decoder fixed in 1a2b3c"
        assert r.messages == 1
    targets = {x.stage: store.replays_of(x.id)[0].target_topic for x in letters}
    assert targets == {
        "alpaca_decode": kafka.topic_trades,
        "ta_microbars": kafka.topic_trades,
        "ta_indicators": kafka.topic_quotes,
    }


def test_records_that_cannot_be_replayed_are_refused_and_publish_nothing(
    kafka: KafkaSettings, store: DeadLetterStore
) -> None:
    ingest, ta = kafka.topic_ingest_dlq, kafka.topic_ta_dlq
    store.record(
        [
            incoming(ingest, 0, stage="alpaca_decode", reason="invalid_message", raw=STILL_BAD),
            incoming(ta, 0, stage="ta_microbars", reason="late_trades", raw=b'{"trades":3}'),
            incoming(ta, 1, stage="ta_indicators", reason="invalid_message", raw=b"\x00junk"),
        ],
        {(ingest, 0): 1, (ta, 0): 2},
    )
    letters = store.find(DeadLetterQuery())
    report = replay(store, letters, kafka, note="try", now=lambda: NOW)

    assert not report.ok
    assert report.replayed == {}
    reasons = {x.stage: report.refused[x.id] for x in letters}
    assert reasons["alpaca_decode"].startswith("today's decoder still rejects it: invalid_message")
    assert "describes data, not an input message" in reasons["ta_microbars"]
    assert "name it with --to" in reasons["ta_indicators"]
    assert all(x.replays == 0 for x in store.find(DeadLetterQuery()))
    assert read_all(kafka, kafka.topic_trades, 0) == []


def test_an_explicit_target_gets_the_raw_bytes_unchanged(
    kafka: KafkaSettings, store: DeadLetterStore
) -> None:
    ta = kafka.topic_ta_dlq
    store.record(
        [incoming(ta, 0, stage="ta_indicators", reason="invalid_message", raw=b"\x00junk")],
        {(ta, 0): 1},
    )
    [letter] = store.find(DeadLetterQuery(ids=(1,)))  # the first id of a fresh database
    dry = replay(
        store, [letter], kafka, note="n", now=lambda: NOW, to=kafka.topic_bars, dry_run=True
    )
    assert dry.replayed == {letter.id: 1}
    assert store.replays_of(letter.id) == []  # a dry run records nothing

    report = replay(store, [letter], kafka, note="by hand", now=lambda: NOW, to=kafka.topic_bars)
    assert report.replayed == {letter.id: 1}
    assert [v for _, v in read_all(kafka, kafka.topic_bars, 1)] == [b"\x00junk"]
    assert store.replays_of(letter.id)[0].target_topic == kafka.topic_bars


def test_a_record_of_an_unknown_topic_needs_a_target(kafka: KafkaSettings) -> None:
    letter = StoredLetter(
        1, "elsewhere", "s", "r", "e", None, "alpaca", b"x", T0, T0, 1, 0, 0, 0, None
    )
    with pytest.raises(NotReplayable, match="no origin known for records of elsewhere"):
        plan(letter, kafka)
    assert plan(letter, kafka, to="t")[0].value == b"x"
