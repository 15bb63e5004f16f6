"""Alpaca market-data frames → Torghut envelopes (pure; no I/O).

Why here and once: Alpaca's one-letter wire keys (``S``, ``bp``, ``vw``...) are translated to
:mod:`torghut.events` structs in exactly one place, at ingest. Frames are decoded by msgspec
straight into typed wire structs (a tagged union on ``T``), in C, a whole frame at a time. Only
when a frame fails validation do we fall back to decoding it message by message, so one bad
message costs a dead letter for that message, not for its neighbours in the batch.

A frame is the unit the websocket delivers: an array of messages, msgpack (binary) or JSON
(text). Control messages (``success``, ``error``, ``subscription``) are handled by the source;
if one reaches the decoder it is ignored, as are the message types Torghut does not publish
(trade corrections ``c`` and cancels ``x``, which Alpaca sends unasked with trades; LULD ``l``;
imbalances ``i``).

``seq``: one counter per decoder, floored at the frame's receive time in microseconds, so it
rises across reconnects and restarts (as long as fewer than a million messages a second arrive
on average). The decoder must run on one worker, right after the single-partition source.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import msgspec

from torghut.dead_letters import DeadLetter, dead_letter
from torghut.events import Bar, Envelope, Quote, Trade, TradingStatus, Window

__all__ = [
    "FAMILIES",
    "DecodedFrame",
    "Family",
    "Frame",
    "FrameDecoder",
    "InvalidTimestamp",
    "MarketEvent",
    "WireTime",
    "wire_time",
]

Family = Literal["trades", "quotes", "bars", "status"]
FAMILIES: Final[tuple[Family, ...]] = ("trades", "quotes", "bars", "status")
"""Topic families the ingest publishes (``torghut.<family>.v1``)."""

MarketEvent = tuple[Family, Envelope[Any]]
"""An envelope tagged with the topic family it belongs to."""

STAGE: Final = "alpaca_decode"


class Frame(msgspec.Struct, frozen=True, gc=False):
    """One websocket frame as received: raw bytes, codec and local receive time (UTC)."""

    received_at: datetime
    data: bytes
    binary: bool = True


class DecodedFrame(msgspec.Struct, gc=False):
    """What one frame yielded: events in frame order, dead letters, and ignored messages."""

    events: list[MarketEvent]
    dead_letters: list[DeadLetter]
    ignored: int = 0


# --- wire format (Alpaca stocks v2) --------------------------------------------------------

WireTime: TypeAlias = msgspec.msgpack.Ext | str
"""A wire timestamp as sent: msgpack's timestamp extension or RFC 3339 text, both to the ns.

Why not let msgspec build the ``datetime``: it *rounds* nanoseconds to the nearest microsecond,
so a trade at ``…:07.9999996`` became ``…:08.000000`` and landed in the next second's bar.
:func:`wire_time` truncates instead, as the TA steps do: a trade belongs to the second its
nanosecond timestamp is in.
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMESTAMP_EXT = -1


class InvalidTimestamp(ValueError):
    """A wire timestamp that is not a msgpack timestamp or RFC 3339 text with a time zone."""


def wire_time(value: WireTime) -> datetime:
    """The UTC instant of a wire timestamp, truncated to the microsecond.

    >>> wire_time("2024-03-05T14:32:07.9999996Z").isoformat()
    '2024-03-05T14:32:07.999999+00:00'
    """
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)  # 3.11: digits beyond 6 are truncated
        except ValueError as exc:
            raise InvalidTimestamp(f"not an RFC 3339 timestamp: {value[:64]!r}") from exc
        if ts.tzinfo is None:
            raise InvalidTimestamp(f"timestamp without a time zone: {value[:64]!r}")
        return ts.astimezone(UTC)
    if value.code != _TIMESTAMP_EXT:
        raise InvalidTimestamp(f"msgpack extension {value.code} is not a timestamp")
    data = bytes(value.data)
    if len(data) == 4:
        (secs,), nanos = struct.unpack(">I", data), 0
    elif len(data) == 8:
        (packed,) = struct.unpack(">Q", data)
        secs, nanos = packed & 0x3_FFFF_FFFF, packed >> 34
    elif len(data) == 12:
        nanos, secs = struct.unpack(">Iq", data)
    else:
        raise InvalidTimestamp(f"msgpack timestamp of {len(data)} bytes")
    if nanos >= 1_000_000_000:
        raise InvalidTimestamp(f"msgpack timestamp with {nanos} ns")
    try:
        return _EPOCH + timedelta(seconds=secs, microseconds=nanos // 1000)
    except OverflowError as exc:
        raise InvalidTimestamp(f"msgpack timestamp out of range: {secs} s") from exc


class _WireTrade(msgspec.Struct, tag_field="T", tag="t", gc=False):
    symbol: str = msgspec.field(name="S")
    trade_id: int = msgspec.field(name="i")
    exchange: str = msgspec.field(name="x")
    price: float = msgspec.field(name="p")
    size: float = msgspec.field(name="s")
    ts: WireTime = msgspec.field(name="t")
    conditions: tuple[str, ...] = msgspec.field(name="c", default=())
    tape: str = msgspec.field(name="z", default="")


class _WireQuote(msgspec.Struct, tag_field="T", tag="q", gc=False):
    symbol: str = msgspec.field(name="S")
    bid_exchange: str = msgspec.field(name="bx")
    bid_price: float = msgspec.field(name="bp")
    bid_size: float = msgspec.field(name="bs")
    ask_exchange: str = msgspec.field(name="ax")
    ask_price: float = msgspec.field(name="ap")
    ask_size: float = msgspec.field(name="as")
    ts: WireTime = msgspec.field(name="t")
    conditions: tuple[str, ...] = msgspec.field(name="c", default=())
    tape: str = msgspec.field(name="z", default="")


class _WireBarFields(msgspec.Struct, tag_field="T", gc=False):
    symbol: str = msgspec.field(name="S")
    open: float = msgspec.field(name="o")
    high: float = msgspec.field(name="h")
    low: float = msgspec.field(name="l")
    close: float = msgspec.field(name="c")
    volume: float = msgspec.field(name="v")
    trade_count: int = msgspec.field(name="n")
    vwap: float = msgspec.field(name="vw")
    start: WireTime = msgspec.field(name="t")


class _WireBar(_WireBarFields, tag="b"):
    pass


class _WireUpdatedBar(_WireBarFields, tag="u"):
    pass


class _WireDailyBar(_WireBarFields, tag="d"):
    pass


class _WireStatus(msgspec.Struct, tag_field="T", tag="s", gc=False):
    symbol: str = msgspec.field(name="S")
    status_code: str = msgspec.field(name="sc")
    status_message: str = msgspec.field(name="sm")
    reason_code: str = msgspec.field(name="rc")
    reason_message: str = msgspec.field(name="rm")
    ts: WireTime = msgspec.field(name="t")
    tape: str = msgspec.field(name="z", default="")


class _Correction(msgspec.Struct, tag_field="T", tag="c"):
    pass


class _Cancel(msgspec.Struct, tag_field="T", tag="x"):
    pass


class _Luld(msgspec.Struct, tag_field="T", tag="l"):
    pass


class _Imbalance(msgspec.Struct, tag_field="T", tag="i"):
    pass


class _Success(msgspec.Struct, tag_field="T", tag="success"):
    pass


class _Error(msgspec.Struct, tag_field="T", tag="error"):
    pass


class _Subscription(msgspec.Struct, tag_field="T", tag="subscription"):
    pass


_Wire: TypeAlias = (
    _WireTrade
    | _WireQuote
    | _WireBar
    | _WireUpdatedBar
    | _WireDailyBar
    | _WireStatus
    | _Correction
    | _Cancel
    | _Luld
    | _Imbalance
    | _Success
    | _Error
    | _Subscription
)

_KNOWN_TAGS: Final = frozenset(
    ("t", "q", "b", "u", "d", "s", "c", "x", "l", "i", "success", "error", "subscription")
)
_BAR_KIND: Final[dict[type, Literal["bar", "updated_bar", "daily_bar"]]] = {
    _WireBar: "bar",
    _WireUpdatedBar: "updated_bar",
    _WireDailyBar: "daily_bar",
}
_ONE_MINUTE = timedelta(minutes=1)
_ONE_DAY = timedelta(days=1)


class _Codec:
    """The four decoders one wire codec (msgpack or JSON) needs."""

    def __init__(self, codec: Any) -> None:
        self.frame = codec.Decoder(list[_Wire])
        self.raw_list = codec.Decoder(list[msgspec.Raw])
        self.one = codec.Decoder(_Wire)
        self.untyped = codec.Decoder()


class FrameDecoder:
    """Turns :class:`Frame` s into envelopes and dead letters; holds the ``seq`` counter.

    >>> import msgpack
    >>> from datetime import UTC, datetime
    >>> raw = msgpack.packb([{"T": "t", "S": "AAPL", "i": 7, "x": "V", "p": 187.4, "s": 5,
    ...     "t": msgpack.Timestamp(1709650931, 0)}])
    >>> out = FrameDecoder().decode(Frame(datetime(2024, 3, 5, 15, 2, 12, tzinfo=UTC), raw))
    >>> [(family, env.symbol, env.payload.price) for family, env in out.events]
    [('trades', 'AAPL', 187.4)]
    """

    def __init__(self, source: str = "alpaca") -> None:
        self._source = source
        self._seq = 0
        self._codecs = {True: _Codec(msgspec.msgpack), False: _Codec(msgspec.json)}

    def decode(self, frame: Frame) -> DecodedFrame:
        """Decode one frame; never raises on bad input (it becomes a dead letter)."""
        floor = int(frame.received_at.timestamp() * 1_000_000)
        if floor > self._seq:
            self._seq = floor
        out = DecodedFrame(events=[], dead_letters=[])
        try:
            messages = self._codecs[frame.binary].frame.decode(frame.data)
        except msgspec.DecodeError:
            self._decode_one_by_one(frame, out)
            return out
        try:
            for msg in messages:
                self._append(msg, frame.received_at, out)
        except InvalidTimestamp:  # find the bad message(s): only they are dead-lettered
            out = DecodedFrame(events=[], dead_letters=[])
            self._decode_one_by_one(frame, out)
        return out

    def _decode_one_by_one(self, frame: Frame, out: DecodedFrame) -> None:
        try:
            raws = self._codecs[frame.binary].raw_list.decode(frame.data)
        except msgspec.DecodeError as exc:
            out.dead_letters.append(_dead(frame.data, frame, "malformed_frame", exc))
            return
        for raw in raws:
            item = bytes(raw)
            try:
                msg = self._codecs[frame.binary].one.decode(item)
                self._append(msg, frame.received_at, out)
            except (msgspec.DecodeError, InvalidTimestamp) as exc:
                out.dead_letters.append(self._reject(item, frame, exc))

    def _reject(self, item: bytes, frame: Frame, exc: Exception) -> DeadLetter:
        """Classify a message that failed validation; keep its symbol when it has one."""
        try:
            value = self._codecs[frame.binary].untyped.decode(item)
        except msgspec.DecodeError:
            value = None
        reason, symbol = "invalid_message", None
        if isinstance(value, dict):
            tag, sym = value.get("T"), value.get("S")
            if isinstance(tag, str) and tag not in _KNOWN_TAGS:
                reason = "unknown_type"
            if isinstance(sym, str):
                symbol = sym
        return _dead(item, frame, reason, exc, symbol)

    def _append(self, msg: Any, received_at: datetime, out: DecodedFrame) -> None:
        cls = type(msg)
        if cls is _WireTrade:
            out.events.append(("trades", self._trade(msg, received_at)))
        elif cls is _WireQuote:
            out.events.append(("quotes", self._quote(msg, received_at)))
        elif cls in _BAR_KIND:
            out.events.append(("bars", self._bar(msg, _BAR_KIND[cls], received_at)))
        elif cls is _WireStatus:
            out.events.append(("status", self._status(msg, received_at)))
        else:
            out.ignored += 1

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _trade(self, m: _WireTrade, received_at: datetime) -> Envelope[Trade]:
        payload = Trade(m.trade_id, m.exchange, m.price, m.size, m.conditions, m.tape)
        return Envelope(
            wire_time(m.ts), received_at, m.symbol, self._next_seq(), payload, source=self._source
        )

    def _quote(self, m: _WireQuote, received_at: datetime) -> Envelope[Quote]:
        payload = Quote(
            m.bid_exchange,
            m.bid_price,
            m.bid_size,
            m.ask_exchange,
            m.ask_price,
            m.ask_size,
            m.conditions,
            m.tape,
        )
        return Envelope(
            wire_time(m.ts), received_at, m.symbol, self._next_seq(), payload, source=self._source
        )

    def _bar(
        self,
        m: _WireBarFields,
        kind: Literal["bar", "updated_bar", "daily_bar"],
        received_at: datetime,
    ) -> Envelope[Bar]:
        payload = Bar(kind, m.open, m.high, m.low, m.close, m.volume, m.trade_count, m.vwap)
        start = wire_time(m.start)
        if kind == "daily_bar":
            end = start + _ONE_DAY
            window = Window(size="P1D", start=start, end=end)
        else:
            end = start + _ONE_MINUTE
            window = Window(size="PT1M", start=start, end=end)
        return Envelope(
            end,
            received_at,
            m.symbol,
            self._next_seq(),
            payload,
            is_final=kind != "daily_bar",
            source=self._source,
            window=window,
            version=2 if kind == "updated_bar" else 1,
        )

    def _status(self, m: _WireStatus, received_at: datetime) -> Envelope[TradingStatus]:
        payload = TradingStatus(
            m.status_code, m.status_message, m.reason_code, m.reason_message, m.tape
        )
        return Envelope(
            wire_time(m.ts), received_at, m.symbol, self._next_seq(), payload, source=self._source
        )


def _dead(
    raw: bytes, frame: Frame, reason: str, exc: Exception, symbol: str | None = None
) -> DeadLetter:
    return dead_letter(STAGE, reason, raw, str(exc), symbol=symbol, received_at=frame.received_at)
