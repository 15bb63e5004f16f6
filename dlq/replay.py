"""Re-publish stored dead letters to where they came from, after the bug that rejected them is
fixed, and record every replay.

Where a record goes (:func:`plan`):

* ``torghut.ingest.dlq.v1``: the raw bytes are an Alpaca message (or a whole frame) that the
  decoder rejected, and the fix is in the decoder; so the replay runs them through today's
  :class:`operators.alpaca_decode.FrameDecoder` and publishes the envelopes to their market
  topics, keyed by symbol, exactly as ingest would have. A record the decoder still rejects is
  refused (nothing published, the reason reported).
* ``torghut.ta.dlq.v1``: only ``invalid_message`` records hold the input message itself; it
  goes back unchanged to the input topic it was read from (trades for the microbar stage;
  quotes or Alpaca bars for the indicator stage, told apart by the message's payload). Other
  reasons (late trades, out-of-range values) describe data, not a message, and are refused.
* ``--to TOPIC`` overrides all of this: the raw bytes go unchanged to ``TOPIC``.

Delivery is idempotent (``enable.idempotence``) and awaited; only the records whose every
message was acknowledged are recorded as replayed (``dead_letter_replays``), so a failed run can
simply be repeated. Downstream deduplication (trade ids, bar versions) makes a repeated message
harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from dlq.store import DeadLetterStore, StoredLetter
from operators.alpaca_decode import Frame, FrameDecoder
from operators.kafka_io import PRODUCER_DEFAULTS, encode_envelope
from torghut.config import KafkaSettings

__all__ = ["NotReplayable", "ReplayReport", "Republish", "plan", "replay"]


class NotReplayable(ValueError):
    """This record cannot be re-published as it is; the message says why."""


@dataclass(frozen=True)
class Republish:
    """One message to publish: topic, key, value."""

    topic: str
    key: str | None
    value: bytes


@dataclass
class ReplayReport:
    """What a replay did: ids replayed (with their message count), refused and failed."""

    replayed: dict[int, int] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed


def plan(letter: StoredLetter, kafka: KafkaSettings, to: str | None = None) -> list[Republish]:
    """The messages that replay ``letter`` (see the module docstring); raises NotReplayable."""
    if to is not None:
        return [Republish(to, letter.symbol, letter.raw)]
    if letter.topic == kafka.topic_ingest_dlq:
        return _redecoded(letter, kafka)
    if letter.topic == kafka.topic_ta_dlq:
        return [Republish(_ta_input(letter, kafka), letter.symbol, letter.raw)]
    raise NotReplayable(f"no origin known for records of {letter.topic}; name one with --to")


def replay(
    store: DeadLetterStore,
    letters: Sequence[StoredLetter],
    kafka: KafkaSettings,
    *,
    note: str,
    now: Callable[[], datetime],
    to: str | None = None,
    timeout_s: float = 30.0,
    dry_run: bool = False,
) -> ReplayReport:
    """Publish the plan of every letter, await delivery, record what was delivered."""
    report = ReplayReport()
    planned: dict[int, list[Republish]] = {}
    for letter in letters:
        try:
            planned[letter.id] = plan(letter, kafka, to)
        except NotReplayable as exc:
            report.refused[letter.id] = str(exc)
    if dry_run:  # what would be published, nothing recorded
        report.replayed = {i: len(m) for i, m in planned.items()}
        return report
    if not planned:
        return report
    failures: dict[int, str] = {}

    def on_delivery(letter_id: int) -> Callable[[KafkaError | None, Message], None]:
        def done(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.setdefault(letter_id, err.str())

        return done

    config: dict[str, Any] = {
        **PRODUCER_DEFAULTS,
        **kafka.client_config(),
        "message.timeout.ms": str(int(timeout_s * 1000)),
    }
    producer = Producer(config)
    for letter_id, messages in planned.items():
        for m in messages:
            producer.produce(m.topic, m.value, m.key, on_delivery=on_delivery(letter_id))
            producer.poll(0)
    left = producer.flush(timeout_s + 5)
    for letter_id, messages in planned.items():
        if letter_id in failures:
            report.failed[letter_id] = failures[letter_id]
        elif left:
            report.failed[letter_id] = f"{left} message(s) of the run still undelivered"
        else:
            report.replayed[letter_id] = len(messages)
    targets = {i: ",".join(sorted({m.topic for m in planned[i]})) for i in report.replayed}
    store.record_replays([(i, targets[i], n) for i, n in report.replayed.items()], now(), note)
    return report


_FAMILY_TOPIC = {
    "trades": "topic_trades",
    "quotes": "topic_quotes",
    "bars": "topic_bars",
    "status": "topic_status",
}


def _redecoded(letter: StoredLetter, kafka: KafkaSettings) -> list[Republish]:
    data, binary = _as_frame(letter.raw)
    out = FrameDecoder(letter.source).decode(Frame(letter.first_seen_at, data, binary))
    if out.dead_letters:
        d = out.dead_letters[0]
        raise NotReplayable(f"today's decoder still rejects it: {d.reason}: {d.error}")
    if not out.events:
        raise NotReplayable("today's decoder yields no event from it (ignored message type)")
    return [
        Republish(getattr(kafka, _FAMILY_TOPIC[family]), env.symbol, encode_envelope(env))
        for family, env in out.events
    ]


def _as_frame(raw: bytes) -> tuple[bytes, bool]:
    """A websocket frame holding ``raw``: a JSON or msgpack message wrapped in a one-element
    array, or ``raw`` itself when it already is a frame (``malformed_frame`` records)."""
    head = raw.lstrip()[:1]
    if head in (b"{", b"["):
        return (raw if head == b"[" else b"[" + raw + b"]"), False
    first = raw[:1]
    if first and (0x90 <= first[0] <= 0x9F or first[0] in (0xDC, 0xDD)):
        return raw, True
    return b"\x91" + raw, True


_TA_PAYLOAD_KEYS = (("bid_price", "topic_quotes"), ("kind", "topic_bars"))


def _ta_input(letter: StoredLetter, kafka: KafkaSettings) -> str:
    if letter.reason != "invalid_message":
        raise NotReplayable(
            f"a {letter.reason!r} record describes data, not an input message; nothing to replay"
        )
    if letter.stage == "ta_microbars":  # reads the trades topic only
        return kafka.topic_trades
    try:
        value = msgspec.json.decode(letter.raw)
    except msgspec.DecodeError:
        value = None
    payload = value.get("payload") if isinstance(value, dict) else None
    if isinstance(payload, dict):
        for key, topic in _TA_PAYLOAD_KEYS:
            if key in payload:
                return str(getattr(kafka, topic))
    raise NotReplayable(
        f"cannot tell which input topic a {letter.stage!r} record came from; name it with --to"
    )
