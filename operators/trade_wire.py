"""Trade messages off the wire: ``Envelope[Trade]`` JSON (or decoded envelopes) to ticks.

Two paths with one result (hypothesis checks it, ``tests/ta/test_fast_paths.py``):
:func:`preaggregate_batch` decodes a batch with msgspec into structs naming only the fields a
bar needs and reduces it per (symbol, second) in C (:func:`operators._reduce.reduce_trades`);
:func:`decode_trades` is the general path, one message at a time where needed, which also
dead-letters what is bad, with a reason.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from operators._reduce import reduce_trades
from torghut.dead_letters import DeadLetter, dead_letter
from torghut.events import Envelope
from torghut.ta.instants import US_PER_S, rfc3339_micros_many
from torghut.ta.microbars import SymbolBatch, Tick

__all__ = ["STAGE", "TRADE_WIRE", "decode_trades", "preaggregate_batch"]

STAGE = "ta_microbars"
"""The dead-letter stage of the trade path."""


class _TradeBody(msgspec.Struct, gc=False):
    trade_id: int
    exchange: str
    price: float | None  # msgspec writes NaN/inf as null: keep it to reject it with a reason
    size: float | None


class _TradeWire(msgspec.Struct, gc=False):
    """The fields of ``Envelope[Trade]`` a bar needs; the rest are skipped unparsed."""

    event_ts: str
    symbol: str
    payload: _TradeBody


TRADE_WIRE = msgspec.json.Decoder(_TradeWire)
"""The per-message decoder of the trade path (the benchmark's decode-only baseline uses it)."""


def decode_trades(values: list[Any]) -> tuple[list[Tick], list[DeadLetter]]:
    """Decode ``Envelope[Trade]`` JSON values (or envelopes already decoded) to ticks.

    The general path: every message is decoded and its timestamp parsed; if any message is
    bad the batch is decoded again message by message so that only the bad ones are
    dead-lettered. :func:`preaggregate_batch` tries the columnar fast path first.
    """
    if not values:
        return [], []
    if isinstance(values[0], Envelope):
        return [_tick_of_envelope(e) for e in values], []
    try:
        wires = list(map(TRADE_WIRE.decode, values))
    except (msgspec.DecodeError, TypeError):
        return _decode_each(values)
    return _ticks(wires, values)


def _ticks(wires: list[_TradeWire], values: list[Any]) -> tuple[list[Tick], list[DeadLetter]]:
    nan = math.nan
    out: list[Tick] = []
    dead: list[DeadLetter] = []
    stamps = rfc3339_micros_many([w.event_ts for w in wires])
    for i, w in enumerate(wires):
        ts = stamps[i]
        if ts is None:
            raw = values[i] if isinstance(values[i], bytes) else b""
            error = f"not an RFC 3339 timestamp with a time zone: {w.event_ts[:64]!r}"
            dead.append(dead_letter(STAGE, "invalid_message", raw, error))
            continue
        p = w.payload
        price, size = p.price, p.size
        out.append(
            (
                w.symbol,
                ts,
                p.trade_id,
                p.exchange,
                nan if price is None else price,
                nan if size is None else size,
            )
        )
    return out, dead


def preaggregate_batch(
    values: list[Any], lateness_us: int, allow: frozenset[str] | None
) -> tuple[dict[str, SymbolBatch], int] | None:
    """The batch's partials and duplicate count by the compiled fast path, or None.

    Why: decoding is one C call per message, and :func:`operators._reduce.reduce_trades` does
    what :func:`~torghut.ta.microbars.preaggregate` does, in C, for a batch in any order. It
    answers for a batch of JSON values that all decode and carry fixed-width UTC timestamps
    and valid prices and sizes of allowed symbols; otherwise None, and the caller takes the
    general path (which also dead-letters what is bad, with a reason).
    """
    if not values or not isinstance(values[0], bytes):
        return None
    try:
        wires = list(map(TRADE_WIRE.decode, values))
    except (msgspec.DecodeError, TypeError):
        return None
    return reduce_trades(wires, lateness_us, allow)


def _decode_each(values: list[Any]) -> tuple[list[Tick], list[DeadLetter]]:
    wires: list[_TradeWire] = []
    kept: list[Any] = []
    dead: list[DeadLetter] = []
    now = datetime.now(UTC)
    for v in values:
        if not isinstance(v, bytes):
            dead.append(dead_letter(STAGE, "invalid_message", b"", "empty or non-bytes value"))
            continue
        try:
            wires.append(TRADE_WIRE.decode(v))
            kept.append(v)
        except msgspec.DecodeError as exc:
            dead.append(dead_letter(STAGE, "invalid_message", v, str(exc), received_at=now))
    ticks, bad_ts = _ticks(wires, kept)
    return ticks, dead + bad_ts


def _tick_of_envelope(e: Envelope[Any]) -> Tick:
    p = e.payload
    ts = e.event_ts
    return (
        e.symbol,
        math.floor(ts.timestamp()) * US_PER_S + ts.microsecond,
        p.trade_id,
        p.exchange,
        p.price,
        p.size,
    )
