"""``/api/torghut/ta/*``: microbars, indicators and the newest signal per symbol.

Reads go through :class:`api.ta_reads.TaReader` (``FINAL``). Answers are shared between the
clients asking the same (:mod:`api.shared_answers`): a page stays until its range's mark moves
(a row landed in it, a correction included), checked every ``API_TA_CACHE_TTL_MS``; the newest
signal is re-rendered from the in-memory :class:`~api.ta_reads.LatestBoard` every
:data:`LATEST_FRESH_S` so its ``lag_ms`` stays true. When ``to`` is omitted it is "now"
truncated to the second.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.serialization import encode_json

from api import params
from api.errors import problems
from api.query import From, Limit, Symbol, To, WindowSize
from api.schemas import Bar, BarsPage, SignalPoint, SignalsPage, Symbols, TaLatest
from api.shared_answers import SHARED, share
from api.ta_reads import TaReader
from torghut.config import Settings
from torghut.events import Envelope, Microbar, Signal

__all__ = ["LATEST_FRESH_S", "TaController", "bar_view", "signal_view"]

_DEFAULT_SPAN = timedelta(minutes=15)
_DEFAULT_LIMIT = 5000
LATEST_FRESH_S = 0.25
"""A shared ``/latest`` answer is re-rendered from the board this often (``lag_ms`` moves)."""

Page = TypeVar("Page", BarsPage, SignalsPage)


class TaController(Controller):
    path = "/api/torghut/ta"
    tags = ("ta",)

    @get("/bars", sync_to_thread=True, opt=SHARED, responses=problems(400, 503))
    def bars(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        symbol: Symbol,
        start: From = None,
        end: To = None,
        window: WindowSize = None,
        limit: Limit = None,
    ) -> BarsPage:
        """Microbars with ``from <= event_ts < to``, oldest first (latest version of each)."""
        return _shared_page(
            request, settings, ta, "bars", _bars_page, (symbol, window, start, end, limit)
        )

    @get("/signals", sync_to_thread=True, opt=SHARED, responses=problems(400, 503))
    def signals(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        symbol: Symbol,
        start: From = None,
        end: To = None,
        window: WindowSize = None,
        limit: Limit = None,
    ) -> SignalsPage:
        """Indicator rows with ``from <= event_ts < to``, oldest first (latest version of each)."""
        return _shared_page(
            request, settings, ta, "signals", _signals_page, (symbol, window, start, end, limit)
        )

    @get("/symbols", sync_to_thread=True, responses=problems(503))
    def symbols(
        self, settings: NamedDependency[Settings], ta: NamedDependency[TaReader]
    ) -> Symbols:
        """Configured symbols (``ALPACA_SYMBOLS``) and any with a signal in the last day."""
        since = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
        found = set(settings.alpaca.symbols) | set(ta.symbols(since))
        return Symbols(symbols=sorted(found))

    @get("/latest", sync_to_thread=True, opt=SHARED, responses=problems(400, 503))
    def latest(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        symbol: Symbol,
        window: WindowSize = None,
    ) -> TaLatest:
        """The newest signal, its age (``lag_ms``) and its pipeline latency."""
        sym = params.symbol(symbol)
        win = params.window(window, settings.api.ta_windows)
        answer = _latest(ta, sym, win)
        # the board is loaded now: a refresh reads memory, on the event loop
        fresh_s = min(settings.api.ta_cache_ttl_ms / 1000, LATEST_FRESH_S)
        share(request, fresh_s, lambda: encode_json(_latest(ta, sym, win)), blocking=False)
        return answer


def _latest(ta: TaReader, sym: str, win: str) -> TaLatest:
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


Query = tuple[str, str, datetime, datetime, int]


def _shared_page(
    request: Request[Any, Any, Any],
    settings: Settings,
    ta: TaReader,
    table: Literal["bars", "signals"],
    page_of: Callable[[TaReader, Query], Page],
    raw: tuple[str, str | None, str | None, str | None, int | None],
) -> Page:
    """The page of the query ``raw``, shared until its range's mark moves.

    The mark is read before the rows, so the rows are at least as new as the mark they are
    kept under; a refresh first re-reads the range (an omitted ``to`` moves with the clock)
    and its mark, and builds a page only when either moved."""
    query = _query(settings, *raw)
    seen = (query, ta.mark(table, *query[:3]))
    page = page_of(ta, query)

    def again() -> bytes | None:
        nonlocal seen
        now = _query(settings, *raw)
        current = (now, ta.mark(table, *now[:3]))
        if current == seen:
            return None
        seen = current
        return encode_json(page_of(ta, now))

    share(request, settings.api.ta_cache_ttl_ms / 1000, again)
    return page


def _bars_page(ta: TaReader, query: Query) -> BarsPage:
    sym, win, begin, until, n = query
    bars = [bar_view(e) for e in ta.bars(sym, win, begin, until, n, cached=False)]
    return BarsPage(symbol=sym, window=win, start=begin, end=until, bars=bars, count=len(bars))


def _signals_page(ta: TaReader, query: Query) -> SignalsPage:
    sym, win, begin, until, n = query
    points = [signal_view(e) for e in ta.signals(sym, win, begin, until, n, cached=False)]
    return SignalsPage(
        symbol=sym, window=win, start=begin, end=until, signals=points, count=len(points)
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
    settings: Settings,
    symbol: str,
    window: str | None,
    start: str | None,
    end: str | None,
    limit: int | None,
) -> Query:
    sym = params.symbol(symbol)
    win = params.window(window, settings.api.ta_windows)
    now = datetime.now(UTC).replace(microsecond=0)
    begin, until = params.time_range(start, end, now, _DEFAULT_SPAN)
    return sym, win, begin, until, params.limit(limit, settings.api.max_rows, _DEFAULT_LIMIT)


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
