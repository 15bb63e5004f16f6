"""TA reads for the API: one ClickHouse client behind a lock, with a short TTL cache.

Why a lock: a clickhouse-connect HTTP client carries a session id and ClickHouse refuses two
concurrent queries in one session. The embedded chdb client did run 4 threads x 200 ``FINAL``
queries on one client without an error (checked with chdb 4.4.0), but serialising costs little
here because the cache absorbs the repeats: the dashboard and many viewers ask the same
questions every second, and a ``FINAL`` read costs milliseconds while a cache hit costs
microseconds (the design's SLO is p95 < 200 ms for cached TA queries). Cache entries live
``ttl_s`` (default 0.5 s), so a cached answer is never staler than that; misses are single-flight
(the second asker waits for the first and then finds the entry).

Why connect lazily: the API must start (and answer ``/healthz``) while ClickHouse is down; the
first read connects, a connection failure is a 503 and the next read tries again.

Every read is ``FINAL`` (:mod:`torghut.clickhouse.queries`): a corrected bar or signal shows
once, in its latest version.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, TypeVar

from clickhouse_connect.driver.exceptions import ClickHouseError
from prometheus_client import CollectorRegistry, Counter

from api.errors import DependencyUnavailable
from torghut.clickhouse import Client, bars, signals_between
from torghut.clickhouse.rows import SIGNAL_COLUMNS, SIGNALS_TABLE, signal_from_row
from torghut.events import Envelope, Microbar, Signal
from torghut.logs import get_logger

__all__ = ["ClientFactory", "LatestBoard", "TaReader", "TtlCache"]

ClientFactory = Callable[[], Client]
"""Opens a ClickHouse client the reader owns (and closes); called again after a failure."""

T = TypeVar("T")

log = get_logger("api.ta_reads")

_TS = "DateTime64(3, 'UTC')"
_DRIVER_ERRORS = (ClickHouseError, OSError, RuntimeError)
"""What a client raises when the server is unreachable or a query fails (chdb: RuntimeError)."""


class TtlCache:
    """Bounded map whose entries expire ``ttl_s`` after they were stored (clock injectable)."""

    def __init__(
        self, ttl_s: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """``(True, value)`` for a live entry, else ``(False, None)``."""
        hit = self._entries.get(key)
        if hit is None:
            return False, None
        if hit[0] <= self._clock():
            self._entries.pop(key, None)  # another reader may have evicted it already
            return False, None
        return True, hit[1]

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class LatestBoard:
    """The newest signal of every symbol of one window, refreshed as a whole.

    A full refresh (``FINAL``, ``LIMIT 1 BY symbol`` over the last day) runs first and every
    :data:`FULL_EVERY_S`; in between, a refresh reads only rows at most :data:`OVERLAP_S` older
    than the newest signal seen, which is where every symbol's next signal lands. A row further
    behind than that (a backfill of one symbol) shows at the next full refresh. A row replaces
    a symbol's entry when its ``(event_ts, seq)`` is not older (a corrected version of the same
    row wins: ``FINAL`` returns its latest version).
    """

    FULL_EVERY_S = 60.0
    OVERLAP_S = 60
    HORIZON = "INTERVAL 1 DAY"

    def __init__(self, window: str, ttl_s: float) -> None:
        self.window = window
        self.ttl_s = ttl_s
        self._rows: dict[str, Envelope[Signal]] = {}
        self._front: datetime | None = None
        self._refreshed = -math.inf
        self._full = -math.inf

    def get(
        self, symbol: str, now: float, *, fresh: bool = False
    ) -> tuple[bool, Envelope[Signal] | None]:
        """``(True, row or None)`` while the board is younger than its TTL (or ``fresh``)."""
        if not fresh and now - self._refreshed >= self.ttl_s:
            return False, None
        return True, self._rows.get(symbol)

    def refresh(self, client: Client, now: float) -> None:
        cols = ", ".join(SIGNAL_COLUMNS)
        full = self._front is None or now - self._full >= self.FULL_EVERY_S
        since = (
            f"now64(3) - {self.HORIZON}"
            if full
            else f"{{front:{_TS}}} - INTERVAL {self.OVERLAP_S} SECOND"
        )
        sql = (
            f"SELECT {cols} FROM {SIGNALS_TABLE} FINAL "
            f"WHERE window_size = {{window:String}} AND event_ts >= {since} "
            "ORDER BY symbol, event_ts DESC, seq DESC LIMIT 1 BY symbol"
        )
        params: dict[str, Any] = {"window": self.window}
        if not full:
            params["front"] = self._front
        found = client.query(sql, parameters=params).result_rows
        rows = {} if full else self._rows
        for raw in found:
            env = signal_from_row(raw)
            held = rows.get(env.symbol)
            if held is None or (env.event_ts, env.seq) >= (held.event_ts, held.seq):
                rows[env.symbol] = env
        self._rows = rows
        if rows:
            self._front = max(e.event_ts for e in rows.values())
        self._refreshed = now
        if full:
            self._full = now


class TaReader:
    """Cached, serialised ``FINAL`` reads of ``ta_microbars`` / ``ta_signals``."""

    def __init__(
        self, factory: ClientFactory, ttl_s: float, registry: CollectorRegistry | None = None
    ) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._cache = TtlCache(ttl_s)
        self._boards: dict[str, LatestBoard] = {}
        self._lookups = Counter(
            "torghut_api_ta_cache_lookups",
            "TA query cache lookups by result (hit, miss)",
            ["result"],
            registry=registry,
        )

    def bars(
        self, symbol: str, window: str, start: datetime, end: datetime, limit: int
    ) -> list[Envelope[Microbar]]:
        key = ("bars", symbol, window, start, end, limit)
        return self._cached(key, lambda c: bars(c, symbol, start, end, window, limit))

    def signals(
        self, symbol: str, window: str, start: datetime, end: datetime, limit: int
    ) -> list[Envelope[Signal]]:
        key = ("signals", symbol, window, start, end, limit)
        return self._cached(key, lambda c: signals_between(c, symbol, start, end, window, limit))

    def latest(self, symbol: str, window: str) -> Envelope[Signal] | None:
        """The newest signal of ``symbol`` (within the last day), from the :class:`LatestBoard`
        of ``window``: one query refreshes every symbol at once, so asking for 500 symbols in
        turn costs what asking for one does."""
        board = self._boards.setdefault(window, LatestBoard(window, self._cache.ttl_s))
        hit, value = board.get(symbol, time.monotonic())
        if hit:
            self._lookups.labels("hit").inc()
            return value
        with self._lock:
            hit, value = board.get(symbol, time.monotonic())
            if hit:
                self._lookups.labels("hit").inc()
                return value
            self._lookups.labels("miss").inc()
            self._query_locked(lambda c: board.refresh(c, time.monotonic()))
            return board.get(symbol, time.monotonic(), fresh=True)[1]

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
