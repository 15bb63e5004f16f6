"""Answers of the hot GET reads, encoded once and shared by every client that asks the same.

Why: the API, chdb and the dataflows share one process (chdb locks its directory), so every
request's Python work is taken from the dataflows through the GIL. A hundred viewers of the
console ask the same few questions each second (the newest signal of a symbol, the last hour
of its bars, the dashboard's update); answering each of them through routing, dependency
injection, a query and a 700 kB encode starved the pipeline and queued requests for seconds.
Here an answer is computed once per (path, query string), kept as bytes, and sent to everyone
who asks the same until it may have changed:

* **hit** — a fresh answer is sent as is from the event loop, without entering the route
  (no thread, no dependency, no encode);
* **coalesced misses** — concurrent first askers of one question wait for one computation
  (one ClickHouse query for N waiting requests) and share its answer, whatever its status;
* **refresh** — the handler that computed an answer declares how it stays current
  (:func:`share`): how long it is fresh, and ``again``, which gives the answer now or ``None``
  when its data's mark has not moved (a cheap count/max query instead of a page). An answer
  older than ``fresh_s`` is still sent while one refresh runs on the worker pool, for at most
  another ``fresh_s``; after that askers wait for the refresh. So an answer is never more than
  two ``fresh_s`` behind the store (default ``API_TA_CACHE_TTL_MS`` 500 ms: one 1 s bar).

Answers of :data:`GZIP_MIN_BYTES` or more are also kept gzip-compressed (once per computation
or refresh, on the worker pool) and sent so to clients that accept it, as every browser does:
an hour of 1 s bars is ~700 kB of JSON and ~10x less compressed, and writing those bytes (the
app's and the client's side of the socket) was most of what such a request cost.

Only ``200`` answers of routes marked with :data:`SHARED` are kept; anything else (a 400, a
503, a route that declared nothing) goes through the app for every request. Entries leave
after :data:`IDLE_S` without a refresh or when the byte budget is full (least recently set
first). Everything here runs on the event loop thread; refreshes run on the worker pool and
their result is applied back on the loop, so the entries need no lock.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from cachetools import TTLCache
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter

from torghut.logs import get_logger

__all__ = ["GZIP_MIN_BYTES", "IDLE_S", "SHARED", "Freshness", "SharedAnswers", "share"]

log = get_logger("api.shared_answers")

SHARED = {"shared_answer": True}
"""``opt`` of a route whose answers are shared: concurrent misses coalesce, ``share`` keeps."""

IDLE_S = 60.0
"""An answer nobody refreshed for this long leaves the cache (its closure holds its query)."""

GZIP_MIN_BYTES = 4096
"""Smaller answers are sent as they are (compressing them saves less than it costs)."""

_GZIP_LEVEL = 1
"""zlib's fastest level: ~8x smaller for the bars' JSON, a few ms for an hour of them."""

_SCOPE_KEY = "torghut.freshness"
_BUDGET_BYTES = 64 * 1024 * 1024
"""At most this much answer bytes are kept (an hour of 1 s bars is ~700 kB)."""

Key = tuple[str, bytes]
Again = Callable[[], bytes | None]
_VARY = (b"vary", b"accept-encoding")
_GZIP = (b"content-encoding", b"gzip")


@dataclass(slots=True, frozen=True)
class Freshness:
    """How a shared answer stays current, declared by the handler that computed it.

    ``again`` gives the answer now, or ``None`` when the data it was computed from has not
    changed (then the kept bytes stay). ``blocking``: ``again`` reads a store, so it runs on
    the worker pool; otherwise it is cheap, in-memory work done on the event loop.
    """

    fresh_s: float
    again: Again
    blocking: bool = True


def share(
    request: Request[Any, Any, Any], fresh_s: float, again: Again, *, blocking: bool = True
) -> None:
    """Declare that the answer this request gets may be shared for ``fresh_s`` and refreshed
    with ``again``; nothing when ``fresh_s`` is 0 (the cache is off)."""
    if fresh_s > 0:
        request.scope[_SCOPE_KEY] = Freshness(fresh_s, again, blocking)  # type: ignore[literal-required]


@dataclass(slots=True, frozen=True)
class _Body:
    """An answer's bytes, and their gzip form when it is worth keeping."""

    plain: bytes
    gzipped: bytes | None

    @classmethod
    def of(cls, plain: bytes) -> _Body:
        if len(plain) < GZIP_MIN_BYTES:
            return cls(plain, None)
        return cls(plain, zlib.compress(plain, _GZIP_LEVEL, wbits=31))  # 31: gzip framing


@dataclass(slots=True)
class _Answer:
    headers: list[tuple[bytes, bytes]]
    """The response's headers but its length and encoding (the body may change on refresh)."""
    body: _Body
    fresh_until: float
    freshness: Freshness
    refreshing: asyncio.Future[None] | None = None
    """Set while the answer waits for or runs its refresh."""


@dataclass(slots=True, frozen=True)
class _Computed:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class SharedAnswers:
    """The cache and its ASGI middleware (``Litestar(middleware=[..., answers.middleware])``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
        budget_bytes: int = _BUDGET_BYTES,
    ) -> None:
        self._clock = clock
        self._answers: TTLCache[Key, _Answer] = TTLCache(
            maxsize=budget_bytes, ttl=IDLE_S, timer=clock, getsizeof=_size
        )
        self._computing: dict[Key, asyncio.Future[_Computed | None]] = {}
        self._due: dict[Key, _Answer] = {}
        self._refresher: asyncio.Task[None] | None = None
        lookups = Counter(
            "torghut_api_shared_answers",
            "Requests of shared-answer routes by outcome (hit, stale, waited, coalesced, computed)",
            ["result"],
            registry=registry,
        )
        refreshes = Counter(
            "torghut_api_shared_answer_refreshes",
            "Refreshes of kept answers by outcome (unchanged, changed, failed)",
            ["result"],
            registry=registry,
        )
        # children looked up once: ``labels()`` costs as much as serving a kept answer
        outcomes = ("hit", "stale", "waited", "coalesced", "computed")
        self._lookups = {r: lookups.labels(r) for r in outcomes}
        self._refreshes = {r: refreshes.labels(r) for r in ("unchanged", "changed", "failed")}

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def shared(scope: Scope, receive: Receive, send: Send) -> None:
            handler = scope.get("route_handler")
            if (
                scope["type"] != ScopeType.HTTP
                or scope["method"] != "GET"
                or handler is None
                or not handler.opt.get("shared_answer")
            ):
                await app(scope, receive, send)
                return
            key: Key = (scope["path"], scope["query_string"])
            answer = self._answers.get(key)
            if answer is not None and await self._current(key, answer):
                body = answer.body
                if body.gzipped is not None and _accepts_gzip(scope["headers"]):
                    await _send(send, 200, [*answer.headers, _GZIP], body.gzipped)
                else:
                    await _send(send, 200, answer.headers, body.plain)
                return
            await self._compute(key, app, scope, receive, send)

        return shared

    async def _current(self, key: Key, answer: _Answer) -> bool:
        """Whether ``answer`` may be sent now (refreshing it first, or in the background)."""
        now = self._clock()
        if now < answer.fresh_until:
            self._lookups["hit"].inc()
            return True
        fresh = answer.freshness
        if not fresh.blocking:
            self._apply(key, answer, _run_again(fresh.again))
            self._lookups["hit"].inc()
            return key in self._answers
        if answer.refreshing is None:
            answer.refreshing = asyncio.get_running_loop().create_future()
            self._due[key] = answer
            if self._refresher is None:
                self._refresher = asyncio.get_running_loop().create_task(self._refresh_due())
        if now < answer.fresh_until + fresh.fresh_s:
            self._lookups["stale"].inc()
            return True
        await asyncio.shield(answer.refreshing)
        self._lookups["waited"].inc()
        return self._answers.get(key) is answer

    async def _refresh_due(self) -> None:
        """Refresh every answer gone stale, together: one worker thread runs their ``again``
        in turn, so they share its store reads and one thread hop (answers of one period go
        stale at the same instant, :func:`_fresh_until`)."""
        batch: dict[Key, _Answer] = {}
        try:
            while self._due:
                batch, self._due = self._due, {}
                agains = [answer.freshness.again for answer in batch.values()]
                bodies = await anyio.to_thread.run_sync(_run_all, agains)
                for (key, answer), body in zip(batch.items(), bodies, strict=True):
                    done, answer.refreshing = answer.refreshing, None
                    self._apply(key, answer, body)
                    if done is not None:
                        done.set_result(None)
        finally:
            self._refresher = None
            for answer in [*batch.values(), *self._due.values()]:  # cancelled: release waiters
                if answer.refreshing is not None:
                    answer.refreshing.cancel()
                    answer.refreshing = None
            self._due.clear()

    def _apply(self, key: Key, answer: _Answer, body: _Body | BaseException | None) -> None:
        if isinstance(body, BaseException):
            self._refreshes["failed"].inc()
            log.warning("shared_answer_refresh_failed", path=key[0], error=str(body)[:300])
            self._answers.pop(key, None)
            return
        self._refreshes["unchanged" if body is None else "changed"].inc()
        if body is not None:
            answer.body = body
        answer.fresh_until = _fresh_until(self._clock(), answer.freshness.fresh_s)
        self._answers[key] = answer  # re-set: restarts its idle time, recounts its size

    async def _compute(
        self, key: Key, app: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Through the app, once for all concurrent askers of ``key``."""
        pending = self._computing.get(key)
        if pending is not None:
            first = await asyncio.shield(pending)
            if first is not None:
                self._lookups["coalesced"].inc()
                await _send(send, first.status, first.headers, first.body)
                return
            await app(scope, receive, send)  # the first asker failed: try for ourselves
            return
        future: asyncio.Future[_Computed | None] = asyncio.get_running_loop().create_future()
        self._computing[key] = future
        self._lookups["computed"].inc()
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # the same URL may be answered gzipped later: caches must key on the encoding
                message = {**message, "headers": [*message.get("headers", ()), _VARY]}
                headers.extend(
                    (bytes(k), bytes(v))
                    for k, v in message.get("headers", ())
                    if bytes(k).lower() != b"content-length"
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        computed: _Computed | None = None
        try:
            await app(scope, receive, capture)
            if status:
                computed = _Computed(status, headers, b"".join(chunks))
                freshness: Freshness | None = scope.get(_SCOPE_KEY)  # type: ignore[assignment]
                await self._keep(key, computed, freshness)
        finally:  # released once the answer is kept: later askers find it, not a second run
            del self._computing[key]
            future.set_result(computed)

    async def _keep(self, key: Key, computed: _Computed, freshness: Freshness | None) -> None:
        """Keep a computed answer if it is a ``200`` its handler declared shareable."""
        if computed.status != 200 or freshness is None:
            return
        plain = computed.body
        body = (
            await anyio.to_thread.run_sync(_Body.of, plain)
            if len(plain) >= GZIP_MIN_BYTES
            else _Body(plain, None)
        )
        fresh_until = _fresh_until(self._clock(), freshness.fresh_s)
        self._answers[key] = _Answer(computed.headers, body, fresh_until, freshness)


def _size(answer: _Answer) -> int:
    """What an answer holds against the byte budget: both its forms, and some overhead."""
    return len(answer.body.plain) + len(answer.body.gzipped or b"") + 256


def _fresh_until(now: float, fresh_s: float) -> float:
    """The next multiple of ``fresh_s``: answers with one period go stale together, so their
    refreshes run together and share their store reads (see :class:`api.ta_reads.RangeMarks`)."""
    return (now // fresh_s + 1) * fresh_s


def _run_all(agains: list[Again]) -> list[_Body | BaseException | None]:
    return [_run_again(again) for again in agains]


def _run_again(again: Again) -> _Body | BaseException | None:
    """``again()``, its exception returned (a refresh that fails drops the answer)."""
    try:
        plain = again()
    except Exception as exc:  # noqa: BLE001 - any failure means: compute it through the app
        return exc
    return None if plain is None else _Body.of(plain)


def _accepts_gzip(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether ``Accept-Encoding`` lists gzip (or ``*``) without ``q=0`` (RFC 9110 12.5.3)."""
    for name, value in headers:
        if name.lower() != b"accept-encoding":
            continue
        for item in value.lower().split(b","):
            coding, _, params = item.partition(b";")
            if coding.strip() in (b"gzip", b"*"):
                return not _refused(params.strip())
    return False


def _refused(params: bytes) -> bool:
    """``q=0`` (or an unreadable weight, taken as no consent): the coding must not be used."""
    if not params.startswith(b"q="):
        return False
    try:
        return float(params[2:]) == 0
    except ValueError:
        return True


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
