"""Indicator operators: quotes and bars of one (symbol, window size) into ``Envelope[Signal]``.

The maths is :class:`torghut.ta.indicators.IndicatorEngine` (pure, O(1) per bar); this module
only routes and wraps it:

* state is keyed by ``f"{symbol}|{window}"`` (:func:`lane_key`), so the 1 s microbar lane and
  the 1 min Alpaca-bar lane never share indicator state;
* quotes are decoded a batch at a time and reduced to the latest quote per (symbol, second
  bucket ``(s-1, s]``) before the keyed step — only those can ever be "the latest quote at or
  before" a bar end on either lane's grid — and each reduced batch goes to every lane key of
  the symbol (:func:`quote_updates`). Only the kept quotes' payloads are parsed (the envelope
  is decoded with the payload as ``msgspec.Raw``): a superseded quote cannot influence any
  output, and parsing every payload was half the cost of the quote path. A kept payload that
  does not parse is dead-lettered;
* a bar that repeats the latest bar's end (a corrected microbar, an Alpaca ``updated_bar``)
  re-emits that bar's signal with a higher ``version``; identical repeats are dropped as
  duplicates; a correction of an older bar cannot be replayed by the engine and is counted
  (``stale_correction``), its microbar correction still reaches ``ta_microbars``.

Snapshots are the engine's pickled bytes (cheap for Bytewax to deep-copy every epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import add, le
from typing import Any, NamedTuple, TypeGuard

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from operators.microbars import (
    SOURCE,
    MicrobarStreams,
    lane_seq,
    microbars,
    raw_values,
    rfc3339_micros,
    rfc3339_micros_many,
    uniform_utc_micros,
    us_to_dt,
)
from operators.ta_status import TaProgress
from torghut.config import TaSettings
from torghut.dead_letters import DeadLetter
from torghut.events import Bar, Envelope, Microbar, Quote, Signal, Window
from torghut.ta.indicators import IndicatorEngine, InvalidBar
from torghut.ta.instants import epoch_micros

__all__ = [
    "IndicatorLogic",
    "IndicatorState",
    "QuoteUpdate",
    "TaOutputs",
    "alpaca_minute_bars",
    "indicators",
    "lane_key",
    "quote_updates",
    "ta_pipeline",
]

_STAGE = "ta_indicators"
_US = 1_000_000


def lane_key(symbol: str, window: str) -> str:
    """The indicator state key: one per (symbol, window size)."""
    return f"{symbol}|{window}"


class QuoteUpdate(NamedTuple):
    """Latest quotes of one symbol per second bucket from one input batch, for one lane.

    ``max_ts_us`` is the newest quote time of the symbol in the batch (kept or not): it drives
    the quote watermark that releases buffered bars.
    """

    symbol: str
    lane: str
    quotes: list[tuple[datetime, Quote]]
    max_ts_us: int


class _QuoteWire(msgspec.Struct, gc=False):
    """Envelope fields that decide which quotes matter; the payload is parsed only if kept."""

    event_ts: str
    symbol: str
    payload: msgspec.Raw


_Q_ONE = msgspec.json.Decoder(_QuoteWire)
_Q_PAYLOAD = msgspec.json.Decoder(Quote)
_BAR = msgspec.json.Decoder(Envelope[Bar])


@dataclass(frozen=True)
class TaOutputs:
    """Streams of the TA pipeline, ready for sinks."""

    microbars: Stream[Envelope[Microbar]]
    signals: Stream[Envelope[Signal]]
    dead_letters: Stream[DeadLetter]


@operator
def ta_pipeline(
    step_id: str,
    trades: Stream[Any],
    quotes: Stream[Any],
    bars: Stream[Any] | None,
    settings: TaSettings,
    progress: TaProgress,
) -> TaOutputs:
    """Trades, quotes and (optionally) Alpaca minute bars → microbars, signals, dead letters.

    Inputs may be Kafka messages, their ``bytes`` values or decoded envelopes, so the same
    pipeline runs on Kafka topics and in an all-in-one embedded flow.

    >>> # out = ta_pipeline("ta", trades, quotes, bars, settings.ta, TaProgress())
    >>> # op.output("bars_out", out.microbars, sink)  # and out.signals, out.dead_letters
    """
    lanes = ("PT1S", "PT1M") if bars is not None else ("PT1S",)
    mb: MicrobarStreams = microbars("microbars", trades, settings, progress)
    q = quote_updates("quotes", quotes, lanes, settings, progress)
    lane_bars = [op.key_on("key_1s", mb.bars, lambda e: lane_key(e.symbol, "PT1S"))]
    dead = [mb.dead_letters, q.dead_letters]
    if bars is not None:
        minute = alpaca_minute_bars("minute_bars", bars, progress)
        lane_bars.append(op.key_on("key_1m", minute.bars, lambda e: lane_key(e.symbol, "PT1M")))
        dead.append(minute.dead_letters)
    sig = indicators("signals", op.merge("lane_inputs", q.updates, *lane_bars), settings, progress)
    dead.append(sig.dead_letters)
    return TaOutputs(mb.bars, sig.signals, op.merge("dead_letters", *dead))


@dataclass(frozen=True)
class QuoteStreams:
    updates: Stream[tuple[str, QuoteUpdate]]
    dead_letters: Stream[DeadLetter]


@operator
def quote_updates(
    step_id: str,
    quotes: Stream[Any],
    lanes: tuple[str, ...],
    settings: TaSettings,
    progress: TaProgress,
) -> QuoteStreams:
    """Decode quote batches and keep the latest quote per (symbol, second bucket) per batch."""
    allow = frozenset(settings.symbol_allowlist) or None

    def reduce(batch: list[Any]) -> list[tuple[str, QuoteUpdate] | DeadLetter]:
        return _reduce_quotes(raw_values(batch), lanes, allow, progress)

    reduced = op.flat_map_batch("reduce", quotes, reduce)
    split = op.branch("split_dead", reduced, _is_dead_letter)
    return QuoteStreams(split.falses, split.trues)  # type: ignore[arg-type]


_Latest = dict[str, dict[int, tuple[int, Any]]]
"""Per symbol, per second bucket: (event time in µs, payload) of the latest quote."""


def _reduce_quotes(
    values: list[Any], lanes: tuple[str, ...], allow: frozenset[str] | None, progress: TaProgress
) -> list[tuple[str, QuoteUpdate] | DeadLetter]:
    dead: list[DeadLetter] = []
    if values and isinstance(values[0], Envelope):
        triples: list[tuple[str, Any, Any]] = [(e.symbol, e.event_ts, e.payload) for e in values]
        latest = _latest_each(triples, allow, dead)
    else:
        wires, dead = _decode_quotes(values)
        found = None if dead else _latest_in_order(wires, allow)
        if found is None:
            found = _latest_each([(w.symbol, w.event_ts, w.payload) for w in wires], allow, dead)
        latest = found
    out: list[tuple[str, QuoteUpdate] | DeadLetter] = []
    append = out.append
    for sym, per in latest.items():
        qs = []
        newest = -1 << 63
        for ts_us, payload in per.values():
            if ts_us > newest:
                newest = ts_us
            if isinstance(payload, Quote):
                qs.append((us_to_dt(ts_us), payload))
                continue
            try:
                qs.append((us_to_dt(ts_us), _Q_PAYLOAD.decode(payload)))
            except msgspec.DecodeError as exc:
                dead.append(_dead("invalid_message", sym, bytes(payload), str(exc)))
        for lane in lanes:
            append((lane_key(sym, lane), QuoteUpdate(sym, lane, qs, newest)))
    if dead:
        progress.add_dead_letters("invalid_quote", len(dead))
        out.extend(dead)
    return out


def _latest_in_order(wires: list[_QuoteWire], allow: frozenset[str] | None) -> _Latest | None:
    """The latest quotes of a batch whose times are uniform and in order; None otherwise.

    Why: this is the common case (one feed, written in arrival order) and it needs no Python
    per quote. In a batch ordered by event time the last quote of each (symbol, second) is its
    latest, so a dict built in C from ``(symbol, second prefix) -> index`` finds them all; only
    the kept quotes are then parsed. Anything unusual (other timestamp forms, a time going
    backwards, a symbol outside the allowlist, a date that does not parse) returns None and
    the batch takes :func:`_latest_each`, which handles and dead-letters each quote.
    """
    texts = [w.event_ts for w in wires]
    if not texts or not uniform_utc_micros(texts) or not all(map(le, texts, texts[1:])):
        return None
    symbols = [w.symbol for w in wires]
    if allow is not None and not allow.issuperset(symbols):
        return None
    keys = map(add, [t[:19] for t in texts], symbols)  # strings: no tracked tuple per quote
    last = dict(zip(keys, range(len(texts)), strict=True))
    seconds: dict[str, int] = {}
    latest: _Latest = {}
    for key, i in last.items():
        prefix, sym = key[:19], symbols[i]
        base = seconds.get(prefix)
        if base is None:
            try:
                base = seconds[prefix] = rfc3339_micros(prefix + "Z")
            except ValueError:
                return None
        per = latest.get(sym)
        if per is None:
            per = latest[sym] = {}
        per[base // _US + 1] = (base + int(texts[i][20:26]), wires[i].payload)
    return latest


def _latest_each(
    triples: list[tuple[str, Any, Any]], allow: frozenset[str] | None, dead: list[DeadLetter]
) -> _Latest:
    """The latest quote per (symbol, second bucket), one quote at a time, in any order."""
    latest: _Latest = {}
    stamps = _stamps([ts for _, ts, _ in triples])
    for (sym, ts_raw, payload), ts_us in zip(triples, stamps, strict=True):
        if ts_us is None:
            error = f"not an RFC 3339 timestamp with a time zone: {str(ts_raw)[:64]!r}"
            dead.append(_dead("invalid_message", sym, _raw(payload), error))
            continue
        if allow is not None and sym not in allow:
            dead.append(_dead("unknown_symbol", sym, _raw(payload)))
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


def _decode_quotes(values: list[Any]) -> tuple[list[_QuoteWire], list[DeadLetter]]:
    if not values:
        return [], []
    try:
        return list(map(_Q_ONE.decode, values)), []
    except (msgspec.DecodeError, TypeError):
        pass
    wires: list[_QuoteWire] = []
    dead: list[DeadLetter] = []
    for v in values:
        try:
            wires.append(_Q_ONE.decode(v))
        except (msgspec.DecodeError, TypeError) as exc:
            raw = v if isinstance(v, bytes) else b""
            dead.append(_dead("invalid_message", None, raw, str(exc)))
    return wires, dead


@dataclass(frozen=True)
class MinuteBarStreams:
    bars: Stream[Envelope[Microbar]]
    dead_letters: Stream[DeadLetter]


@operator
def alpaca_minute_bars(
    step_id: str, alpaca_bars: Stream[Any], progress: TaProgress
) -> MinuteBarStreams:
    """Alpaca ``bar`` / ``updated_bar`` messages as PT1M ``Envelope[Microbar]`` s.

    Daily bars are not a lane and are skipped.
    """

    def convert(batch: list[Any]) -> list[Envelope[Microbar] | DeadLetter]:
        out: list[Envelope[Microbar] | DeadLetter] = []
        for v in raw_values(batch):
            try:
                env = v if isinstance(v, Envelope) else _BAR.decode(v)
            except (msgspec.DecodeError, TypeError) as exc:
                progress.add_dead_letters("invalid_message")
                out.append(
                    _dead("invalid_message", None, v if isinstance(v, bytes) else b"", str(exc))
                )
                continue
            b = env.payload
            if b.kind == "daily_bar":
                continue
            end = env.event_ts
            out.append(
                Envelope(
                    event_ts=end,
                    ingest_ts=env.ingest_ts,
                    symbol=env.symbol,
                    seq=env.seq,
                    payload=Microbar(
                        b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count
                    ),
                    source=env.source,
                    window=Window("PT1M", start=env.window.start if env.window else None, end=end),
                    version=env.version,
                )
            )
        return out

    converted = op.flat_map_batch("convert", alpaca_bars, convert)
    split = op.branch("split_dead", converted, _is_dead_letter)
    return MinuteBarStreams(split.falses, split.trues)  # type: ignore[arg-type]


@dataclass(frozen=True)
class IndicatorStreams:
    signals: Stream[Envelope[Signal]]
    dead_letters: Stream[DeadLetter]


@operator
def indicators(
    step_id: str,
    keyed: Stream[tuple[str, Any]],
    settings: TaSettings,
    progress: TaProgress,
) -> IndicatorStreams:
    """Signals from lane-keyed bars (``Envelope[Microbar]``) and :class:`QuoteUpdate` s."""
    out = op.stateful_batch(
        "engine", keyed, lambda resume: IndicatorLogic(settings, progress, resume)
    )
    done = op.key_rm("unkey", out)
    split = op.branch("split_dead", done, _is_dead_letter)
    return IndicatorStreams(split.falses, split.trues)


class IndicatorState(NamedTuple):
    """Picklable snapshot of :class:`IndicatorLogic`."""

    symbol: str
    lane: str
    engine: bytes
    last_end_us: int | None
    last_version: int
    last_bar: Microbar | None
    pending: tuple[Envelope[Microbar], ...]
    quote_max_us: int | None


class IndicatorLogic(StatefulBatchLogic[Any, Any, IndicatorState]):
    """One :class:`IndicatorEngine` per (symbol, window) key, plus what versioning needs.

    Bars wait until the symbol's quotes are complete up to the bar end: the quote watermark
    (newest quote time − allowed lateness) must reach it. Bars and quotes come from different
    topics, read at different paces; without the wait, the imbalance fields of a signal
    would depend on which topic happened to be read further, and a replay would not rewrite
    the same rows. A symbol whose quotes stall or stop releases its bars ``idle_close_ms``
    after the oldest one arrived (wall clock), and end of input releases everything.
    """

    def __init__(
        self, settings: TaSettings, progress: TaProgress, resume: IndicatorState | None
    ) -> None:
        self._settings = settings
        self._progress = progress
        self._lateness_us = settings.allowed_lateness_ms * 1000
        self._release_after = timedelta(milliseconds=settings.idle_close_ms)
        self._engine: IndicatorEngine | None = None
        self._symbol = ""
        self._lane = ""
        self._last_end_us: int | None = None
        self._last_version = 0
        self._last_bar: Microbar | None = None
        self._last_ingest_ms = 0
        self._pending: list[Envelope[Microbar]] = []
        self._pending_since: datetime | None = None
        self._quote_max_us: int | None = None
        if resume is not None:
            self._engine = IndicatorEngine.restore(resume.engine)
            self._symbol, self._lane = resume.symbol, resume.lane
            self._last_end_us, self._last_version = resume.last_end_us, resume.last_version
            self._last_bar = resume.last_bar
            self._pending = list(resume.pending)
            self._quote_max_us = resume.quote_max_us
            if self._pending:
                self._pending_since = datetime.now(UTC)

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        for v in values:
            if isinstance(v, QuoteUpdate):
                engine = self._engine_for(v.symbol, v.lane)
                for ts, q in v.quotes:
                    engine.on_quote(ts, q)
                if self._quote_max_us is None or v.max_ts_us > self._quote_max_us:
                    self._quote_max_us = v.max_ts_us
            else:
                self._engine_for(v.symbol, v.window.size if v.window is not None else "PT1S")
                if not self._pending:
                    self._pending_since = datetime.now(UTC)
                self._pending.append(v)
        if not self._pending or self._quote_max_us is None:
            return [], StatefulBatchLogic.RETAIN
        return self._release(self._quote_max_us - self._lateness_us), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Any], bool]:
        due = self.notify_at()
        if due is None or datetime.now(UTC) < due:
            return [], StatefulBatchLogic.RETAIN
        return self._release(None), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        return self._release(None), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._pending or self._pending_since is None:
            return None
        return self._pending_since + self._release_after

    def snapshot(self) -> IndicatorState:
        assert self._engine is not None
        return IndicatorState(
            self._symbol,
            self._lane,
            self._engine.snapshot(),
            self._last_end_us,
            self._last_version,
            self._last_bar,
            tuple(self._pending),
            self._quote_max_us,
        )

    def _release(self, until_us: int | None) -> list[Any]:
        """Compute the signals of pending bars ending at or before ``until_us`` (None: all)."""
        pending = self._pending
        n = 0
        for env in pending:
            e = env.event_ts
            if until_us is not None and math.floor(e.timestamp()) * _US + e.microsecond > until_us:
                break
            n += 1
        if n == 0:
            return []
        out: list[Any] = []
        for env in pending[:n]:
            self._on_bar(env, out)
        del pending[:n]
        self._pending_since = datetime.now(UTC) if pending else None
        signals = sum(1 for x in out if isinstance(x, Envelope))
        if signals:
            self._progress.add_signals(self._lane, signals)
        return out

    def _engine_for(self, symbol: str, lane: str) -> IndicatorEngine:
        if self._engine is None:
            self._engine = IndicatorEngine(lane, self._settings)
            self._symbol, self._lane = symbol, lane
        return self._engine

    def _on_bar(self, env: Envelope[Microbar], out: list[Any]) -> None:
        lane = env.window.size if env.window is not None else "PT1S"
        engine = self._engine_for(env.symbol, lane)
        end = env.event_ts
        end_us = math.floor(end.timestamp()) * _US + end.microsecond
        last = self._last_end_us
        version = env.version
        if last is not None and end_us <= last:
            if end_us < last:
                self._progress.add_skipped_bar("stale_correction")
                return
            if env.payload == self._last_bar:
                self._progress.add_skipped_bar("duplicate_bar")
                return
            version = max(version, self._last_version + 1)
        try:
            signal = engine.on_bar(end, env.payload)
        except InvalidBar as exc:
            self._progress.add_dead_letters("invalid_bar")
            out.append(_dead("invalid_bar", env.symbol, msgspec.json.encode(env), str(exc)))
            return
        if signal is None:
            return
        self._last_end_us, self._last_version, self._last_bar = end_us, version, env.payload
        now_ms = math.floor(datetime.now(UTC).timestamp() * 1000)
        self._last_ingest_ms = max(now_ms, self._last_ingest_ms + 1)
        start = us_to_dt(end_us - (60 if lane == "PT1M" else 1) * _US)
        out.append(
            Envelope(
                event_ts=end,
                ingest_ts=us_to_dt(self._last_ingest_ms * 1000),
                symbol=env.symbol,
                seq=lane_seq(end_us, lane),
                payload=signal,
                source=SOURCE,
                window=Window(size=lane, start=start, end=end),
                version=version,
            )
        )


def _is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    return isinstance(item, DeadLetter)


def _raw(payload: Any) -> bytes:
    return bytes(payload) if isinstance(payload, msgspec.Raw) else msgspec.json.encode(payload)


def _dead(reason: str, symbol: str | None, raw: bytes, error: str = "") -> DeadLetter:
    return DeadLetter(_STAGE, reason, error[:300] or reason, raw, datetime.now(UTC), symbol=symbol)
