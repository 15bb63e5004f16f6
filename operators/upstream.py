"""The ingest's word on how far the market feed is complete, for the TA flow's idle closing.

Why: the TA flow closes a wholly quiet feed's bars on the wall clock once its own Kafka sources
are caught up (:meth:`operators.ta_status.TaProgress.mark_source_drained`). On its own that
cannot tell a quiet market from a stalled ingest: with the ingest process stopped for 4 s in
``bench/latency.py``'s pipeline (SIGSTOP), the TA's input topics went quiet while its sources
were caught up, ``TA_IDLE_CLOSE_MS`` later every open bar was closed, and when the ingest ran
again and delivered the trades that had waited in its socket, 346 final bars of that second
were corrected. The ingest knows better: its heartbeats on ``torghut.status.v1`` carry
``caught_up_at`` (:class:`torghut.events.IngestStatus`), the wall time up to which it has read
the websocket (by :class:`operators.caught_up.CaughtUp`'s rule, pauses included).

So every process of a live TA flow also follows the status topic (:class:`IngestFollower`), and
once it has seen such a heartbeat the ingest counts as one more caught-up source
(:class:`UpstreamVouches`):
the wall clock closes bars only up to the ingest's ``caught_up_at`` as well. A heartbeat is
taken into account only once the TA's own sources are caught up to
:data:`UPSTREAM_DELIVERY_US` past the heartbeat's time: the ingest hands the trades it vouches
for to its producers with the heartbeat, not before it, and they travel to Kafka on their own.

Until a first heartbeat with ``caught_up_at`` arrives (an ingest of an earlier version, a test
feeding Kafka directly) nothing changes. After it, an ingest that stops sending them stops
wall-clock closing — the feed's own time still closes bars whenever data flows — which is the
safe side: a quiet feed's last bars are final later, never final and then corrected.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime
from typing import Protocol

import msgspec
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Counter

from torghut.config import KafkaSettings
from torghut.logs import get_logger
from torghut.ta.instants import epoch_micros

__all__ = ["INGEST", "UPSTREAM_DELIVERY_US", "IngestFollower", "UpstreamVouches"]

log = get_logger("operators.upstream")

INGEST = "ingest"
"""The upstream source's name in :class:`UpstreamVouches`."""
UPSTREAM_DELIVERY_US = 1_000_000
"""How long after its heartbeat the trades an ingest heartbeat vouches for may still be on
their way to Kafka (the producers' ``linger.ms`` of a few ms and a broker round trip, with
room for the clocks of two hosts to differ by some ms)."""
_MAX_PENDING = 10_000
_TAIL = 20
"""Messages before each partition's end the follower starts at: the newest heartbeat is there."""
_RETRY_S = 5.0

IGNORED = Counter(
    "torghut_ta_status_messages_ignored_total",
    "Messages on the ingest status topic the TA flow could not read (logged)",
)


class UpstreamVouches:
    """Per upstream source, its heartbeats' ``(sent_us, caught_up_us)`` until they count.

    Not thread-safe: :class:`~operators.ta_status.TaProgress` calls it under its lock.
    """

    def __init__(self) -> None:
        self._pending: dict[str, deque[tuple[int, int]]] = {}
        self._accepted: dict[str, int] = {}

    def add(self, source: str, sent_us: int, caught_up_us: int) -> None:
        """Record a heartbeat sent at ``sent_us`` vouching for ``caught_up_us`` (registers
        ``source`` on its first heartbeat)."""
        pending = self._pending.setdefault(source, deque())
        self._accepted.setdefault(source, 0)
        if len(pending) >= _MAX_PENDING:  # the TA's own sources stuck behind: keep the newest
            pending.popleft()
        pending.append((sent_us, caught_up_us))

    def through(self, own_us: int) -> int | None:
        """The earliest caught-up time the upstream sources vouch for, now that the TA's own
        sources are caught up to ``own_us``; None when no upstream source is known."""
        if not self._accepted:
            return None
        limit = own_us - UPSTREAM_DELIVERY_US
        for source, pending in self._pending.items():
            while pending and pending[0][0] <= limit:
                _, caught_up = pending.popleft()
                if caught_up > self._accepted[source]:
                    self._accepted[source] = caught_up
        return min(self._accepted.values())


class _Payload(msgspec.Struct, gc=False):
    type: str = ""
    caught_up_at: datetime | None = None


class _Heartbeat(msgspec.Struct, gc=False):
    """The fields of a ``torghut.status.v1`` envelope this reads (the rest are skipped)."""

    ingest_ts: datetime
    payload: _Payload


_DECODE = msgspec.json.Decoder(_Heartbeat)


class _Progress(Protocol):
    def mark_upstream_caught_up(self, source: str, sent_us: int, caught_up_us: int) -> None: ...


class IngestFollower:
    """A thread that reads the ingest's heartbeats for this process's :class:`TaProgress`.

    Why a thread of each process and not a step of the flow: the caught-up registry is per
    process (every process closes bars of its own key groups), while a Bytewax input
    partition — the status topic has one — is read by one worker of one process; the other
    processes of a cluster would never hear from the ingest. Only the newest heartbeats
    matter, so it starts near the end of each partition (no offsets to recover) and keeps up.
    An unreadable topic or message is logged and counted, and the follower keeps trying: until
    it reads a heartbeat nothing changes for idle closing.
    """

    def __init__(self, kafka: KafkaSettings, progress: _Progress) -> None:
        self._config = {
            **kafka.client_config(),
            "group.id": "torghut-ta-ingest-follower",  # required by librdkafka; nothing committed
            "enable.auto.commit": "false",
            "fetch.wait.max.ms": "100",
        }
        self._topic = kafka.topic_status
        self._progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            while not self._stop.is_set() and not self._assign(consumer):
                self._stop.wait(_RETRY_S)
            while not self._stop.is_set():
                for msg in consumer.consume(100, 0.2):
                    if msg.error() is None:
                        self.read(msg.value())
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> bool:
        """Assign every partition of the topic a few messages before its end."""
        try:
            meta = consumer.list_topics(self._topic, timeout=5).topics[self._topic]
            if meta.error is not None:
                raise KafkaException(meta.error)
            parts = []
            for p in sorted(meta.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(self._topic, p), 5)
                parts.append(TopicPartition(self._topic, p, max(low, high - _TAIL)))
        except KafkaException as exc:
            log.warning("ingest_status_unreadable", topic=self._topic, error=str(exc))
            return False
        consumer.assign(parts)
        log.info("ingest_follower_started", topic=self._topic, partitions=len(parts))
        return True

    def read(self, value: bytes | None) -> None:
        """One status message: an ingest heartbeat with ``caught_up_at`` goes to the progress;
        other status messages are skipped; unreadable ones counted and logged."""
        try:
            beat = _DECODE.decode(value) if value is not None else None
        except msgspec.DecodeError as exc:
            beat = None
            log.warning("status_message_unreadable", topic=self._topic, error=str(exc))
        if beat is None:
            IGNORED.inc()
            return
        at = beat.payload.caught_up_at
        if beat.payload.type == "ingest_status" and at is not None:
            self._progress.mark_upstream_caught_up(
                INGEST, epoch_micros(beat.ingest_ts), epoch_micros(at)
            )
