"""The ingest dataflow end to end: simulator → dataflows.ingest → real Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY

from dataflows.ingest import build_flow
from operators.alpaca_decode import FAMILIES, Frame, FrameDecoder
from operators.dedup import identity
from operators.kafka_io import EnvelopeDecoder
from operators.market_events import INGEST_SYMBOL, IngestCounters
from tests.helpers import wait_until
from tests.ingest.conftest import SYMBOLS, IngestTopics, RunningFlow, TopicReader, make_settings
from torghut.dead_letters import DeadLetter
from torghut.events import Bar, Envelope, IngestStatus, Quote, StatusPayload, Trade
from torghut.sim.market import FaultKind, FaultRule, MarketSimulator, Message, SyntheticMarket
from torghut.sim.market.wire import encode_frame

REPO = Path(__file__).resolve().parents[2]
PAYLOADS: dict[str, Any] = {"trades": Trade, "quotes": Quote, "bars": Bar, "status": StatusPayload}


def expected_by_family(messages: Iterable[Message]) -> dict[str, list[Envelope[Any]]]:
    """What the ingest should publish for these simulator messages, in send order."""
    decoder = FrameDecoder()
    out: dict[str, list[Envelope[Any]]] = {f: [] for f in FAMILIES}
    for message in messages:
        decoded = decoder.decode(Frame(datetime.now(UTC), encode_frame([message], "msgpack")))
        assert not decoded.dead_letters, decoded.dead_letters
        for family, env in decoded.events:
            out[family].append(env)
    return out


def per_symbol(family: str, envs: Iterable[Envelope[Any]]) -> dict[str, list[Hashable]]:
    out: dict[str, list[Hashable]] = defaultdict(list)
    for env in envs:
        out[env.symbol].append(identity(family, env))  # type: ignore[arg-type]
    return dict(out)


def market_envelopes(reader: TopicReader, family: str) -> list[Envelope[Any]]:
    batch = EnvelopeDecoder(PAYLOADS[family]).decode_batch(reader.values())
    assert batch.bad == []
    return [e for e in batch.ok if e.symbol != INGEST_SYMBOL]


def heartbeats(reader: TopicReader) -> list[IngestStatus]:
    batch = EnvelopeDecoder(StatusPayload).decode_batch(reader.values())
    return [e.payload for e in batch.ok if isinstance(e.payload, IngestStatus)]


def drain(readers: Iterable[TopicReader]) -> None:
    """Poll until two consecutive polls bring nothing new (everything flushed was read)."""
    readers = list(readers)
    quiet = 0
    while quiet < 2:
        before = sum(len(r.records) for r in readers)
        after = sum(r.poll() for r in readers)
        quiet = quiet + 1 if after == before else 0


def start_ingest(
    sim_url: str,
    topics: IngestTopics,
    bootstrap: str,
    run_flow: Callable[..., RunningFlow],
    workers: int = 1,
    **alpaca: Any,
) -> tuple[RunningFlow, IngestCounters]:
    settings = make_settings(topics.kafka_settings(bootstrap), sim_url, **alpaca)
    stop = threading.Event()
    counters = IngestCounters()
    flow = build_flow(settings, stop=stop, counters=counters)
    return run_flow(flow, stop, workers), counters


@pytest.mark.parametrize("workers", [1, 2])
def test_every_message_exactly_once_in_symbol_order_despite_disconnects_and_duplicates(
    workers: int,
    kafka_bootstrap: str,
    ingest_topics: IngestTopics,
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    sim = MarketSimulator(
        SyntheticMarket(11, list(SYMBOLS), rate=5000, max_events=6000),
        pacing="fast",
        batch_size=50,
        faults=[
            FaultRule(FaultKind.DISCONNECT, every=25),
            FaultRule(FaultKind.DUPLICATE, every=4),
        ],
    )
    flow, counters = start_ingest(run_sim(sim), ingest_topics, kafka_bootstrap, run_flow, workers)
    assert sim.wait_exhausted(60), sim.stats()
    expected = expected_by_family(sim.sent())
    readers = {
        "trades": topic_reader(ingest_topics.trades),
        "quotes": topic_reader(ingest_topics.quotes),
        "bars": topic_reader(ingest_topics.bars),
        "status": topic_reader(ingest_topics.status),
    }
    wait_until(
        lambda: all(
            len(market_envelopes(readers[f], f)) >= len(expected[f])
            for f in FAMILIES
            if readers[f].poll() >= 0
        ),
        timeout=60,
        message=lambda: (
            f"published {counters.published} expected { {f: len(v) for f, v in expected.items()} }"
        ),
    )
    flow.stop()
    drain(readers.values())

    faults = [r.kind for r in sim.fault_log]
    assert faults.count(FaultKind.DISCONNECT) >= 3
    assert faults.count(FaultKind.DUPLICATE) >= 3
    assert counters.duplicates > 0
    assert sum(len(v) for v in expected.values()) == len(sim.sent()) > 4000
    for family in FAMILIES:
        got = market_envelopes(readers[family], family)
        assert per_symbol(family, got) == per_symbol(family, expected[family]), family
    for _, key, value in readers["trades"].records:
        assert msgspec.json.decode(value)["symbol"] == key
    trade_partitions = defaultdict(set)
    for partition, key, _ in readers["trades"].records:
        trade_partitions[key].add(partition)
    assert all(len(p) == 1 for p in trade_partitions.values())

    beats = heartbeats(readers["status"])
    assert any(b.state == "healthy" and b.connected for b in beats)
    assert max(b.reconnects for b in beats) >= 3
    assert max(sum(b.received.values()) for b in beats) > 0
    # how far the ingest vouches it has read the stream (the TA bounds idle closing by it):
    # only while connected, and never back in time, across the reconnects too
    vouched = [b.caught_up_at for b in beats if b.caught_up_at is not None]
    assert vouched, "no heartbeat vouched for the stream"
    assert all(b.connected for b in beats if b.caught_up_at is not None)
    assert vouched == sorted(vouched)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_malformed_input_is_dead_lettered_counted_and_the_flow_goes_on(
    codec: str,
    kafka_bootstrap: str,
    ingest_topics: IngestTopics,
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    sim = MarketSimulator(
        SyntheticMarket(5, list(SYMBOLS), rate=2000, max_events=3000),
        pacing="fast",
        batch_size=20,
        msgpack_ok=codec == "msgpack",
        faults=[
            FaultRule(FaultKind.MALFORMED, every=10, malformed="invalid"),
            FaultRule(FaultKind.MALFORMED, every=15, malformed="missing_fields"),
            FaultRule(FaultKind.MALFORMED, every=21, malformed="wrong_types"),
        ],
    )
    before = {
        r: _sample("torghut_ingest_dead_letters_total", reason=r)
        for r in ("malformed_frame", "invalid_message")
    }
    flow, counters = start_ingest(run_sim(sim), ingest_topics, kafka_bootstrap, run_flow)
    assert sim.wait_exhausted(60), sim.stats()
    expected = expected_by_family(sim.sent())
    dlq = topic_reader(ingest_topics.dlq)
    trades = topic_reader(ingest_topics.trades)
    frames = {r.frame_number for r in sim.fault_log if r.kind is FaultKind.MALFORMED}
    fired = {
        kind: sum(1 for n in frames if n % every == 0)
        for every, kind in ((10, "invalid"), (15, "missing_fields"), (21, "wrong_types"))
    }
    total_faults = sum(1 for r in sim.fault_log if r.kind is FaultKind.MALFORMED)
    wait_until(
        lambda: dlq.poll() >= total_faults and trades.poll() >= len(expected["trades"]),
        timeout=60,
        message=lambda: f"dlq {len(dlq.records)}/{total_faults}, trades {len(trades.records)}",
    )
    assert flow.alive, "the flow stopped on bad input"
    flow.stop()
    drain([dlq, trades])

    letters = [msgspec.json.decode(v, type=DeadLetter) for v in dlq.values()]
    assert len(letters) == total_faults == counters.dead_letters
    by_reason = defaultdict(list)
    for letter in letters:
        by_reason[letter.reason].append(letter)
        assert letter.stage == "alpaca_decode"
        assert letter.raw
    assert len(by_reason["malformed_frame"]) == fired["invalid"] > 0
    assert len(by_reason["invalid_message"]) == fired["missing_fields"] + fired["wrong_types"]
    assert all(d.symbol in SYMBOLS for d in by_reason["invalid_message"])
    assert _sample("torghut_ingest_dead_letters_total", reason="malformed_frame") - before[
        "malformed_frame"
    ] == len(by_reason["malformed_frame"])
    assert _sample("torghut_ingest_dead_letters_total", reason="invalid_message") - before[
        "invalid_message"
    ] == len(by_reason["invalid_message"])
    got = market_envelopes(trades, "trades")
    assert per_symbol("trades", got) == per_symbol("trades", expected["trades"])


def test_second_ingest_process_gets_406_and_does_not_disturb_the_first(
    kafka_bootstrap: str,
    ingest_topics: IngestTopics,
    unique_topic: Callable[..., str],
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    sim = MarketSimulator(symbols=list(SYMBOLS), rate=400, pacing="realtime")
    url = run_sim(sim)
    first, counters = start_ingest(url, ingest_topics, kafka_bootstrap, run_flow)
    wait_until(lambda: sim.stats()["authenticated"] == 1, timeout=20, message="first not in")
    wait_until(lambda: sum(counters.published.values()) > 50, timeout=20)

    second_status = unique_topic("status2")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_TRADES": ingest_topics.trades,
        "KAFKA_TOPIC_QUOTES": ingest_topics.quotes,
        "KAFKA_TOPIC_BARS": ingest_topics.bars,
        "KAFKA_TOPIC_STATUS": second_status,
        "KAFKA_TOPIC_INGEST_DLQ": ingest_topics.dlq,
        "ALPACA_DATA_WS_URL": url,
        "ALPACA_SYMBOLS": ",".join(SYMBOLS),
        "ALPACA_HEARTBEAT_INTERVAL_S": "0.2",
        "ALPACA_CONNECTION_LIMITED_BACKOFF_S": "0.4",
    }
    second = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflows.ingest:flow"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        status2 = topic_reader(second_status)
        limited = wait_until(
            lambda: (
                [b for b in heartbeats(status2) if b.state == "connection_limited"]
                if status2.poll() >= 0
                else None
            ),
            timeout=60,
            message="second ingest never reported connection_limited",
        )
        assert "406" in limited[0].detail
        assert not limited[0].connected
        assert sim.stats()["connection_limited"] >= 1
        published = sum(counters.published.values())
        wait_until(lambda: sum(counters.published.values()) > published + 50, timeout=20)
        assert sim.stats()["authenticated"] == 1
        assert first.alive
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 0, err.decode()[-2000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    status1 = topic_reader(ingest_topics.status)
    first.stop()
    drain([status1])
    states = [b.state for b in heartbeats(status1)]
    assert states
    assert set(states) <= {"connecting", "healthy"}, states


def test_bad_credentials_report_auth_failed_and_keep_retrying(
    kafka_bootstrap: str,
    ingest_topics: IngestTopics,
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    sim = MarketSimulator(symbols=list(SYMBOLS), rate=200, credentials={"other": "pair"})
    flow, _ = start_ingest(
        run_sim(sim), ingest_topics, kafka_bootstrap, run_flow, reconnect_max_s=0.3
    )
    status = topic_reader(ingest_topics.status)
    failed = wait_until(
        lambda: (
            [b for b in heartbeats(status) if b.state == "auth_failed"]
            if status.poll() >= 0
            else None
        ),
        timeout=30,
        message="no auth_failed heartbeat",
    )
    assert "402" in failed[0].detail
    wait_until(lambda: sim.stats()["handshakes"] >= 3, timeout=20, message="no retries")
    assert _sample("torghut_ingest_ready") == 0
    flow.stop()


def test_swapped_frames_still_give_every_message_exactly_once(
    kafka_bootstrap: str,
    ingest_topics: IngestTopics,
    run_sim: Callable[[MarketSimulator], str],
    run_flow: Callable[..., RunningFlow],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    sim = MarketSimulator(
        SyntheticMarket(13, list(SYMBOLS), rate=5000, max_events=2000),
        pacing="fast",
        batch_size=20,
        faults=[
            FaultRule(FaultKind.OUT_OF_ORDER, every=5),
            FaultRule(FaultKind.DUPLICATE, every=3),
        ],
    )
    flow, counters = start_ingest(run_sim(sim), ingest_topics, kafka_bootstrap, run_flow)
    assert sim.wait_exhausted(60), sim.stats()
    expected = expected_by_family(sim.sent())
    quotes = topic_reader(ingest_topics.quotes)
    wait_until(lambda: quotes.poll() >= len(expected["quotes"]), timeout=60)
    flow.stop()
    drain([quotes])
    assert any(r.kind is FaultKind.OUT_OF_ORDER for r in sim.fault_log)
    got = per_symbol("quotes", market_envelopes(quotes, "quotes"))
    want = per_symbol("quotes", expected["quotes"])
    assert {s: sorted(map(repr, v)) for s, v in got.items()} == {
        s: sorted(map(repr, v)) for s, v in want.items()
    }
    assert counters.duplicates > 0
