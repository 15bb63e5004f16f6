"""The 1-second microbar operator: decode trade batches, pre-aggregate, merge on keyed state.

Shape (issue #4 "design for batches", ``shared/style.md`` on ``reduce_final``):

1. ``flat_map_batch`` decodes a whole input batch with msgspec (a struct naming only the
   fields a bar needs) and reduces it per (symbol, second) as
   :func:`~torghut.ta.microbars.preaggregate` does: compiled (:func:`preaggregate_batch`)
   for a well-formed batch in any order, in Python (:func:`decode_trades` + ``preaggregate``,
   which also dead-letters with a reason) otherwise. It emits, per key group
   (:mod:`operators.key_groups`), the :class:`~torghut.ta.microbars.SymbolBatch` es of the
   group's symbols, plus dead letters.
2. ``stateful_batch`` keyed by key group merges those into one
   :class:`~torghut.ta.microbars.SymbolBars` per symbol and emits ``Envelope[Microbar]`` s as
   bars close. Timers (``notify_at``) close the bars of a symbol that went quiet: once the
   bar end plus ``idle_close_ms`` has passed on the wall clock **and** the symbol received
   nothing for ``idle_close_ms``. The second condition keeps replays deterministic: while a
   backlog is being read every active symbol keeps receiving data, so bars close by event
   time only. Arrival times are not part of the snapshot: after a restart the idle clock
   starts anew.

Not Bytewax's ``EventClock`` windows: they busy-spin and misjudge lateness in replays
(``shared/bytewax-notes.md`` §1.6).

Output identity (what makes replays idempotent in ClickHouse): key ``(symbol, event_ts, seq)``
with ``seq = end_ms * 10 + lane`` (:func:`lane_seq`), content a pure function of the input.
``ingest_ts`` is wall-clock time, strictly increasing per symbol (ms resolution), so a
correction always replaces the version it corrects under ``ReplacingMergeTree(ingest_ts)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeGuard

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from operators._reduce import reduce_trades
from operators.key_groups import key_group
from operators.ta_status import TaProgress
from torghut.config import TaSettings
from torghut.dead_letters import DeadLetter
from torghut.events import Envelope, Microbar, Window
from torghut.logs import get_logger
from torghut.ta.microbars import (
    US_PER_S,
    Applied,
    ClosedBar,
    DeadTrades,
    Rejected,
    SymbolBars,
    SymbolBarsState,
    SymbolBatch,
    Tick,
    preaggregate,
)

__all__ = [
    "LANES",
    "SOURCE",
    "TRADE_WIRE",
    "MicrobarGroupState",
    "MicrobarLogic",
    "MicrobarStreams",
    "decode_trades",
    "lane_seq",
    "microbars",
    "preaggregate_batch",
    "raw_values",
    "rfc3339_micros",
    "rfc3339_micros_many",
    "soonest",
    "us_to_dt",
    "wall_micros",
]

SOURCE = "torghut-ta"
LANES = {"PT1S": 1, "PT1M": 2}
"""Window sizes of the TA lanes and their digit in ``seq``."""

_STAGE = "ta_microbars"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_LOG_SAMPLE = 20

log = get_logger("operators.microbars")


def lane_seq(end_us: int, window: str) -> int:
    """``seq`` of a TA row: bar end in ms × 10 + lane digit.

    Unique per (symbol, event_ts) across lanes (a 1 s and a 1 min bar can end at the same
    instant and ``ta_signals``' key has no window column), identical for every version of a
    bar, and increasing with event time within a lane.
    """
    return (end_us // 1000) * 10 + LANES.get(window, 9)


def us_to_dt(ts_us: int) -> datetime:
    return _EPOCH + ts_us * _ONE_US


# --- decoding -------------------------------------------------------------------------------

_SECONDS: dict[str, int] = {}
_SECONDS_MAX = 100_000


def rfc3339_micros(s: str) -> int:
    """Microseconds since the Unix epoch of an RFC 3339 timestamp with a time zone.

    Why not let msgspec build a ``datetime``: creating one object per message and converting
    it back to an integer was the largest single cost of decoding on the hot path. The fast
    path takes the UTC form every Torghut producer writes (``2026-01-05T14:30:00.123456Z``):
    the whole-second prefix is converted once and cached, the fraction is read as digits
    (beyond microseconds it is truncated). Anything else goes through
    ``datetime.fromisoformat``; a timestamp without a time zone raises ``ValueError``.
    """
    n = len(s)
    if n >= 20 and s[-1] == "Z" and s[19] in ".Z":
        prefix = s[:19]
        base = _SECONDS.get(prefix)
        if base is None:
            if len(_SECONDS) >= _SECONDS_MAX:
                _SECONDS.clear()
            secs = int(datetime.fromisoformat(prefix + "+00:00").timestamp())
            base = _SECONDS[prefix] = secs * US_PER_S
        if n == 20:
            return base
        frac = s[20:-1]
        if 0 < len(frac) <= 9 and frac.isascii() and frac.isdigit():
            return base + int((frac + "00000")[:6])
    ts = datetime.fromisoformat(s)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {s!r}")
    return math.floor(ts.timestamp()) * US_PER_S + ts.microsecond


def rfc3339_micros_many(texts: list[str]) -> list[int | None]:
    """:func:`rfc3339_micros` over a batch, ``None`` where a text is not a valid timestamp.

    One call per batch: the common ``…SS.ffffffZ`` form whose second is already cached is
    handled in this loop without a function call per message.
    """
    out: list[int | None] = []
    append, cached = out.append, _SECONDS.get
    for s in texts:
        if len(s) == 27 and s[26] == "Z" and s[19] == ".":
            base = cached(s[:19])
            frac = s[20:26]
            if base is not None and frac.isascii() and frac.isdigit():
                append(base + int(frac))
                continue
        try:
            append(rfc3339_micros(s))
        except ValueError:
            append(None)
    return out


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


def raw_values(batch: list[Any]) -> list[Any]:
    """Message values of a batch of Kafka messages; bytes and envelopes pass through."""
    if batch and hasattr(batch[0], "offset"):  # KafkaSourceMessage
        return [m.value for m in batch]
    return batch


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
            dead.append(DeadLetter(_STAGE, "invalid_message", error, raw, datetime.now(UTC)))
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
            dead.append(DeadLetter(_STAGE, "invalid_message", "empty or non-bytes value", b"", now))
            continue
        try:
            wires.append(TRADE_WIRE.decode(v))
            kept.append(v)
        except msgspec.DecodeError as exc:
            dead.append(DeadLetter(_STAGE, "invalid_message", str(exc)[:300], v, now))
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


# --- the operator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MicrobarStreams:
    """Closed 1 s bars (first versions and corrections) and everything dead-lettered."""

    bars: Stream[Envelope[Microbar]]
    dead_letters: Stream[DeadLetter]


@operator
def microbars(
    step_id: str,
    trades: Stream[Any],
    settings: TaSettings,
    progress: TaProgress,
) -> MicrobarStreams:
    """1 s microbars from a stream of trade messages (Kafka messages, bytes or envelopes).

    >>> # flow: bars = microbars("bars_1s", trades, settings.ta, TaProgress()).bars
    """
    lateness = settings.allowed_lateness_ms * 1000
    horizon = settings.correction_horizon_s * US_PER_S
    idle_us = settings.idle_close_ms * 1000
    allow = frozenset(settings.symbol_allowlist) or None
    pre = op.flat_map_batch(
        "preaggregate", trades, lambda batch: _preaggregate(batch, lateness, allow, progress)
    )
    split = op.branch("split_rejects", pre, _is_dead_letter)
    keyed: Stream[tuple[str, list[SymbolBatch]]] = split.falses  # type: ignore[assignment]
    out = op.stateful_batch(
        "bars",
        keyed,
        lambda resume: MicrobarLogic(lateness, horizon, idle_us, progress, resume),
    )
    done = op.key_rm("unkey", out)
    bars_or_dead = op.branch("split_dead", done, _is_envelope)
    bars: Stream[Envelope[Microbar]] = bars_or_dead.trues
    late_dead = op.map("dead_trades", bars_or_dead.falses, _dead_letter_of)
    dead = op.merge("dead_letters", split.trues, late_dead)
    return MicrobarStreams(bars, dead)


def _is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    return isinstance(item, DeadLetter)


def _is_envelope(item: object) -> TypeGuard[Envelope[Microbar]]:
    return isinstance(item, Envelope)


def _preaggregate(
    batch: list[Any], lateness: int, allow: frozenset[str] | None, progress: TaProgress
) -> Iterable[tuple[str, list[SymbolBatch]] | DeadLetter]:
    """One batch of trade messages → per key group, the batch's partials of its symbols."""
    values = raw_values(batch)
    fast = preaggregate_batch(values, lateness, allow)
    dead: list[DeadLetter] = []
    rejected: list[Rejected] = []
    if fast is None:
        progress.add_batch("python")
        ticks, dead = decode_trades(values)
        per_symbol, rejected, duplicates = preaggregate(ticks, lateness, allow)
    else:
        progress.add_batch("compiled")
        per_symbol, duplicates = fast
    if duplicates:
        progress.add_duplicates(duplicates)
    groups: dict[str, list[SymbolBatch]] = {}
    for sym, symbol_batch in per_symbol.items():
        group = key_group(sym)
        held = groups.get(group)
        if held is None:
            groups[group] = [symbol_batch]
        else:
            held.append(symbol_batch)
    out: list[tuple[str, list[SymbolBatch]] | DeadLetter] = list(groups.items())
    if dead:
        _count_dead(progress, "invalid_message", len(dead))
        out.extend(dead)
    if rejected:
        now = datetime.now(UTC)
        for r in rejected:
            _count_dead(progress, r.reason, 1)
            t = r.tick
            out.append(
                DeadLetter(
                    _STAGE,
                    r.reason,
                    f"price={t.price!r} size={t.size!r}",
                    msgspec.json.encode(t._asdict()),
                    now,
                    symbol=t.symbol,
                )
            )
    return out


def _count_dead(progress: TaProgress, reason: str, n: int) -> None:
    progress.add_dead_letters(reason, n)
    if progress.dead_letters <= _LOG_SAMPLE:
        log.warning("ta_dead_letter", reason=reason, count=n)


def _dead_letter_of(d: object) -> DeadLetter:
    assert isinstance(d, DeadTrades)
    return DeadLetter(
        _STAGE,
        d.reason,
        f"{d.trades} trade(s) of the bar ending {us_to_dt(d.end_us).isoformat()} arrived "
        "after the correction horizon",
        msgspec.json.encode(d._asdict()),
        datetime.now(UTC),
        symbol=d.symbol,
    )


class MicrobarGroupState(NamedTuple):
    """Picklable snapshot of :class:`MicrobarLogic`: the bars of each symbol of the group."""

    symbols: dict[str, SymbolBarsState]


def wall_micros() -> int:
    """The wall clock in µs since the epoch (what the idle timers compare bar ends with)."""
    return time.time_ns() // 1000


def soonest(dues: Iterable[int | None]) -> datetime | None:
    """The earliest of the due times (µs; None: nothing due) as a ``notify_at`` answer."""
    times = [due for due in dues if due is not None]
    return us_to_dt(min(times)) if times else None


class MicrobarLogic(StatefulBatchLogic[list[SymbolBatch], Any, MicrobarGroupState]):
    """Keyed state of one key group: a :class:`SymbolBars` per symbol, timers, envelopes.

    A symbol's open bars close on the wall clock once the bar end plus ``idle_us`` has passed
    **and** the symbol received nothing for ``idle_us``; the second condition keeps replays
    deterministic (while a backlog is read every active symbol keeps receiving data, so bars
    close by event time only). Arrival times are not snapshotted: after a restart the idle
    clock starts anew.
    """

    def __init__(
        self,
        lateness_us: int,
        horizon_us: int,
        idle_us: int,
        progress: TaProgress,
        resume: MicrobarGroupState | None,
    ) -> None:
        self._lateness = lateness_us
        self._horizon = horizon_us
        self._idle = idle_us
        self._progress = progress
        self._symbols: dict[str, SymbolBars] = {}
        self._arrivals: dict[str, int] = {}
        self._ingest_ms: dict[str, int] = {}
        if resume is not None:
            now = wall_micros()
            for sym, state in resume.symbols.items():
                self._symbols[sym] = SymbolBars.restore(state, lateness_us, horizon_us)
                self._arrivals[sym] = now

    def on_batch(self, values: list[list[SymbolBatch]]) -> tuple[list[Any], bool]:
        symbols, arrivals = self._symbols, self._arrivals
        out = Applied()
        now = wall_micros()
        newest: int | None = None
        for batch in values:
            for symbol_batch in batch:
                sym = symbol_batch.symbol
                bars = symbols.get(sym)
                if bars is None:
                    bars = symbols[sym] = SymbolBars(sym, self._lateness, self._horizon)
                wm = bars.apply(symbol_batch, out)
                arrivals[sym] = now
                if newest is None or wm > newest:
                    newest = wm
        if newest is not None:
            self._progress.observe_watermark(newest)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Any], bool]:
        now = wall_micros()
        out = Applied()
        for sym, bars in self._symbols.items():
            due = self._due_us(sym, bars)
            if due is not None and now >= due:
                bars.close_idle(out)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        """End of input (tests, benchmarks, a clean stop): publish what is still open."""
        out = Applied()
        for bars in self._symbols.values():
            bars.close_idle(out)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return soonest(self._due_us(sym, bars) for sym, bars in self._symbols.items())

    def snapshot(self) -> MicrobarGroupState:
        return MicrobarGroupState({sym: bars.snapshot() for sym, bars in self._symbols.items()})

    def _due_us(self, sym: str, bars: SymbolBars) -> int | None:
        oldest_end = bars.oldest_open_end_us
        if oldest_end is None:
            return None
        arrival = self._arrivals.get(sym, 0)
        return (arrival if arrival > oldest_end else oldest_end) + self._idle

    def _emit(self, out: Applied) -> list[Any]:
        if out.duplicates:
            self._progress.add_duplicates(out.duplicates)
        if not out.bars and not out.dead:
            return []
        now_ms = time.time_ns() // 1_000_000
        last = self._ingest_ms
        items: list[Any] = []
        for b in out.bars:
            # strictly increasing per symbol: a correction always outranks what it corrects
            ingest_ms = last[b.symbol] = max(now_ms, last.get(b.symbol, 0) + 1)
            items.append(_envelope(b, us_to_dt(ingest_ms * 1000)))
        corrected = out.corrections
        self._progress.add_bars("PT1S", len(out.bars) - corrected, corrected)
        if out.dead:
            for d in out.dead:
                _count_dead(self._progress, d.reason, d.trades)
            items.extend(out.dead)
        return items


def _envelope(b: ClosedBar, ingest: datetime) -> Envelope[Microbar]:
    end = us_to_dt(b.end_us)
    return Envelope(
        event_ts=end,
        ingest_ts=ingest,
        symbol=b.symbol,
        seq=lane_seq(b.end_us, "PT1S"),
        payload=Microbar(o=b.o, h=b.h, l=b.l, c=b.c, v=b.v, vwap=b.vwap, count=b.n),
        is_final=True,
        source=SOURCE,
        window=Window(size="PT1S", start=end - timedelta(seconds=1), end=end),
        version=b.version,
    )
