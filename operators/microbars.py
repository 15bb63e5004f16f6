"""The 1-second microbar operator: decode trade batches, pre-aggregate, merge on keyed state.

Shape (issue #4 "design for batches", ``shared/style.md`` on ``reduce_final``):

1. ``flat_map_batch`` decodes a whole input batch with msgspec (a struct naming only the
   fields a bar needs; timestamps parsed by :func:`rfc3339_micros`) into tick tuples and
   reduces it per (symbol, second) with :func:`~torghut.ta.microbars.preaggregate`; it emits one
   :class:`~torghut.ta.microbars.SymbolBatch` per symbol and batch, plus dead letters.
2. ``stateful_batch`` keyed by symbol merges those into
   :class:`~torghut.ta.microbars.SymbolBars` and emits ``Envelope[Microbar]`` s as bars close.
   Timers (``notify_at``) close the bars of a symbol that went quiet: once the bar end plus
   ``idle_close_ms`` has passed on the wall clock **and** the symbol received nothing for
   ``idle_close_ms``. The second condition keeps replays deterministic: while a backlog is
   being read every active symbol keeps receiving data, so bars close by event time only.
   The arrival time is not part of the snapshot: after a restart the idle clock starts anew.

Not Bytewax's ``EventClock`` windows: they busy-spin and misjudge lateness in replays
(``shared/bytewax-notes.md`` §1.6).

Output identity (what makes replays idempotent in ClickHouse): key ``(symbol, event_ts, seq)``
with ``seq = end_ms * 10 + lane`` (:func:`lane_seq`), content a pure function of the input.
``ingest_ts`` is wall-clock time, strictly increasing per symbol (ms resolution), so a
correction always replaces the version it corrects under ``ReplacingMergeTree(ingest_ts)``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import add, le
from typing import Any, TypeGuard

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

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
    SymbolBars,
    SymbolBarsState,
    SymbolBatch,
    Tick,
    preaggregate,
    preaggregate_ordered,
)

__all__ = [
    "LANES",
    "SOURCE",
    "MicrobarLogic",
    "MicrobarStreams",
    "decode_trades",
    "lane_seq",
    "microbars",
    "raw_values",
    "rfc3339_micros",
    "rfc3339_micros_many",
    "uniform_utc_micros",
    "us_to_dt",
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


_UNIFORM = "dddd-dd-ddTdd:dd:dd.ddddddZ"
_UNIFORM_LEN = len(_UNIFORM)


def uniform_utc_micros(texts: list[str], *, whole_seconds: bool = False) -> bool:
    """True when every text reads ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` with a non-zero fraction.

    Why: a batch in this one fixed-width form (what msgspec writes for a UTC time with
    microseconds) can be grouped per second by the 19-character prefix and ordered by plain
    string comparison, with no per-message parsing. The check is a few C-level scans of the
    joined batch, one per character column. It does not validate the calendar: the caller
    still converts every distinct prefix (:func:`rfc3339_micros`), which refuses bad dates.
    A whole second (``.000000``) is excluded unless ``whole_seconds``: its ``(s-1, s]``
    bucket (quotes) is not the one its prefix names.
    """
    n = len(texts)
    joined = "".join(texts)
    if len(joined) != _UNIFORM_LEN * n or not joined.isascii():
        return False
    if not whole_seconds and ".000000Z" in joined:
        return False
    for at, form in enumerate(_UNIFORM):
        column = joined[at::_UNIFORM_LEN]
        if not (column.isdigit() if form == "d" else column.count(form) == n):
            return False
    return True


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


_ONE = msgspec.json.Decoder(_TradeWire)


def raw_values(batch: list[Any]) -> list[Any]:
    """Message values of a batch of Kafka messages; bytes and envelopes pass through."""
    if batch and hasattr(batch[0], "offset"):  # KafkaSourceMessage
        return [m.value for m in batch]
    return batch


def decode_trades(values: list[Any]) -> tuple[list[Tick], list[DeadLetter]]:
    """Decode ``Envelope[Trade]`` JSON values (or envelopes already decoded) to ticks.

    The happy path maps the decoder over the batch with no per-message Python frame (joining
    the batch into one JSON array was slower: the large buffer costs more than the calls it
    saves); if any message is bad the batch is decoded again message by message so that only
    the bad ones are dead-lettered.
    """
    if not values:
        return [], []
    if isinstance(values[0], Envelope):
        return [_tick_of_envelope(e) for e in values], []
    try:
        wires = list(map(_ONE.decode, values))
    except (msgspec.DecodeError, TypeError):
        return _decode_each(values)
    return _ticks(wires, values)


def _ticks(wires: list[_TradeWire], values: list[Any]) -> tuple[list[Tick], list[DeadLetter]]:
    ordered = _ticks_in_order(wires)
    if ordered is not None:
        return ordered, []
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


def _ticks_in_order(wires: list[_TradeWire]) -> list[Tick] | None:
    """Ticks of a batch with uniform, ordered timestamps and no null price or size; else None.

    Why: built column by column (C-level ``map``/``zip``), with one timestamp conversion per
    distinct second (found by bisection in the sorted texts) instead of one per trade.
    """
    texts = [w.event_ts for w in wires]
    if not texts:
        return None
    if not uniform_utc_micros(texts, whole_seconds=True):
        # msgspec writes a whole second without a fraction: give it the uniform form
        texts = [t[:19] + ".000000Z" if len(t) == 20 and t[19] == "Z" else t for t in texts]
        if not uniform_utc_micros(texts, whole_seconds=True):
            return None
    if not all(map(le, texts, texts[1:])):
        return None
    bodies = [w.payload for w in wires]
    prices = [b.price for b in bodies]
    sizes = [b.size for b in bodies]
    if None in prices or None in sizes:
        return None
    fractions = list(map(int, [t[20:26] for t in texts]))
    stamps: list[int] = []
    n, i = len(texts), 0
    while i < n:
        prefix = texts[i][:19]
        j = bisect_left(texts, prefix + "/", i)  # "/" sorts right after the "." of the form
        try:
            base = rfc3339_micros(prefix + "Z")
        except ValueError:
            return None
        stamps.extend(map(add, repeat(base, j - i), fractions[i:j]))
        i = j
    symbols = [w.symbol for w in wires]
    ids = [b.trade_id for b in bodies]
    exchanges = [b.exchange for b in bodies]
    return list(zip(symbols, stamps, ids, exchanges, prices, sizes, strict=True))


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
            wires.append(_ONE.decode(v))
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
    idle = timedelta(milliseconds=settings.idle_close_ms)
    allow = frozenset(settings.symbol_allowlist) or None
    pre = op.flat_map_batch(
        "preaggregate", trades, lambda batch: _preaggregate(batch, lateness, allow, progress)
    )
    split = op.branch("split_rejects", pre, _is_dead_letter)
    keyed: Stream[tuple[str, SymbolBatch]] = split.falses  # type: ignore[assignment]
    out = op.stateful_batch(
        "bars",
        keyed,
        lambda resume: MicrobarLogic(lateness, horizon, idle, progress, resume),
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
) -> Iterable[tuple[str, SymbolBatch] | DeadLetter]:
    ticks, dead = decode_trades(raw_values(batch))
    ordered = None if dead else preaggregate_ordered(ticks, lateness, allow)
    if ordered is None:
        per_symbol, rejected, duplicates = preaggregate(ticks, lateness, allow)
    else:
        (per_symbol, duplicates), rejected = ordered, []
    if duplicates:
        progress.add_duplicates(duplicates)
    out: list[tuple[str, SymbolBatch] | DeadLetter] = list(per_symbol.items())
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


class MicrobarLogic(StatefulBatchLogic[SymbolBatch, Any, SymbolBarsState]):
    """Keyed state of one symbol: wraps :class:`SymbolBars` with timers and envelopes."""

    def __init__(
        self,
        lateness_us: int,
        horizon_us: int,
        idle: timedelta,
        progress: TaProgress,
        resume: SymbolBarsState | None,
    ) -> None:
        self._lateness = lateness_us
        self._horizon = horizon_us
        self._idle = idle
        self._progress = progress
        self._bars = None if resume is None else SymbolBars.restore(resume, lateness_us, horizon_us)
        self._last_arrival = datetime.now(UTC)
        self._last_ingest_ms = 0

    def on_batch(self, values: list[SymbolBatch]) -> tuple[list[Any], bool]:
        bars = self._bars
        if bars is None:
            bars = self._bars = SymbolBars(values[0].symbol, self._lateness, self._horizon)
        out = Applied()
        for v in values:
            bars.apply(v, out)
        self._last_arrival = datetime.now(UTC)
        wm = bars.watermark_us
        if wm is not None:
            self._progress.observe_watermark(wm)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Any], bool]:
        bars = self._bars
        if bars is None or not self._idle_due(datetime.now(UTC)):
            return [], StatefulBatchLogic.RETAIN
        out = Applied()
        bars.close_idle(out)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        """End of input (tests, benchmarks, a clean stop): publish what is still open."""
        if self._bars is None:
            return [], StatefulBatchLogic.RETAIN
        out = Applied()
        self._bars.close_idle(out)
        return self._emit(out), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        bars = self._bars
        if bars is None or not bars.has_open:
            return None
        oldest_end = bars.oldest_open_end_us
        assert oldest_end is not None
        return max(self._last_arrival, us_to_dt(oldest_end)) + self._idle

    def snapshot(self) -> SymbolBarsState:
        assert self._bars is not None
        return self._bars.snapshot()

    def _idle_due(self, now: datetime) -> bool:
        due = self.notify_at()
        return due is not None and now >= due

    def _emit(self, out: Applied) -> list[Any]:
        if out.duplicates:
            self._progress.add_duplicates(out.duplicates)
        if not out.bars and not out.dead:
            return []
        now_ms = math.floor(datetime.now(UTC).timestamp() * 1000)
        ingest_ms = self._last_ingest_ms = max(now_ms, self._last_ingest_ms + 1)
        ingest = us_to_dt(ingest_ms * 1000)
        items: list[Any] = [_envelope(b, ingest) for b in out.bars]
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
