"""All indicators of one (symbol, window size) stream, behind one O(1) ``on_bar`` call.

The TA flow keeps one :class:`IndicatorEngine` per key ``(symbol, window size)`` — the 1 s
microbar lane and the 1 min Alpaca-bar lane never share state — feeds it closed bars in event
order with :meth:`IndicatorEngine.on_bar` and the symbol's quotes with
:meth:`IndicatorEngine.on_quote`, and publishes the returned :class:`~torghut.events.Signal`.

Definitions live next to their code: ``ema12``/``ema26`` in ``ema.py``,
``macd``/``macd_signal``/``macd_hist`` in ``macd.py``, ``rsi14`` in ``rsi.py``, ``boll_*`` in
``bollinger.py``, ``vol_realized_w60s`` in ``volatility.py`` — each TA-Lib's, ``None`` exactly
where TA-Lib returns NaN, checked against TA-Lib by property tests (note that TA-Lib's MACD
seeds its own fast EMA, so ``macd`` approaches ``ema12 - ema26`` by 11/13 per bar) —
and ``vwap_session``/``vwap_w5m`` in ``vwap.py`` and ``imbalance_*`` in ``imbalance.py``,
checked against polars oracles. ``close`` is the bar's close.

Corrections. Indicators are computed on bars as they close. A bar whose end equals the latest
bar's end (a corrected microbar with a higher version, an Alpaca ``updated_bar``) *replaces*
that bar: every indicator undoes the latest input and folds the new one in, and the returned
signal is the re-emitted signal of that bar (same key, the caller raises the version). A bar
older than the latest one cannot be replayed without recomputing history, so it changes
nothing: ``on_bar`` returns ``None`` and counts it in ``stale_corrections``. The choice is
deterministic: the signal stream depends only on the order bars arrive in.

Bad input (non-finite or non-positive prices, negative or non-finite volume, naive
timestamps) raises :class:`InvalidBar` before any state changes, so the caller can dead-letter
the bar and carry on.

State is a few hundred numbers in ``__slots__`` objects (the 5-minute VWAP window holds up
to 300 one-second bars): :meth:`IndicatorEngine.snapshot` pickles it to bytes, which Bytewax
copies for free each epoch, and :meth:`IndicatorEngine.restore` rebuilds it. The pickle is
one tuple of the parts' flat tuples (``packed_state.py``), not the object graph: the TA
worker stops for every changed engine's snapshot at each epoch end.
"""

from __future__ import annotations

import math
import pickle
import re
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from torghut.config import TaSettings
from torghut.events import Microbar, Quote, Signal
from torghut.ta.bollinger import Bollinger
from torghut.ta.ema import Ema
from torghut.ta.imbalance import QuoteBook
from torghut.ta.instants import epoch_micros
from torghut.ta.macd import Macd
from torghut.ta.packed_state import rebuild, restore_slots
from torghut.ta.rsi import Rsi
from torghut.ta.volatility import RealizedVolatility
from torghut.ta.vwap import SessionClock, SessionVwap, WindowVwap

__all__ = ["IndicatorEngine", "InvalidBar", "window_micros"]

_INF = math.inf
_floor = math.floor
_NONE3: tuple[None, None, None] = (None, None, None)
_FORMAT = 1
"""Tags the flat state (:meth:`IndicatorEngine.__getstate__`); older snapshots have none."""
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


class InvalidBar(ValueError):
    """A bar the indicators cannot use; raised before any state is touched."""


def window_micros(window_size: str) -> int:
    """Length in µs of an ISO-8601 window size such as ``PT1S``, ``PT1M`` or ``PT1H30M``."""
    match = _DURATION.match(window_size)
    if match is None or not any(match.groups()):
        raise ValueError(f"window size must be an ISO-8601 duration like PT1S, got {window_size!r}")
    hours, minutes, seconds = match.groups()
    micros = round(
        (int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)) * 1_000_000
    )
    if micros <= 0:
        raise ValueError(f"window size must be positive, got {window_size!r}")
    return micros


class IndicatorEngine:
    """Incremental indicators of one (symbol, window size) stream.

    >>> from datetime import datetime, timezone
    >>> engine = IndicatorEngine("PT1S", TaSettings())
    >>> bar = Microbar(o=10.0, h=10.0, l=10.0, c=10.0, v=5.0, vwap=10.0, count=1)
    >>> signal = engine.on_bar(datetime(2026, 1, 2, 15, 0, 1, tzinfo=timezone.utc), bar)
    >>> (signal.close, signal.vwap_session, signal.ema12)
    (10.0, 10.0, None)
    """

    __slots__ = (
        "_bollinger",
        "_ema12",
        "_last_end_us",
        "_macd",
        "_quotes",
        "_rsi",
        "_session_vwap",
        "_volatility",
        "_window_vwap",
        "bars",
        "corrections",
        "stale_corrections",
        "window_size",
    )

    def __init__(
        self, window_size: str, settings: TaSettings, quotes: QuoteBook | None = None
    ) -> None:
        """``quotes``: the symbol's quotes so far, if they were kept before its first bar
        (:meth:`quote_book`); a new book otherwise."""
        self.window_size = window_size
        clock = SessionClock(
            time.fromisoformat(settings.session_start), ZoneInfo(settings.session_timezone)
        )
        self._ema12 = Ema(12)
        self._macd = Macd(12, 26, 9)
        self._rsi = Rsi(14)
        self._bollinger = Bollinger(20, 2.0)
        self._volatility = RealizedVolatility(60)
        self._session_vwap = SessionVwap(clock)
        self._window_vwap = WindowVwap(300_000_000)
        self._quotes = quotes if quotes is not None else self.quote_book(window_size, settings)
        self._last_end_us: int | None = None
        self.bars = 0
        self.corrections = 0
        self.stale_corrections = 0

    @staticmethod
    def quote_book(window_size: str, settings: TaSettings) -> QuoteBook:
        """The quote book an engine of ``window_size`` keeps (its only state fed by quotes)."""
        return QuoteBook(window_micros(window_size), settings.quote_max_age_ms * 1000)

    def on_quote(self, ts: datetime, quote: Quote) -> None:
        """Record a quote of this symbol (event time ``ts``, timezone-aware) for imbalance."""
        self._quotes.add(epoch_micros(ts), quote)

    def on_quote_us(self, ts_us: int, quote: Quote) -> None:
        """:meth:`on_quote` with the event time in µs since the epoch, as the operators hold it."""
        self._quotes.add(ts_us, quote)

    def on_bar(self, event_end: datetime, bar: Microbar) -> Signal | None:
        """Fold the bar ending at ``event_end`` in; return its signal.

        Returns ``None`` only for a correction of a bar older than the latest one (counted in
        ``stale_corrections``). Raises :class:`InvalidBar` for unusable input.
        """
        close = bar.c
        volume = bar.v
        price = bar.vwap if bar.vwap is not None else close
        if not (0.0 < close < _INF and 0.0 <= volume < _INF and 0.0 < price < _INF):
            raise InvalidBar(f"bar needs finite prices > 0 and volume >= 0, got {bar!r}")
        if event_end.tzinfo is None:
            raise InvalidBar("bar end must be timezone-aware")
        end_us = _floor(event_end.timestamp()) * 1_000_000 + event_end.microsecond  # epoch_micros
        last = self._last_end_us
        if last is not None and end_us <= last:
            if end_us < last:
                self.stale_corrections += 1
                return None
            self.corrections += 1
            return self._revise(end_us, close, price, volume)
        self._last_end_us = end_us
        self.bars += 1
        line, signal, hist = self._macd.update(close) or _NONE3
        mid, upper, lower = self._bollinger.update(close) or _NONE3
        spread, bid_px, ask_px, bid_sz, ask_sz = self._quotes.at(end_us)
        return Signal(
            line,
            signal,
            hist,
            self._ema12.update(close),
            self._macd.slow.value,
            self._rsi.update(close),
            mid,
            upper,
            lower,
            self._session_vwap.update(event_end, end_us, price, volume),
            self._window_vwap.update(end_us, price, volume),
            spread,
            bid_px,
            ask_px,
            bid_sz,
            ask_sz,
            self._volatility.update(close),
            close,
        )

    def snapshot(self) -> bytes:
        """The whole state as an immutable pickle: what a Bytewax ``snapshot()`` returns.

        Bytes because Bytewax deep-copies every snapshot, and copying bytes is free while
        deep-copying the objects (the 5-minute window holds up to 300 bars) is not.
        """
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, state: bytes) -> IndicatorEngine:
        """Rebuild an engine from :meth:`snapshot` output (Bytewax's ``resume_state``)."""
        engine = pickle.loads(state)
        if not isinstance(engine, cls):
            raise TypeError(f"not an IndicatorEngine snapshot: {type(engine).__name__}")
        return engine

    def __getstate__(self) -> tuple[Any, ...]:
        """The engine's counters and its parts' flat states, without their classes."""
        return (
            _FORMAT,
            self.window_size,
            self._last_end_us,
            self.bars,
            self.corrections,
            self.stale_corrections,
            self._ema12.__getstate__(),
            self._macd.__getstate__(),
            self._rsi.__getstate__(),
            self._bollinger.__getstate__(),
            self._volatility.__getstate__(),
            self._session_vwap.__getstate__(),
            self._window_vwap.__getstate__(),
            self._quotes.__getstate__(),
        )

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):  # a snapshot of the object graph (before _FORMAT)
            return
        if state[0] != _FORMAT:
            raise TypeError(f"unknown IndicatorEngine snapshot format {state[0]!r}")
        (
            _,
            self.window_size,
            self._last_end_us,
            self.bars,
            self.corrections,
            self.stale_corrections,
            ema12,
            macd,
            rsi,
            bollinger,
            volatility,
            session_vwap,
            window_vwap,
            quotes,
        ) = state
        self._ema12 = rebuild(Ema, ema12)
        self._macd = rebuild(Macd, macd)
        self._rsi = rebuild(Rsi, rsi)
        self._bollinger = rebuild(Bollinger, bollinger)
        self._volatility = rebuild(RealizedVolatility, volatility)
        self._session_vwap = rebuild(SessionVwap, session_vwap)
        self._window_vwap = rebuild(WindowVwap, window_vwap)
        self._quotes = rebuild(QuoteBook, quotes)

    def __deepcopy__(self, memo: dict[int, object]) -> IndicatorEngine:
        return self.restore(self.snapshot())

    def _revise(self, end_us: int, close: float, price: float, volume: float) -> Signal:
        line, signal, hist = self._macd.revise(close) or _NONE3
        mid, upper, lower = self._bollinger.revise(close) or _NONE3
        spread, bid_px, ask_px, bid_sz, ask_sz = self._quotes.at(end_us)
        return Signal(
            line,
            signal,
            hist,
            self._ema12.revise(close),
            self._macd.slow.value,
            self._rsi.revise(close),
            mid,
            upper,
            lower,
            self._session_vwap.revise(price, volume),
            self._window_vwap.revise(price, volume),
            spread,
            bid_px,
            ask_px,
            bid_sz,
            ask_sz,
            self._volatility.revise(close),
            close,
        )
