"""The reusable ingest pipeline: Alpaca source → decode → dedup, plus dead letters and heartbeats.

Why a composite operator: the Kafka ingest flow (``dataflows.ingest``) and the all-in-one
embedded flow (no Kafka) need the same steps; they differ only in where the streams go.
:func:`market_events` builds the steps and returns the streams; :func:`by_family` splits the
events per topic family. Both are sink-agnostic.

Counting: :class:`IngestCounters` holds the totals the heartbeats report. Steps on other workers
of the same process update it (ints under the GIL); in a multi-process cluster each process
reports its own part — the ingest runs as one process anyway (one Alpaca connection).

Bad input: every dead letter increments ``torghut_ingest_dead_letters_total{reason}`` and a
bounded sample is logged (:class:`LogSample`); the records themselves go on the
``dead_letters`` stream with their raw bytes, and the flow carries on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from prometheus_client import Counter

from operators.alpaca_decode import FAMILIES, Family, Frame, FrameDecoder, MarketEvent
from operators.alpaca_ws import SourceHeartbeat, SourceItem
from operators.dedup import dedup
from operators.joints import split_dead_letters
from operators.kafka_io import encode_envelope
from torghut.dead_letters import DeadLetter
from torghut.events import Envelope, IngestStatus
from torghut.logs import get_logger

__all__ = [
    "INGEST_SYMBOL",
    "FamilyStreams",
    "IngestCounters",
    "LogSample",
    "MarketEventStreams",
    "as_wire",
    "by_family",
    "heartbeat_envelope",
    "market_events",
]

INGEST_SYMBOL = "__ingest__"
"""Symbol (and Kafka key) of the ingest heartbeats on ``torghut.status.v1``."""

log = get_logger("ingest")

MESSAGES = Counter(
    "torghut_ingest_messages_total", "Market messages decoded, by topic family.", ["family"]
)
DEAD_LETTERS = Counter(
    "torghut_ingest_dead_letters_total", "Frames or messages dead-lettered, by reason.", ["reason"]
)
IGNORED = Counter(
    "torghut_ingest_ignored_total", "Messages of types Torghut does not publish (corrections...)."
)


@dataclass
class IngestCounters:
    """Totals since start, reported by heartbeats (``IngestStatus``)."""

    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 0))
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 0))
    duplicates: int = 0
    dead_letters: int = 0
    ignored: int = 0

    def count_duplicates(self, _family: Family, n: int) -> None:
        self.duplicates += n


class LogSample:
    """Lets through at most ``per_minute`` log lines a minute; counts what it suppressed."""

    def __init__(self, per_minute: int = 10) -> None:
        self._per_minute = per_minute
        self._window_start = time.monotonic()
        self._logged = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window_start >= 60:
            self._window_start, self._logged = now, 0
        if self._logged < self._per_minute:
            self._logged += 1
            return True
        self.suppressed += 1
        return False


@dataclass(frozen=True)
class MarketEventStreams:
    """Outputs of :func:`market_events`."""

    events: Stream[MarketEvent]
    """Deduplicated market events tagged with their family, per-symbol order kept."""
    dead_letters: Stream[DeadLetter]
    """Frames/messages that could not be decoded, with their raw bytes."""
    heartbeats: Stream[Envelope[IngestStatus]]
    """``IngestStatus`` every ``heartbeat_interval_s`` (symbol :data:`INGEST_SYMBOL`)."""


@dataclass(frozen=True)
class FamilyStreams:
    """Events split per topic family (``torghut.<family>.v1``)."""

    trades: Stream[Envelope[Any]]
    quotes: Stream[Envelope[Any]]
    bars: Stream[Envelope[Any]]
    status: Stream[Envelope[Any]]


@operator
def market_events(
    step_id: str,
    items: Stream[SourceItem],
    dedup_window_s: float,
    dedup_max_keys: int,
    counters: IngestCounters,
) -> MarketEventStreams:
    """Decode Alpaca frames into envelopes, drop duplicates; report heartbeats.

    ``items`` are normally read from an :class:`operators.alpaca_ws.AlpacaWsSource`; any
    single-partition source of frames and heartbeats works (a recorded-frames replay, a test
    source).

    The decode step runs on the source's worker (the source has one partition), which keeps
    ``seq`` monotonic; dedup is keyed per family, so per-symbol order survives.
    """
    split = op.branch("frames_or_heartbeats", items, _is_frame)
    frames: Stream[Frame] = split.trues
    beats: Stream[SourceHeartbeat] = split.falses  # type: ignore[assignment]
    decoded = op.flat_map_batch("decode", frames, _Decode(counters))
    parts = split_dead_letters("events_or_dead_letters", decoded)
    events: Stream[MarketEvent] = parts.items
    dead = parts.dead_letters
    unique = dedup("dedup", events, dedup_window_s, dedup_max_keys, counters.count_duplicates)
    heartbeats = op.map("heartbeat", beats, _Heartbeat(counters))
    return MarketEventStreams(unique, dead, heartbeats)


@operator
def by_family(
    step_id: str, events: Stream[MarketEvent], counters: IngestCounters | None = None
) -> FamilyStreams:
    """Split tagged events into one stream per family (counting them as published)."""

    def tally(batch: list[MarketEvent]) -> list[MarketEvent]:
        if counters is not None:
            published = counters.published
            for family, _ in batch:
                published[family] += 1
        return batch

    counted = op.flat_map_batch("count", events, tally)
    out: dict[str, Stream[Envelope[Any]]] = {}
    rest = counted
    for family in FAMILIES[:-1]:
        split = op.branch(f"is_{family}", rest, _of_family(family))
        out[family] = op.map(f"{family}_envelopes", split.trues, _envelope)
        rest = split.falses
    out[FAMILIES[-1]] = op.map(f"{FAMILIES[-1]}_envelopes", rest, _envelope)
    return FamilyStreams(out["trades"], out["quotes"], out["bars"], out["status"])


@operator
def as_wire(step_id: str, envelopes: Stream[Envelope[Any]]) -> Stream[bytes]:
    """Envelopes as the JSON bytes the ingest stage writes to Kafka, a batch at a time.

    Why: the all-in-one flow joins ingest and TA without Kafka, and the TA operators take
    their compiled paths only for message bytes (an envelope object takes the general Python
    path). Encoding here makes the embedded flow run exactly what production runs on the
    messages it reads from Kafka.
    """
    return op.flat_map_batch("encode", envelopes, _encode_all)


def _encode_all(batch: list[Envelope[Any]]) -> list[bytes]:
    return list(map(encode_envelope, batch))


def heartbeat_envelope(
    beat: SourceHeartbeat, counters: IngestCounters, seq: int, source: str = "alpaca"
) -> Envelope[IngestStatus]:
    """The ``IngestStatus`` envelope for one source heartbeat."""
    status = beat.status
    payload = IngestStatus(
        state=status.state,
        last_message_at=status.last_message_at,
        connected=status.connected,
        received=dict(counters.received),
        published=dict(counters.published),
        duplicates=counters.duplicates,
        dead_letters=counters.dead_letters,
        reconnects=status.reconnects,
        detail=status.detail,
        caught_up_at=beat.caught_up_at,
    )
    return Envelope(beat.at, beat.at, INGEST_SYMBOL, seq, payload, source=source)


def _is_frame(item: SourceItem) -> TypeGuard[Frame]:
    return isinstance(item, Frame)


def _of_family(family: Family) -> Callable[[MarketEvent], bool]:
    def test(item: MarketEvent) -> bool:
        return item[0] == family

    return test


def _envelope(item: MarketEvent) -> Envelope[Any]:
    return item[1]


class _Decode:
    """``flat_map_batch`` body: frames → events and dead letters, counted and sampled."""

    def __init__(self, counters: IngestCounters) -> None:
        self._decoder = FrameDecoder()
        self._counters = counters
        self._sample = LogSample()
        self._messages = {f: MESSAGES.labels(f) for f in FAMILIES}

    def __call__(self, frames: list[Frame]) -> list[MarketEvent | DeadLetter]:
        out: list[MarketEvent | DeadLetter] = []
        counts = dict.fromkeys(FAMILIES, 0)
        ignored = 0
        for frame in frames:
            result = self._decoder.decode(frame)
            for family, _ in result.events:
                counts[family] += 1
            out.extend(result.events)
            ignored += result.ignored
            for dead in result.dead_letters:
                self._dead_letter(dead)
                out.append(dead)
        received = self._counters.received
        for family, n in counts.items():
            if n:
                received[family] += n
                self._messages[family].inc(n)
        if ignored:
            self._counters.ignored += ignored
            IGNORED.inc(ignored)
        return out

    def _dead_letter(self, dead: DeadLetter) -> None:
        self._counters.dead_letters += 1
        DEAD_LETTERS.labels(dead.reason).inc()
        if self._sample.allow():
            log.warning(
                "ingest_dead_letter",
                reason=dead.reason,
                error=dead.error,
                symbol=dead.symbol,
                raw_head=dead.raw[:120].hex(),
                raw_bytes=len(dead.raw),
                suppressed_before=self._sample.suppressed,
            )


class _Heartbeat:
    """``map`` body: source heartbeat → ``IngestStatus`` envelope with a rising ``seq``."""

    def __init__(self, counters: IngestCounters) -> None:
        self._counters = counters
        self._seq = 0

    def __call__(self, beat: SourceHeartbeat) -> Envelope[IngestStatus]:
        self._seq = max(self._seq + 1, _micros(beat.at))
        return heartbeat_envelope(beat, self._counters, self._seq)


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)
