"""Kafka input built for batches: raw value bytes per poll, offsets in the recovery snapshot.

Why not Bytewax's ``KafkaSource``: it builds a ``KafkaSourceMessage`` (eight attribute reads
and a dataclass) per message, which caps it at about 240 k messages/s on our machines while
the TA operators take 1.3 M/s in process; and it keeps librdkafka's defaults, which prefetch
up to 64 MB and 100 000 messages per partition and pause fetching for a whole second whenever
that queue is full (``fetch.queue.backoff.ms``). :class:`KafkaBatchSource` keeps what is good
about it and drops the rest:

* one Bytewax partition per Kafka topic-partition (key ``"{partition}-{topic}"``, the same as
  Bytewax's source, so a recovery store written by it resumes here), spread over the workers
  by Bytewax; each partition has its own consumer, ``assign()`` ed to that one
  topic-partition, no consumer group;
* each poll is one ``consume(batch_size, 0)``; it is handed on as one :class:`PartitionBatch`:
  the partition's id and the messages' values, ``bytes`` (``None`` for a tombstone, which the
  operators dead-letter), taken with one C call per message — no object per message;
* the partition's ``snapshot()`` is the offset of the next message to read, so a resume reads
  exactly from where the snapshot was taken (effectively-once state with Bytewax recovery);
* a partition that is behind (its next offset below the high watermark) waits up to
  ``fill_ms`` for a full batch, so a backlog is read in full batches — but never for more
  messages than the broker had; a caught-up partition never blocks the worker;
* prefetch memory is bounded per partition (``queued.max.messages.kbytes``, ``fetch.max.bytes``,
  ``queued.min.messages``) and the fetch back-off is short, so a backfill is not paced by
  librdkafka's pauses;
* ``exit_at_end`` (backfills): the high watermark of each partition is read when the partition
  is built, messages from there on are not read, and the partition ends (EOF) once it has
  handed on everything before it;
* a message carrying an error is never skipped: the partition raises
  :class:`KafkaConsumeError` naming the topic, partition, offset and error (the flow stops and
  a restart resumes from the last snapshot); client-level errors reported through
  ``error_cb`` are counted and logged, and a fatal one stops the flow the same way;
* when a poll returns fewer messages than asked and the partition's next offset has reached
  the high watermark of librdkafka's last fetch response, nothing more is pending right now:
  the partition tells ``drained.mark_source_drained(f"{topic}/{partition}", wall_us)`` (the
  TA flow's :class:`~operators.ta_status.TaProgress` uses it to know the source is caught up)
  and asks to be polled again at the next tick of a wall-clock grid of ``idle_poll_ms``
  instead of spinning (see :meth:`_KafkaBatchPartition.next_tick`). A short poll while
  the broker still holds more (the prefetch queue between two fetches) is polled again at
  once and is not "drained". ``wall_us`` is what the poll can vouch for
  (:class:`operators.caught_up.CaughtUp`): the cached high watermark is from a fetch response
  up to ``fetch.wait.max.ms`` old, and after a pause of the process it is from before the
  pause, so a poll vouches for ``fetch.wait.max.ms`` plus a stall margin before its own time,
  and for nothing new until the partition has been polled without a pause for that long.

Offsets are never committed to Kafka: consumer-group lag tools do not see this flow; the lag
is ``torghut_kafka_source_lag`` per topic-partition (the high watermark librdkafka caches
from its fetch responses minus the next offset to read).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import NamedTuple, Protocol

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from prometheus_client import Counter, Gauge

from operators.caught_up import CaughtUp
from torghut.logs import get_logger
from torghut.observability import tracing
from torghut.ta.instants import us_to_dt, wall_micros

__all__ = [
    "CONSUMER_DEFAULTS",
    "DrainListener",
    "KafkaBatchSource",
    "KafkaConsumeError",
    "PartitionBatch",
    "consumer_config",
]

log = get_logger("operators.kafka_source")

CONSUMER_DEFAULTS: dict[str, str] = {
    "group.id": "torghut-offsets-in-recovery",  # required by librdkafka; never joined or committed
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "auto.offset.reset": "error",  # an offset that no longer exists is an error, not a skip
    "fetch.queue.backoff.ms": "5",  # librdkafka's 1000 ms pause paced backfills to ~190 k/s
    "fetch.wait.max.ms": "100",
    "enable.partition.eof": "false",
}
"""librdkafka settings of every :class:`KafkaBatchSource` consumer (the caller's settings win)."""

MESSAGES = Counter(
    "torghut_kafka_source_messages_total", "Messages handed to the flow, by topic.", ["topic"]
)
ERRORS = Counter(
    "torghut_kafka_source_errors_total",
    "Errors reported by the Kafka consumer, by topic and librdkafka error name.",
    ["topic", "error"],
)
LAG = Gauge(
    "torghut_kafka_source_lag",
    "Messages between the next offset to read and the partition's high watermark.",
    ["topic", "partition"],
)

_VALUE = Message.value
_ERROR = Message.error


class PartitionBatch(NamedTuple):
    """One poll of one topic-partition: its source id (``"topic/partition"``) and values.

    One item per poll, not one per message: Bytewax may hand a downstream step the polls of
    several partitions of a worker at once, and the TA steps keep the feed's time per source
    partition, so every value must stay labelled with where it came from — at the cost of one
    tuple per poll.
    """

    source_id: str
    values: list[bytes | None]


class KafkaConsumeError(RuntimeError):
    """Kafka reported an error the source cannot skip without losing messages."""


class DrainListener(Protocol):
    """Told when a partition has nothing more pending (the TA flow's ``TaProgress``)."""

    def mark_source_drained(self, source_id: str, wall_us: int) -> None: ...


def consumer_config(client: dict[str, str], *, batch_size: int, prefetch_kb: int) -> dict[str, str]:
    """librdkafka settings for one partition's consumer with a bounded prefetch.

    ``prefetch_kb`` bounds the messages librdkafka queues ahead of the flow for the partition
    (``queued.max.messages.kbytes``); one fetch response is at most half of it (but at least
    the 1 MB librdkafka requires, ``message.max.bytes``), so a fetch in flight and the queue
    together stay within ``prefetch_kb`` + 1 MB. ``client`` (broker, security) overrides
    :data:`CONSUMER_DEFAULTS`; the bounds are always applied.
    """
    fetch_bytes = max(1_000_000, prefetch_kb * 1024 // 2)
    return {
        **CONSUMER_DEFAULTS,
        **client,
        "queued.max.messages.kbytes": str(prefetch_kb),
        "queued.min.messages": str(max(1000, 2 * batch_size)),
        "fetch.max.bytes": str(fetch_bytes),
        "max.partition.fetch.bytes": str(fetch_bytes),
    }


class KafkaBatchSource(FixedPartitionedSource[PartitionBatch, int]):
    """Every partition of ``topics`` as raw message values, ``batch_size`` at most per poll,
    each poll handed on as one :class:`PartitionBatch`.

    ``config`` is the full consumer configuration (:func:`consumer_config`). Without resume
    state a partition starts at its first retained offset. ``on_first_batch`` (optional) sees
    the values of each partition's first non-empty batch before it is handed on, and may raise
    to refuse the input (the TA flow checks event times against the ClickHouse TTLs there).

    >>> # trades = op.input("trades", flow, KafkaBatchSource(cfg, ["torghut.trades.v1"],
    >>> #                                                     batch_size=20_000))
    """

    def __init__(
        self,
        config: dict[str, str],
        topics: Iterable[str],
        *,
        batch_size: int,
        exit_at_end: bool = False,
        idle_poll_ms: float = 10.0,
        fill_ms: float = 20.0,
        drained: DrainListener | None = None,
        on_first_batch: Callable[[str, list[bytes | None]], None] | None = None,
        metadata_timeout_s: float = 10.0,
    ) -> None:
        self._config = dict(config)
        self._topics = list(topics)
        self._batch_size = batch_size
        self._exit_at_end = exit_at_end
        self._idle_us = max(1, round(idle_poll_ms * 1000))
        self._fill_ms = fill_ms
        self._drained = drained
        self._on_first_batch = on_first_batch
        self._timeout = metadata_timeout_s

    def list_parts(self) -> list[str]:
        """``"{partition}-{topic}"`` for every partition of every topic (Bytewax's keys)."""
        consumer = Consumer(self._config)
        try:
            parts: list[str] = []
            for topic in self._topics:
                meta = consumer.list_topics(topic, timeout=self._timeout).topics[topic]
                if meta.error is not None:
                    raise KafkaConsumeError(f"topic {topic!r} is not readable: {meta.error}")
                parts += [f"{p}-{topic}" for p in sorted(meta.partitions)]
                if self._drained is not None:  # every partition known before any is polled
                    for p in meta.partitions:
                        self._drained.mark_source_drained(f"{topic}/{p}", 0)
            return parts
        finally:
            consumer.close()

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _KafkaBatchPartition:
        idx, topic = for_part.split("-", 1)
        if topic not in self._topics:
            raise KafkaConsumeError(
                f"recovery state of {step_id} names topic {topic!r}, not one of {self._topics}"
            )
        return _KafkaBatchPartition(self, topic, int(idx), resume_state)


class _KafkaBatchPartition(StatefulSourcePartition[PartitionBatch, int]):
    def __init__(
        self, source: KafkaBatchSource, topic: str, partition: int, resume: int | None
    ) -> None:
        self._topic, self._partition = topic, partition
        self._id = f"{topic}/{partition}"
        self._batch = source._batch_size
        self._idle_us = source._idle_us
        self._drained = source._drained
        # the cached high watermark is from a fetch response up to fetch.wait.max.ms old
        self._caught_up = CaughtUp(int(source._config.get("fetch.wait.max.ms", "500")) * 1000)
        if self._drained is not None:  # registered: blocks idle closing until caught up once
            self._drained.mark_source_drained(self._id, 0)
        self._on_first = source._on_first_batch
        self._fatal: KafkaError | None = None
        self._consumer = Consumer({**source._config, "error_cb": self._on_error})
        tp = self._tp = TopicPartition(topic, partition)
        low, high = self._consumer.get_watermark_offsets(tp, timeout=source._timeout)
        self._next = low if resume is None or resume == OFFSET_BEGINNING else resume
        self._end = high if source._exit_at_end else None
        self._awake: datetime | None = None
        self._behind = False
        self._fill_s = source._fill_ms / 1000
        self._messages = MESSAGES.labels(topic)
        self._lag = LAG.labels(topic, str(partition))
        self._lag.set(max(0, high - self._next))
        self._consumer.assign([TopicPartition(topic, partition, self._next)])
        log.info(
            "kafka_partition_assigned",
            source=self._id,
            offset=self._next,
            high_watermark=high,
            stop_at=self._end,
        )

    def next_batch(self) -> list[PartitionBatch]:
        polled_us = time.time_ns() // 1000
        end = self._end
        if end is not None and self._next >= end:
            raise StopIteration
        if self._fatal is not None:
            raise KafkaConsumeError(f"Kafka consumer of {self._id} failed: {self._fatal}")
        msgs = self._consumer.consume(self._batch, 0)
        if self._behind and len(msgs) < self._batch:
            msgs = self._fill(msgs)
        if msgs and any(map(_ERROR, msgs)):
            self._raise_error(msgs)
        values: list[bytes | None] = []
        if msgs:
            last: int = msgs[-1].offset()  # type: ignore[assignment]  # set on consumed messages
            if end is not None and last >= end:
                msgs = [m for m in msgs if m.offset() < end]  # type: ignore[operator]
                last = msgs[-1].offset() if msgs else end - 1  # type: ignore[assignment]
            values = list(map(_VALUE, msgs))
            if tracing.TRACER is not None:  # off by default: one check per poll
                tracing.traced_consume(self._topic, self._partition, msgs)
            self._next = last + 1
        # Caught up = this poll got less than a batch and nothing is left on the broker either
        # (the high watermark of the last fetch response); a short poll alone only means the
        # prefetch queue was between two fetches.
        high = self._consumer.get_watermark_offsets(self._tp, cached=True)[1]
        self._behind = high > self._next
        if high >= 0:
            self._lag.set(max(0, high - self._next))
        caught_up = False
        if len(values) == self._batch:
            self._awake = None
        elif high < 0:  # no fetch response yet: nothing known, nothing to spin for
            self._awake = self.next_tick()
        elif self._next >= high:
            self._awake = self.next_tick()
            caught_up = True
        else:
            self._awake = None
        if self._drained is not None:
            vouched = self._caught_up.vouch(polled_us, caught_up=caught_up)
            if vouched is not None:
                self._drained.mark_source_drained(self._id, vouched)
        if values:
            if self._on_first is not None:
                on_first, self._on_first = self._on_first, None
                on_first(self._id, values)
            self._messages.inc(len(values))
            return [PartitionBatch(self._id, values)]
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def next_tick(self) -> datetime:
        """When a caught-up partition is polled again: the next multiple of ``idle_poll_ms``
        on the wall clock, the same instant for every partition of the source.

        Why a shared grid and not ``idle_poll_ms`` after the partition's own poll: live, every
        partition is caught up after almost every poll, and Bytewax runs one activation of the
        whole dataflow — every step, and every key group of each stateful step — for whatever
        partitions are due. Each waking on its own schedule, the twelve partitions of the TA
        flow's topics made ~380 activations a second of one to three small polls each; woken
        together they are polled in one activation per tick. A message waits for its poll as
        long as before (at most ``idle_poll_ms``, half of it on average), and when to poll is
        all the wall clock decides here.
        """
        idle_us = self._idle_us
        return us_to_dt((wall_micros() // idle_us + 1) * idle_us)

    def _fill(self, msgs: list[Message]) -> list[Message]:
        """While behind, wait up to ``fill_ms`` for a full batch: the prefetch queue is
        smaller than a batch, and every batch has a fixed cost downstream (one activation per
        key group and step), so a backlog is read in full batches, not in whatever the queue
        held at that instant. A caught-up partition never waits here, and one a few messages
        behind waits for those only (the broker's high watermark as of the last fetch
        response): waiting for a full batch that does not exist yet held the whole worker for
        ``fill_ms`` on most polls of a live partition."""
        deadline = time.perf_counter() + self._fill_s
        while len(msgs) < self._batch:
            left = deadline - time.perf_counter()
            if left <= 0 or (msgs and msgs[-1].error() is not None):
                break
            have = msgs[-1].offset() + 1 if msgs else self._next  # type: ignore[operator]
            high = self._consumer.get_watermark_offsets(self._tp, cached=True)[1]
            wanted = min(self._batch - len(msgs), high - have)
            if wanted <= 0:
                break
            more = self._consumer.consume(wanted, left)
            if not more:
                break
            msgs.extend(more)
        return msgs

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()

    def _raise_error(self, msgs: list[Message]) -> None:
        """Stop at the first errored message: what came before it is not handed on either,
        so the snapshot still points before the whole batch and a restart re-reads it."""
        for m in msgs:
            err = m.error()
            if err is not None:
                ERRORS.labels(self._topic, err.name()).inc()
                raise KafkaConsumeError(
                    f"Kafka reported an error on {self._id} at offset {m.offset()} "
                    f"(next offset to read {self._next}): {err.str()} [{err.name()}]; "
                    "stopping rather than skipping it"
                )

    def _on_error(self, err: KafkaError) -> None:
        ERRORS.labels(self._topic, err.name()).inc()
        log.warning("kafka_consumer_error", source=self._id, error=err.str(), fatal=err.fatal())
        if err.fatal():
            self._fatal = err
