"""Quote reduction for the indicators: the latest quote per (symbol, second bucket) of a batch.

Only the latest quote at or before a bar end can reach a signal (``imbalance_*``), and bar
ends lie on a grid of whole seconds on both lanes, so of all the quotes of one symbol in one
second bucket ``(s-1, s]`` only the latest can ever matter. Each input batch is therefore
reduced to at most one quote per (symbol, bucket) before the keyed step, and the result is
emitted once per key group (:mod:`operators.key_groups`): a :class:`QuoteChunk` holding, per
second bucket, the kept quote of each symbol of the group, and each symbol's newest quote time
(kept or not). Every input batch also carries the feed's time to **every** key group (an empty
chunk for a group none of whose symbols quoted): the quote partition and the batch's newest
quote time, from which the indicator step knows how far the quotes of all symbols are complete.

Decoding: only the envelope's time and symbol are read (the rest of the message is skipped,
and still checked to be JSON); the quote itself is parsed only when the indicator step hands
it to an engine, once per (symbol, second), because a superseded quote cannot influence any
output (parsing every payload was half the cost of the quote path). A message that does not
decode, a timestamp without a time zone and a symbol outside the allowlist are dead-lettered
here (``invalid_quote``); a kept message whose payload is not a valid quote is dead-lettered by
the indicator step.

Two paths with one result (a hypothesis property checks it): :func:`_chunks_in_order`, compiled
(``operators/_reduce.pyx``), for a well-formed batch in any order (msgspec's fixed-width UTC
timestamps, allowed symbols), and :func:`_latest_each` + :func:`chunks_of` for anything else,
one quote at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any, NamedTuple

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator

from operators._reduce import latest_quotes
from operators.joints import split_dead_letters
from operators.key_groups import ALL_GROUPS, KEY_GROUPS_SEEN, key_group
from operators.partitions import TaInput, by_partition
from operators.ta_status import TaProgress
from torghut.config import TaSettings
from torghut.dead_letters import DeadLetter, dead_letter
from torghut.events import Envelope, Quote
from torghut.ta.instants import epoch_micros, rfc3339_micros_many

__all__ = [
    "QUOTE_WIRE",
    "STAGE",
    "QuoteChunk",
    "QuoteStreams",
    "chunks_of",
    "quote_chunks",
    "quote_of",
    "reduce_quotes",
]

STAGE = "ta_indicators"
"""The stage named in the dead letters of the indicator steps (quotes are read for them)."""
_US = 1_000_000


class QuoteChunk(NamedTuple):
    """The reduced quotes of one input batch for the symbols of one key group.

    ``buckets`` maps a second bucket ``s`` (the quotes in ``(s-1 s, s]``) to the latest quote
    of each symbol in it: ``(event time in µs, entry)``, the entry the message's bytes, not
    parsed yet, or a :class:`~torghut.events.Quote` from an envelope (:func:`quote_of`).
    ``newest`` is each symbol's newest quote time in the batch, kept or not. ``ordered`` says
    the batch was in event-time order, oldest quote at ``first_us`` and newest at ``high_us``,
    so that a later ordered chunk may simply overwrite what an earlier one staged. ``part`` is
    the source partition of the batch and ``feed_us`` its newest quote of any symbol: the
    feed's time, the same in the chunk of every group.
    """

    buckets: dict[int, dict[str, tuple[int, Any]]]
    newest: dict[str, int]
    ordered: bool
    first_us: int
    high_us: int
    part: str = "feed"
    feed_us: int = -1


class _QuoteWire(msgspec.Struct, gc=False):
    """Envelope fields that decide which quotes matter; the payload is parsed only if kept.

    The payload is not even named: skipping it is a quarter cheaper than keeping it as
    ``msgspec.Raw``, and the few kept messages are parsed again, whole (:func:`quote_of`).
    """

    event_ts: str
    symbol: str


class _QuoteMessage(msgspec.Struct, gc=False):
    payload: Quote


QUOTE_WIRE = msgspec.json.Decoder(_QuoteWire)
"""The per-message decoder of the quote path (the benchmark's decode-only baseline uses it)."""
_MESSAGE = msgspec.json.Decoder(_QuoteMessage)
_EVENT_TS = attrgetter("event_ts")
_SYMBOL = attrgetter("symbol")

_Latest = dict[str, dict[int, tuple[int, Any]]]
"""Per symbol, per second bucket: (event time in µs, payload) of the latest quote."""


@dataclass(frozen=True)
class QuoteStreams:
    chunks: Stream[tuple[str, QuoteChunk]]
    """``(key group, chunk)`` per input batch and key group."""
    dead_letters: Stream[DeadLetter]


@operator
def quote_chunks(
    step_id: str, quotes: Stream[TaInput], settings: TaSettings, progress: TaProgress
) -> QuoteStreams:
    """Decode quote batches and keep the latest quote per (symbol, second bucket) per batch."""
    allow = frozenset(settings.symbol_allowlist) or None

    def reduce(batch: list[TaInput]) -> list[tuple[str, QuoteChunk] | DeadLetter]:
        out: list[tuple[str, QuoteChunk] | DeadLetter] = []
        for part, values in by_partition(batch):
            out.extend(reduce_quotes(values, allow, progress, part))
        return out

    reduced = op.flat_map_batch("reduce", quotes, reduce)
    split = split_dead_letters("split_dead", reduced)
    return QuoteStreams(split.items, split.dead_letters)


def reduce_quotes(
    values: list[Any], allow: frozenset[str] | None, progress: TaProgress, part: str = "feed"
) -> list[tuple[str, QuoteChunk] | DeadLetter]:
    """One batch of quote messages (bytes or envelopes) → a chunk per key group + dead letters.

    Every group gets a chunk when the batch holds any quote, so the feed's time reaches all.
    """
    dead: list[DeadLetter] = []
    chunks: dict[str, QuoteChunk] | None = None
    if values and isinstance(values[0], Envelope):
        triples: list[tuple[str, Any, Any]] = [(e.symbol, e.event_ts, e.payload) for e in values]
    else:
        wires, kept, dead = _decode(values)
        if not dead:
            chunks = _chunks_in_order(wires, kept, allow)
        if chunks is None:
            triples = [(w.symbol, w.event_ts, v) for w, v in zip(wires, kept, strict=True)]
    progress.add_batch("python" if chunks is None else "compiled")
    if chunks is None:
        chunks = chunks_of(_latest_each(triples, allow, dead))
    out: list[tuple[str, QuoteChunk] | DeadLetter] = []
    if chunks:
        feed = max(c.high_us for c in chunks.values())
        for g in ALL_GROUPS:
            c = chunks.get(g)
            if c is None:
                out.append((g, QuoteChunk({}, {}, True, feed, feed, part, feed)))
            else:
                out.append((g, c._replace(part=part, feed_us=feed)))
    if dead:
        progress.add_dead_letters("invalid_quote", len(dead))
        out.extend(dead)
    return out


def chunks_of(latest: _Latest) -> dict[str, QuoteChunk]:
    """Per key group chunks (``ordered=False``) of the latest quotes of a batch in any order."""
    chunks: dict[str, QuoteChunk] = {}
    for sym, per in latest.items():
        group = key_group(sym)
        chunk = chunks.get(group)
        if chunk is None:
            chunk = chunks[group] = QuoteChunk({}, {}, False, 0, 0)
        newest = -1 << 63
        for bucket, entry in per.items():
            held = chunk.buckets.get(bucket)
            if held is None:
                chunk.buckets[bucket] = {sym: entry}
            else:
                held[sym] = entry
            newest = max(newest, entry[0])
        chunk.newest[sym] = newest
    return {g: c._replace(high_us=max(c.newest.values())) for g, c in chunks.items()}


def _chunks_in_order(
    wires: list[_QuoteWire], values: list[bytes], allow: frozenset[str] | None
) -> dict[str, QuoteChunk] | None:
    """The chunks of a well-formed batch, by the compiled reduction; None otherwise.

    Why: :func:`operators._reduce.latest_quotes` does what :func:`_latest_each` +
    :func:`chunks_of` do, in C, for a batch in any order whose timestamps are in the
    fixed-width UTC form and whose symbols are allowed; it also says whether the batch was in
    event-time order, which lets the indicator step stage the chunk by a plain overwrite.
    Anything else returns None and the batch takes :func:`_latest_each`, which handles and
    dead-letters each quote.
    """
    found = latest_quotes(wires, values, allow, KEY_GROUPS_SEEN, key_group)
    if found is None:
        return None
    groups, ordered, first, high = found
    return {
        group: QuoteChunk(buckets, newest, ordered, first, high)
        for group, (buckets, newest) in groups.items()
    }


def _latest_each(
    triples: list[tuple[str, Any, Any]], allow: frozenset[str] | None, dead: list[DeadLetter]
) -> _Latest:
    """The latest quote per (symbol, second bucket), one quote at a time, in any order."""
    latest: _Latest = {}
    stamps = _stamps([ts for _, ts, _ in triples])
    for (sym, ts_raw, payload), ts_us in zip(triples, stamps, strict=True):
        if ts_us is None:
            error = f"not an RFC 3339 timestamp with a time zone: {str(ts_raw)[:64]!r}"
            dead.append(dead_letter(STAGE, "invalid_message", _raw(payload), error, symbol=sym))
            continue
        if allow is not None and sym not in allow:
            dead.append(dead_letter(STAGE, "unknown_symbol", _raw(payload), symbol=sym))
            continue
        bucket = -(-ts_us // _US)
        per = latest.get(sym)
        if per is None:
            latest[sym] = {bucket: (ts_us, payload)}
            continue
        held = per.get(bucket)
        if held is None or ts_us >= held[0]:
            per[bucket] = (ts_us, payload)
    return latest


def _stamps(raw: list[Any]) -> list[int | None]:
    """Event times in µs: RFC 3339 strings from the wire, datetimes from envelopes."""
    if raw and isinstance(raw[0], datetime):
        return [epoch_micros(ts) for ts in raw]
    return rfc3339_micros_many(raw)


def _decode(values: list[Any]) -> tuple[list[_QuoteWire], list[bytes], list[DeadLetter]]:
    """The wires of the messages that decode, those messages, and dead letters for the rest."""
    if not values:
        return [], [], []
    try:
        return list(map(QUOTE_WIRE.decode, values)), values, []
    except (msgspec.DecodeError, TypeError):
        pass
    wires: list[_QuoteWire] = []
    kept: list[bytes] = []
    dead: list[DeadLetter] = []
    for v in values:
        try:
            wires.append(QUOTE_WIRE.decode(v))
            kept.append(v)
        except (msgspec.DecodeError, TypeError) as exc:
            raw = v if isinstance(v, bytes) else b""
            dead.append(dead_letter(STAGE, "invalid_message", raw, str(exc)))
    return wires, kept, dead


def quote_of(entry: Quote | bytes) -> Quote:
    """The quote of a kept entry: itself, or the payload of its message, parsed now.

    Raises ``msgspec.DecodeError`` when the message's payload is not a valid quote.
    """
    return entry if isinstance(entry, Quote) else _MESSAGE.decode(entry).payload


def _raw(entry: Any) -> bytes:
    return entry if isinstance(entry, bytes) else msgspec.json.encode(entry)
