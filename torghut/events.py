"""Event contracts shared by every stage: the Kafka envelope and its payloads.

Why msgspec: the TA flow decodes hundreds of thousands of messages a second, and msgspec
decodes typed JSON into these structs in C, validating as it goes. Field names are snake_case
throughout; Alpaca's one-letter keys are translated once, at ingest.

Every message on a Torghut topic is an :class:`Envelope`. Its ``payload`` type is fixed per
topic (see :data:`TOPIC_PAYLOADS`); JSON Schemas under ``infra/schemas/`` are generated from
these structs and CI checks that changes stay backward compatible.

Fields left at their defaults are not written (``omit_defaults``): a market-data message loses a
fifth of its bytes (``is_final``, ``source``, ``window``, ``version``, empty ``conditions`` and
``tape``), which every consumer pays for in decoding time, and readers fill the defaults back
in, so old and new messages read alike (the JSON Schemas never required those fields).
:class:`Signal` keeps its ``null`` s: a signal's warming-up indicators are data.

Timestamps are timezone-aware UTC datetimes on the wire (RFC 3339). ``seq`` orders messages of
one symbol within a topic; ``version`` rises when a message replaces an earlier one with the
same key (a corrected bar, an updated Alpaca bar); readers keep the highest version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

import msgspec

__all__ = [
    "Bar",
    "Envelope",
    "IngestStatus",
    "Microbar",
    "Quote",
    "Signal",
    "TaStatus",
    "Trade",
    "TradingStatus",
    "Window",
]

P = TypeVar("P")


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=False, omit_defaults=True):
    """The time window an aggregate covers: ISO-8601 duration ``size`` (``PT1S``, ``PT1M``)."""

    size: str
    step: str | None = None
    start: datetime | None = None
    end: datetime | None = None


class Envelope(msgspec.Struct, Generic[P], frozen=True, omit_defaults=True):
    """The Kafka message frame of every Torghut topic.

    ``event_ts`` is when the thing happened (trade time, bar end); ``ingest_ts`` when Torghut
    produced this message. ``is_final`` is false for provisional values that a later message
    with a higher ``version`` may replace.
    """

    event_ts: datetime
    ingest_ts: datetime
    symbol: str
    seq: int
    payload: P
    is_final: bool = True
    source: str = "alpaca"
    window: Window | None = None
    version: int = 1


# --- market data (ingest -> torghut.{trades,quotes,bars,status}.v1) -------------------------


class Trade(msgspec.Struct, frozen=True, omit_defaults=True):
    """One trade print (Alpaca ``T:"t"``)."""

    trade_id: int
    exchange: str
    price: float
    size: float
    conditions: tuple[str, ...] = ()
    tape: str = ""


class Quote(msgspec.Struct, frozen=True, omit_defaults=True):
    """Top of book (Alpaca ``T:"q"``). A price of 0 means no bid or no ask."""

    bid_exchange: str
    bid_price: float
    bid_size: float
    ask_exchange: str
    ask_price: float
    ask_size: float
    conditions: tuple[str, ...] = ()
    tape: str = ""


class Bar(msgspec.Struct, frozen=True):
    """An Alpaca minute bar (``b``), its replacement (``u``) or the running daily bar (``d``).

    The envelope's ``window`` holds the bar interval; ``event_ts`` is the bar end.
    """

    kind: Literal["bar", "updated_bar", "daily_bar"]
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    vwap: float


class TradingStatus(msgspec.Struct, frozen=True, tag_field="type", tag="trading_status"):
    """A halt / resume notice (Alpaca ``T:"s"``)."""

    status_code: str
    status_message: str
    reason_code: str
    reason_message: str
    tape: str = ""


IngestState = Literal["connecting", "healthy", "degraded", "auth_failed", "connection_limited"]


class IngestStatus(msgspec.Struct, frozen=True, tag_field="type", tag="ingest_status"):
    """Heartbeat of the ingest process on ``torghut.status.v1`` (symbol ``__ingest__``).

    ``caught_up_at``: the ingest had read from the websocket everything sent before this wall
    time, and handed it on to its Kafka producers with this heartbeat (None while it cannot
    vouch for any time: not connected yet, or just resumed from a pause). The TA flow closes a
    wholly quiet feed's bars on the wall clock only up to it (:mod:`operators.upstream`), so a
    stalled ingest is not mistaken for a quiet market.
    """

    state: IngestState
    last_message_at: datetime | None
    connected: bool
    received: dict[str, int] = {}
    published: dict[str, int] = {}
    duplicates: int = 0
    dead_letters: int = 0
    reconnects: int = 0
    detail: str = ""
    caught_up_at: datetime | None = None


# --- technical analysis (ta -> torghut.ta.*.v1, ClickHouse ta_microbars / ta_signals) --------


class Microbar(msgspec.Struct, frozen=True):
    """OHLCV of one window. ``vwap`` = Σ price·size / Σ size."""

    o: float
    h: float
    l: float  # noqa: E741 - the domain's name
    c: float
    v: float
    vwap: float | None
    count: int


class Signal(msgspec.Struct, frozen=True, gc=False):
    """Indicators at a bar close; ``None`` while an indicator is still warming up."""

    macd: float | None = None
    macd_signal: float | None = None
    macd_hist: float | None = None
    ema12: float | None = None
    ema26: float | None = None
    rsi14: float | None = None
    boll_mid: float | None = None
    boll_upper: float | None = None
    boll_lower: float | None = None
    vwap_session: float | None = None
    vwap_w5m: float | None = None
    imbalance_spread: float | None = None
    imbalance_bid_px: float | None = None
    imbalance_ask_px: float | None = None
    imbalance_bid_sz: int | None = None
    imbalance_ask_sz: int | None = None
    vol_realized_w60s: float | None = None
    close: float | None = None


class TaStatus(msgspec.Struct, frozen=True):
    """Progress of the TA flow on the compacted ``torghut.ta.status.v1`` (symbol ``__ta__``)."""

    watermark: datetime | None
    lag_ms: int | None
    bars: int = 0
    signals: int = 0
    late_corrections: int = 0
    dead_letters: int = 0
    last_snapshot_at: datetime | None = None
    last_backup_at: datetime | None = None


StatusPayload = TradingStatus | IngestStatus
"""``torghut.status.v1`` carries both, told apart by their ``type`` tag."""

TOPIC_PAYLOADS: dict[str, type] = {
    "trades": Trade,
    "quotes": Quote,
    "bars": Bar,
    "status": StatusPayload,  # type: ignore[dict-item]
    "ta.bars.1s": Microbar,
    "ta.signals": Signal,
    "ta.status": TaStatus,
}
"""Payload type per topic family (``torghut.<family>.v1``)."""
