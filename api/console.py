"""``/api/torghut/console/*``: what the dashboard asks besides the TA and trading reads.

* ``markers`` — decisions, fills, rejections and vetoes of one symbol in the visible range;
* ``update`` — the dashboard's update call: the bars and signals of one symbol and window since
  a time (new and revised), the markers since then, the trading state and the pipeline panel;
* ``stream`` — the same update pushed as server-sent events once a second, so an open page does
  not re-fetch anything: it loads the visible range once and then applies the pushes.

Why the update and the markers are shared answers (:mod:`api.shared_answers`, recomputed every
``API_TA_CACHE_TTL_MS``): every open page of the same symbol asks the same question each
second; shared, their cost does not grow with the number of viewers, so API traffic cannot
starve the dataflows of the same process. The trading state and pipeline panel are shared by
all symbols and cached for a second (:class:`ConsoleCache`), also for the pushed streams.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.serialization import encode_json

from api import params, schemas
from api.controls import ControlAccess, effective_kill_switch, halt_views, kill_switch_view
from api.errors import ApiError, problems
from api.pipeline import PipelineProbe, pipeline_panel
from api.query import From, Limit, Since, Symbol, To, WindowSize
from api.shared_answers import SHARED, share
from api.ta import bar_view, signal_view
from api.ta_reads import TaReader, TtlCache
from api.trading_reads import TradingReads
from torghut.config import Settings

__all__ = ["ConsoleCache", "ConsoleController"]

_UPDATE_SPAN = timedelta(minutes=2)
"""``since`` defaults to this long ago, and an older ``since`` is moved up to it: an update is
incremental; the visible range is loaded with the bars/signals/markers endpoints."""
_REVISE = timedelta(seconds=5)
"""The stream re-sends this much before the newest bar it sent: provisional bars get revised."""
_PUSH_EVERY_S = 1.0
_MARKER_LIMIT = 500


class ConsoleCache:
    """One-second caches of the update parts every page shares (trading state, pipeline)."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self._cache = TtlCache(ttl_s, max_entries=4096)
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        hit, value = self._cache.get(key)
        if hit:
            return value
        with self._lock:  # single flight: concurrent askers wait for the first
            hit, value = self._cache.get(key)
            if hit:
                return value
            value = compute()
            self._cache.put(key, value)
            return value


class ConsoleController(Controller):
    path = "/api/torghut/console"
    tags = ("console",)

    @get("/markers", sync_to_thread=True, opt=SHARED, responses=problems(400, 503))
    def markers(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        store: NamedDependency[TradingReads],
        symbol: Symbol,
        start: From = None,
        end: To = None,
        limit: Limit = None,
    ) -> schemas.MarkersPage:
        """Decisions (at their signal's time), fills, rejections and vetoes with their reasons,
        oldest first, for ``from <= time < to`` (default: the last 15 minutes)."""
        sym = params.symbol(symbol)
        n = params.limit(limit, settings.api.max_rows, _MARKER_LIMIT)

        def page() -> schemas.MarkersPage:
            now = datetime.now(UTC).replace(microsecond=0)
            begin, until = params.time_range(start, end, now, timedelta(minutes=15))
            found = store.markers(sym, begin, until, n)
            return schemas.MarkersPage(markers=found, count=len(found))

        share(request, settings.api.ta_cache_ttl_ms / 1000, lambda: encode_json(page()))
        return page()

    @get("/update", sync_to_thread=True, opt=SHARED, responses=problems(400, 503))
    def update(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        store: NamedDependency[TradingReads],
        controls: NamedDependency[ControlAccess],
        pipeline_probe: NamedDependency[PipelineProbe | None],
        console_cache: NamedDependency[ConsoleCache],
        symbol: Symbol,
        window: WindowSize = None,
        since: Since = None,
    ) -> schemas.ConsoleUpdate:
        """The dashboard's update: bars, signals and markers at or after ``since`` (default and
        floor: two minutes ago), the trading state and the pipeline panel."""
        sym = params.symbol(symbol)
        win = params.window(window, settings.api.ta_windows)
        update = functools.partial(
            _update,
            settings,
            ta,
            store,
            controls,
            pipeline_probe,
            console_cache,
            sym,
            win,
            params.since(since),
        )
        share(request, settings.api.ta_cache_ttl_ms / 1000, lambda: encode_json(update()))
        return update()

    @get(
        "/stream",
        responses={
            **problems(400),
            200: ResponseSpec(
                data_container=schemas.ConsoleUpdate,
                media_type="text/event-stream",
                description="`event: update` with a ConsoleUpdate as `data`, once a second, "
                "until the client disconnects (never ends by itself)",
                generate_examples=False,
            ),
        },
    )
    async def stream(
        self,
        settings: NamedDependency[Settings],
        ta: NamedDependency[TaReader],
        store: NamedDependency[TradingReads],
        controls: NamedDependency[ControlAccess],
        pipeline_probe: NamedDependency[PipelineProbe | None],
        console_cache: NamedDependency[ConsoleCache],
        symbol: Symbol,
        window: WindowSize = None,
    ) -> ServerSentEvent:
        """Server-sent ``update`` events (see ``/update``) once a second for one symbol."""
        sym = params.symbol(symbol)
        win = params.window(window, settings.api.ta_windows)

        async def pushes() -> AsyncIterator[ServerSentEventMessage]:
            since: datetime | None = None
            while True:
                try:
                    body = await anyio.to_thread.run_sync(
                        functools.partial(
                            _update,
                            settings,
                            ta,
                            store,
                            controls,
                            pipeline_probe,
                            console_cache,
                            sym,
                            win,
                            since,
                        )
                    )
                except ApiError as exc:  # a dependency is down: say so, keep the stream
                    yield ServerSentEventMessage(data=exc.detail, event="problem")
                else:
                    newest = [b.event_ts for b in body.bars] or [body.since + _REVISE]
                    since = max(newest) - _REVISE
                    yield ServerSentEventMessage(
                        data=msgspec.json.encode(body).decode(), event="update"
                    )
                await anyio.sleep(_PUSH_EVERY_S)

        return ServerSentEvent(pushes())


def _update(
    settings: Settings,
    ta: TaReader,
    store: TradingReads,
    controls: ControlAccess,
    probe: PipelineProbe | None,
    cache: ConsoleCache,
    symbol: str,
    window: str,
    since: datetime | None,
) -> schemas.ConsoleUpdate:
    now = datetime.now(UTC)
    second = now.replace(microsecond=0)
    floor = second - _UPDATE_SPAN
    begin = floor if since is None or since < floor else since
    until = second + timedelta(seconds=1)
    limit = settings.api.max_rows
    bars = [bar_view(e) for e in ta.bars(symbol, window, begin, until, limit)]
    signals = [signal_view(e) for e in ta.signals(symbol, window, begin, until, limit)]
    markers = cache.get(
        ("markers", symbol, begin, until), lambda: store.markers(symbol, begin, until, 500)
    )
    trading = cache.get(("trading", second), lambda: _trading(settings, controls))
    panel = cache.get(("pipeline", second), lambda: pipeline_panel(store, ta, probe))
    return schemas.ConsoleUpdate(
        symbol=symbol,
        window=window,
        since=begin,
        as_of=now,
        bars=bars,
        signals=signals,
        markers=markers,
        trading=trading,
        pipeline=panel,
    )


def _trading(settings: Settings, controls: ControlAccess) -> schemas.ConsoleState | None:
    try:
        state = controls.state()
    except ApiError:
        return None
    engaged = effective_kill_switch(settings, state)
    halted = engaged or bool(state.halts)
    switch = kill_switch_view(state.kill_switch)
    switch.engaged = engaged
    return schemas.ConsoleState(
        state="disabled" if not settings.trading.enabled else "halted" if halted else "active",
        kill_switch=switch,
        halts=halt_views(state.halts),
        pending_commands=len(state.pending),
    )
