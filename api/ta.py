"""``/api/torghut/ta/*``: microbars, indicators and the newest signal per symbol.

Reads go through :class:`api.ta_reads.TaReader` (``FINAL``, cached for a few hundred ms). When
``to`` is omitted it is "now" truncated to the second, so repeated dashboard polls within a
second share one cache entry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from litestar import Controller, get
from litestar.di import NamedDependency

from api import params
from api.errors import problems
from api.query import From, Limit, Symbol, To, WindowSize
from api.schemas import Bar, BarsPage, SignalPoint, SignalsPage, Symbols, TaLatest
from api.ta_reads import TaReader
from torghut.config import Settings
from torghut.events import Envelope, Microbar, Signal

__all__ = ["TaController", "bar_view", "signal_view"]

_DEFAULT_SPAN = timedelta(minutes=15)
_DEFAULT_LIMIT = 5000


class TaController(Controller):
    path = "/api/torghut/ta"
    tags = ("ta",)

    @get("/bars", sync_to_thread=True, cache=True, responses=problems(400, 503))
    def bars(
        self,
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        symbol: Symbol,
        start: From = None,
        end: To = None,
        window: WindowSize = None,
        limit: Limit = None,
    ) -> BarsPage:
        """Microbars with ``from <= event_ts < to``, oldest first (latest version of each)."""
        sym, win, begin, until, n = _query(settings, symbol, window, start, end, limit)
        rows = ta.bars(sym, win, begin, until, n)
        bars = [bar_view(e) for e in rows]
        return BarsPage(symbol=sym, window=win, start=begin, end=until, bars=bars, count=len(bars))

    @get("/signals", sync_to_thread=True, cache=True, responses=problems(400, 503))
    def signals(
        self,
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        symbol: Symbol,
        start: From = None,
        end: To = None,
        window: WindowSize = None,
        limit: Limit = None,
    ) -> SignalsPage:
        """Indicator rows with ``from <= event_ts < to``, oldest first (latest version of each)."""
        sym, win, begin, until, n = _query(settings, symbol, window, start, end, limit)
        points = [signal_view(e) for e in ta.signals(sym, win, begin, until, n)]
        return SignalsPage(
            symbol=sym, window=win, start=begin, end=until, signals=points, count=len(points)
        )

    @get("/symbols", sync_to_thread=True, responses=problems(503))
    def symbols(
        self, settings: NamedDependency[Settings], ta: NamedDependency[TaReader]
    ) -> Symbols:
        """Configured symbols (``ALPACA_SYMBOLS``) and any with a signal in the last day."""
        since = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
        found = set(settings.alpaca.symbols) | set(ta.symbols(since))
        return Symbols(symbols=sorted(found))

    @get("/latest", sync_to_thread=True, cache=True, responses=problems(400, 503))
    def latest(
        self,
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        symbol: Symbol,
        window: WindowSize = None,
    ) -> TaLatest:
        """The newest signal, its age (``lag_ms``) and its pipeline latency."""
        sym = params.symbol(symbol)
        win = params.window(window, settings.api.ta_windows)
        env = ta.latest(sym, win)
        if env is None:
            return TaLatest(sym, win, None, None, None, None, None)
        now = datetime.now(UTC)
        return TaLatest(
            symbol=sym,
            window=win,
            event_ts=env.event_ts,
            ingest_ts=env.ingest_ts,
            lag_ms=_ms(now - env.event_ts),
            ingest_lag_ms=_ms(env.ingest_ts - env.event_ts),
            values=env.payload,
        )


def bar_view(e: Envelope[Microbar]) -> Bar:
    return Bar(
        event_ts=e.event_ts,
        seq=e.seq,
        version=e.version,
        is_final=e.is_final,
        ingest_ts=e.ingest_ts,
        o=e.payload.o,
        h=e.payload.h,
        l=e.payload.l,
        c=e.payload.c,
        v=e.payload.v,
        vwap=e.payload.vwap,
        count=e.payload.count,
    )


def signal_view(e: Envelope[Signal]) -> SignalPoint:
    return SignalPoint(
        event_ts=e.event_ts,
        seq=e.seq,
        version=e.version,
        is_final=e.is_final,
        ingest_ts=e.ingest_ts,
        values=e.payload,
    )


def _query(
    settings: NamedDependency[Settings],
    symbol: str,
    window: str | None,
    start: str | None,
    end: str | None,
    limit: int | None,
) -> tuple[str, str, datetime, datetime, int]:
    sym = params.symbol(symbol)
    win = params.window(window, settings.api.ta_windows)
    now = datetime.now(UTC).replace(microsecond=0)
    begin, until = params.time_range(start, end, now, _DEFAULT_SPAN)
    return sym, win, begin, until, params.limit(limit, settings.api.max_rows, _DEFAULT_LIMIT)


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
