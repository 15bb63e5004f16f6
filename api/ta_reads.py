"""TA reads for the API: one ClickHouse client behind a lock, marks, and a short TTL cache.

Why a lock: a clickhouse-connect HTTP client carries a session id and ClickHouse refuses two
concurrent queries in one session (and the embedded chdb backend serialises a process's
queries anyway). Serialising costs little because repeats are absorbed before they get here:
the pages of ``/bars`` and ``/signals`` are shared answers (:mod:`api.shared_answers`), read
uncached once and then re-checked with one :class:`RangeMarks` query for every kept page; the
newest signals come from a :class:`LatestBoard` refreshed for all symbols at once; what the
dashboard's update and its stream read is cached ``ttl_s`` (default 0.5 s) per range, misses
single-flight (the second asker waits for the first and then finds the entry).

Why connect lazily: the API must start (and answer ``/healthz``) while ClickHouse is down; the
first read connects, a connection failure is a 503 and the next read tries again.

Every read is ``FINAL`` (:mod:`torghut.clickhouse.queries`): a corrected bar or signal shows
once, in its latest version.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from cachetools import TTLCache
from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import CollectorRegistry, Counter

from api.errors import DependencyUnavailable
from api.shared_answers import IDLE_S
from torghut.clickhouse import Client, bars, signals_between
from torghut.clickhouse.rows import (
    MICROBARS_TABLE,
    SIGNAL_COLUMNS,
    SIGNALS_TABLE,
    signal_from_row,
)
from torghut.events import Envelope, Microbar, Signal
from torghut.logs import get_logger

__all__ = ["ClientFactory", "LatestBoard", "Mark", "RangeMarks", "TaReader", "TtlCache"]

ClientFactory = Callable[[], Client]
"""Opens a ClickHouse client the reader owns (and closes); called again after a failure."""

T = TypeVar("T")

log = get_logger("api.ta_reads")

_TS = "DateTime64(3, 'UTC')"
_MARKED = {"bars": MICROBARS_TABLE, "signals": SIGNALS_TABLE}
_DRIVER_ERRORS = (ClickHouseError, OSError, RuntimeError)
"""What a client raises when the server is unreachable or a query fails (chdb: RuntimeError)."""


class TtlCache:
    """A bounded map whose entries expire ``ttl_s`` after they were stored: cachetools'
    ``TTLCache`` (least recently used out first when full) behind a lock, because readers run
    on several worker threads; TTL 0 keeps nothing. The clock is injectable."""

    def __init__(
        self, ttl_s: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._entries: TTLCache[Hashable, Any] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_s, timer=clock) if ttl_s > 0 else None
        )
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """``(True, value)`` for a live entry, else ``(False, None)``."""
        if self._entries is None:
            return False, None
        with self._lock:
            value = self._entries.get(key, _ABSENT)
        return (False, None) if value is _ABSENT else (True, value)

    def put(self, key: Hashable, value: Any) -> None:
        if self._entries is not None:
            with self._lock:
                self._entries[key] = value


_ABSENT = object()


class LatestBoard:
    """The newest signal of every symbol of one window, refreshed for all symbols at once.

    A refresh reads two cheap columns for every symbol (``max(event_ts)``, ``max(ingest_ts)``
    over the last day) and then, with ``FINAL``, only the newest row of the symbols whose marks
    moved: in steady state the few symbols that traded, whatever the number of symbols asked
    about. A corrected version of a symbol's newest row moves its ``max(ingest_ts)`` and is
    fetched too. Symbols without a signal in the last day leave the board.
    """

    def __init__(self, window: str) -> None:
        self.window = window
        self.loaded = False
        self.refreshed_at = -math.inf
        self._rows: dict[str, Envelope[Signal]] = {}
        self._marks: dict[str, tuple[datetime, datetime]] = {}

    def row(self, symbol: str) -> Envelope[Signal] | None:
        return self._rows.get(symbol)

    def newest(self) -> datetime | None:
        return max((m[0] for m in self._marks.values()), default=None)

    def refresh(self, client: Client, now: float) -> None:
        marks_sql = (
            f"SELECT symbol, max(event_ts), max(ingest_ts) FROM {SIGNALS_TABLE} "
            "WHERE window_size = {window:String} AND event_ts >= now64(3) - INTERVAL 1 DAY "
            "GROUP BY symbol"
        )
        params: dict[str, Any] = {"window": self.window}
        marks = {
            str(sym): (_utc(ts), _utc(ing))
            for sym, ts, ing in client.query(marks_sql, parameters=params).result_rows
        }
        changed = [sym for sym, mark in marks.items() if self._marks.get(sym) != mark]
        rows = {sym: env for sym, env in self._rows.items() if sym in marks}
        if changed:
            cols = ", ".join(SIGNAL_COLUMNS)
            sql = (
                f"SELECT {cols} FROM {SIGNALS_TABLE} FINAL WHERE window_size = {{window:String}} "
                f"AND symbol IN {{symbols:Array(String)}} AND event_ts >= {{since:{_TS}}} "
                "ORDER BY symbol, event_ts DESC, seq DESC LIMIT 1 BY symbol"
            )
            params |= {"symbols": changed, "since": min(marks[s][0] for s in changed)}
            for raw in client.query(sql, parameters=params).result_rows:
                env = signal_from_row(raw)
                rows[env.symbol] = env
        self._rows, self._marks = rows, marks
        self.loaded, self.refreshed_at = True, now


Mark = tuple[int, datetime | None]
MARK_SLACK_S = 0.05
"""A mark read this long before it was asked for still counts as read after (batching)."""


class RangeMarks:
    """(rows, newest ``ingest_ts``) per symbol of one table and window, every version, from
    each symbol's earliest asked start on: it moves with every row that lands in a symbol's
    kept ranges, a correction included (the TA flow's ``ingest_ts`` strictly increases per
    symbol), and when rows go (a merge, a delete). It moves on rows after a range too (the
    symbol's later bars): a spurious rebuild, never a missed one.

    Why one query for every symbol: the shared pages of N symbols are re-checked every
    ``API_TA_CACHE_TTL_MS``; N queries of a few ms each queued behind one another (and behind
    the pipeline's own chdb work), one reading the same order-key ranges costs what two do.
    Symbols nobody asked about for :data:`~api.shared_answers.IDLE_S` leave the query.
    """

    def __init__(self, table: str, window: str) -> None:
        self._table = table
        self._window = window
        self._since: dict[str, datetime] = {}
        self._asked: dict[str, float] = {}
        self._marks: dict[str, Mark] = {}
        self._read_at = -math.inf

    def covers(self, symbol: str, start: datetime, asked: float) -> bool:
        """Whether the last read began at or after ``asked`` and covered ``symbol`` from
        ``start`` on; registers the symbol's start for the next read otherwise."""
        self._asked[symbol] = asked
        since = self._since.get(symbol)
        if since is not None and since <= start:
            return self._read_at >= asked
        self._since[symbol] = start
        return False

    def mark(self, symbol: str) -> Mark:
        return self._marks.get(symbol, (0, None))

    def read(self, client: Client, symbol: str, now: float) -> None:
        idle = [s for s, at in self._asked.items() if at < now - IDLE_S and s != symbol]
        for gone in idle:
            del self._asked[gone], self._since[gone]
        sql = (
            f"SELECT symbol, count(), max(ingest_ts) FROM {self._table} "
            "WHERE window_size = {window:String} AND symbol IN {symbols:Array(String)} "
            f"AND event_ts >= {{since:{_TS}}} GROUP BY symbol"
        )
        params = {
            "window": self._window,
            "symbols": list(self._since),
            "since": min(self._since.values()),
        }
        rows = client.query(sql, parameters=params).result_rows
        self._marks = {str(sym): (int(n), _utc(newest)) for sym, n, newest in rows}
        self._read_at = now


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class TaReader:
    """Cached, serialised ``FINAL`` reads of ``ta_microbars`` / ``ta_signals``."""

    def __init__(
        self,
        factory: ClientFactory,
        ttl_s: float,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (monotonic seconds) times the board and the marks (tests step it)."""
        self._factory = factory
        self._clock = clock
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._cache = TtlCache(ttl_s, clock=clock)
        self._boards: dict[str, LatestBoard] = {}
        self._marks: dict[tuple[str, str], RangeMarks] = {}
        self._refreshing: set[str] = set()
        self._refreshing_lock = threading.Lock()
        self._lookups = Counter(
            "torghut_api_ta_cache_lookups",
            "TA query cache lookups by result (hit, miss)",
            ["result"],
            registry=registry,
        )

    def bars(
        self,
        symbol: str,
        window: str,
        start: datetime,
        end: datetime,
        limit: int,
        *,
        cached: bool = True,
    ) -> list[Envelope[Microbar]]:
        """``cached=False``: read now (the caller keeps the answer under a :meth:`mark`)."""

        def read(client: Client) -> list[Envelope[Microbar]]:
            return bars(client, symbol, start, end, window, limit)

        if not cached:
            return self._run(read)
        return self._cached(("bars", symbol, window, start, end, limit), read)

    def signals(
        self,
        symbol: str,
        window: str,
        start: datetime,
        end: datetime,
        limit: int,
        *,
        cached: bool = True,
    ) -> list[Envelope[Signal]]:
        """``cached=False``: read now (the caller keeps the answer under a :meth:`mark`)."""

        def read(client: Client) -> list[Envelope[Signal]]:
            return signals_between(client, symbol, start, end, window, limit)

        if not cached:
            return self._run(read)
        return self._cached(("signals", symbol, window, start, end, limit), read)

    def mark(
        self, table: Literal["bars", "signals"], symbol: str, window: str, start: datetime
    ) -> Mark:
        """A mark of ``symbol``'s rows at or after ``start``, read after this call began (up
        to :data:`MARK_SLACK_S` before): see :class:`RangeMarks`. Not cached; concurrent askers
        of one table and window share one query."""
        asked = self._clock() - MARK_SLACK_S
        board = self._marks.setdefault((table, window), RangeMarks(_MARKED[table], window))
        with self._lock:
            if not board.covers(symbol, start, asked):
                self._query_locked(lambda c: board.read(c, symbol, self._clock()))
            return board.mark(symbol)

    def latest(self, symbol: str, window: str) -> Envelope[Signal] | None:
        """The newest signal of ``symbol`` (within the last day) from the window's
        :class:`LatestBoard`: one refresh serves every symbol, so 500 symbols asked in turn
        cost what one does.

        Stale-while-revalidate: once loaded, an expired board still answers at once while one
        background refresh runs (so no request waits for ClickHouse; an answer is at most the
        TTL plus one refresh old). Before the first load, and with TTL 0, it waits."""
        board = self._boards.setdefault(window, LatestBoard(window))
        now = self._clock()
        if board.loaded and now - board.refreshed_at < self._cache.ttl_s:
            self._lookups.labels("hit").inc()
            return board.row(symbol)
        if board.loaded and self._cache.ttl_s > 0:
            self._lookups.labels("hit").inc()
            self._refresh_in_background(board)
            return board.row(symbol)
        self._lookups.labels("miss").inc()
        with self._lock:
            self._query_locked(lambda c: board.refresh(c, self._clock()))
        return board.row(symbol)

    def _refresh_in_background(self, board: LatestBoard) -> None:
        with self._refreshing_lock:
            if board.window in self._refreshing:
                return
            self._refreshing.add(board.window)

        def run() -> None:
            try:
                with self._lock:
                    self._query_locked(lambda c: board.refresh(c, self._clock()))
            except DependencyUnavailable as exc:
                log.warning("latest_board_refresh_failed", window=board.window, error=exc.detail)
            finally:
                with self._refreshing_lock:
                    self._refreshing.discard(board.window)

        threading.Thread(target=run, name=f"latest-board-{board.window}", daemon=True).start()

    def symbols(self, since: datetime) -> list[str]:
        """Symbols with a signal at or after ``since`` (any window), sorted.

        No ``FINAL`` needed: a symbol's presence does not depend on which version of a row wins.
        """
        sql = (
            f"SELECT DISTINCT symbol FROM {SIGNALS_TABLE} "
            f"WHERE event_ts >= {{since:{_TS}}} ORDER BY symbol LIMIT 500"
        )

        def read(client: Client) -> list[str]:
            rows = client.query(sql, parameters={"since": since}).result_rows
            return [str(r[0]) for r in rows]

        return self._cached(("symbols", since), read)

    def newest_signal_at(self) -> datetime | None:
        """The newest signal's event time over every symbol and window (the last day only)."""
        sql = (
            f"SELECT max(event_ts), count() FROM {SIGNALS_TABLE} "
            "WHERE event_ts >= now64(3) - INTERVAL 1 DAY"
        )

        def read(client: Client) -> datetime | None:
            newest, rows = client.query(sql).result_rows[0]
            if not rows:
                return None
            value: datetime = newest
            return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

        return self._cached(("newest_signal",), read)

    def ping(self) -> None:
        """One uncached round trip; raises :class:`DependencyUnavailable` when it fails."""
        self._run(lambda c: c.command("SELECT 1"))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _cached(self, key: Hashable, read: Callable[[Client], T]) -> T:
        hit, value = self._cache.get(key)
        if hit:
            self._lookups.labels("hit").inc()
            return value  # type: ignore[no-any-return]
        with self._lock:
            hit, value = self._cache.get(key)
            if hit:
                self._lookups.labels("hit").inc()
                return value  # type: ignore[no-any-return]
            self._lookups.labels("miss").inc()
            result = self._query_locked(read)
            self._cache.put(key, result)
            return result

    def _run(self, read: Callable[[Client], T]) -> T:
        with self._lock:
            return self._query_locked(read)

    def _query_locked(self, read: Callable[[Client], T]) -> T:
        try:
            if self._client is None:
                self._client = self._factory()
            return read(self._client)
        except _DRIVER_ERRORS as exc:
            self._drop_client()
            raise DependencyUnavailable("clickhouse", _short(exc)) from exc

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except _DRIVER_ERRORS as exc:
                log.warning("clickhouse_close_failed", error=_short(exc))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
