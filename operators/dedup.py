"""Drop repeated market messages with bounded memory.

Why: after a reconnect Alpaca (and our simulator's fault injection) can send a message again,
and the websocket source is at-most-once across restarts but at-least-once across reconnects.
Each message has a content identity (:func:`identity`); the first sighting passes, later ones
within the window are dropped and counted.

Memory is bounded twice: an identity is forgotten between ``window_s`` and 1.5 × ``window_s``
after it was first seen (by the envelope's ``ingest_ts``, i.e. the receive time, so reconnect
overlaps that arrive seconds later are caught), and the oldest identities are dropped once more
than ``max_keys`` are held (:class:`SeenWindow`, identities held as compact bytes).

State is kept per topic family (``trades``, ``quotes``, ``bars``, ``status``): the Bytewax key
is the family, so all messages of one family pass through one worker in arrival order, which
keeps per-symbol order intact. ``snapshot()`` returns ``None`` on purpose: Bytewax calls it at
every epoch end and would deep-copy up to ``max_keys`` identities each time, and the websocket
source cannot rewind anyway, so a resumed ingest starts with an empty window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic
from prometheus_client import Counter

from operators.alpaca_decode import Family, MarketEvent
from torghut.events import Bar, Envelope, Quote, Trade, TradingStatus

__all__ = ["DUPLICATES", "SeenWindow", "dedup", "identity", "identity_bytes"]

DUPLICATES = Counter(
    "torghut_ingest_duplicates_total",
    "Market messages dropped as duplicates, by topic family.",
    ["family"],
)


def identity(family: Family, env: Envelope[Any]) -> Hashable:
    """The content identity of a market message: equal identities are the same message.

    trades: (symbol, trade id, exchange, time); quotes: (symbol, time, both sides);
    bars: (symbol, kind, start, full content, so an updated bar with new values passes);
    statuses: (symbol, time, status and reason codes).
    """
    p = env.payload
    if family == "trades":
        assert isinstance(p, Trade)
        return (env.symbol, p.trade_id, p.exchange, env.event_ts)
    if family == "quotes":
        assert isinstance(p, Quote)
        return (
            env.symbol,
            env.event_ts,
            p.bid_exchange,
            p.bid_price,
            p.bid_size,
            p.ask_exchange,
            p.ask_price,
            p.ask_size,
        )
    if family == "bars":
        assert isinstance(p, Bar)
        start = env.window.start if env.window is not None else env.event_ts
        return (
            env.symbol,
            p.kind,
            start,
            p.open,
            p.high,
            p.low,
            p.close,
            p.volume,
            p.trade_count,
            p.vwap,
        )
    assert isinstance(p, TradingStatus)
    return (env.symbol, env.event_ts, p.status_code, p.reason_code)


_PACK = msgspec.msgpack.Encoder().encode


def identity_bytes(family: Family, env: Envelope[Any]) -> bytes:
    """:func:`identity` as msgpack bytes: equal exactly when the identities are (every field
    is written with its type), in ~100 B instead of a tuple holding a datetime and floats."""
    return _PACK(identity(family, env))


class SeenWindow:
    """Identities seen in the last ``window_s`` seconds or a little longer, at most ``max_keys``.

    >>> w = SeenWindow(window_s=10, max_keys=1000)
    >>> [w.first_sighting(k, t) for k, t in [(b"a", 0), (b"a", 9), (b"b", 12), (b"a", 16)]]
    [True, False, True, True]

    Held as generations: sets of identities, a new one begun every ``window_s / 2`` seconds,
    the three newest kept. An identity is a repeat while it is in one of them: for at least
    ``window_s`` after it was first seen and at most 1.5 × ``window_s`` (``b"a"``, first seen
    at 0, is a repeat at 9 and new again at 16). A generation also ends once it holds a third
    of ``max_keys``, so a burst shortens the window rather than grow the memory: a repeat is
    then still caught within half the window and a third of ``max_keys`` identities.

    Why generations of sets, not an insertion-ordered map of identity → time: the map held,
    per identity, a node, a float and the identity itself — at 10 k messages/s the 1.6 M
    identities of a 300 s window took ~380 B each (a quote's tuple also kept its datetime and
    four floats alive) and the ingest's RSS reached 1 GB, the limit of its pod. The caller
    hands compact identities (:func:`identity_bytes`, ~160 B held each, ~58 % less), and a
    lookup is a set probe per generation.
    """

    __slots__ = ("_full_at", "_generations", "_held", "_max_keys", "_next_turn", "_turn_s")

    _KEPT = 3

    def __init__(self, window_s: float, max_keys: int) -> None:
        if window_s <= 0 or max_keys < 1:
            raise ValueError("window_s must be > 0 and max_keys >= 1")
        self._turn_s = window_s / (self._KEPT - 1)
        self._max_keys = max_keys
        self._full_at = max(1, max_keys // self._KEPT)
        self._generations: deque[set[Hashable]] = deque([set()])
        self._held = 0
        self._next_turn: float | None = None

    def __len__(self) -> int:
        return self._held

    def first_sighting(self, key: Hashable, now: float) -> bool:
        """Record ``key`` at time ``now`` (seconds); False if it is a repeat (see the class)."""
        turn = self._next_turn
        if turn is None:
            self._next_turn = now + self._turn_s
        elif now >= turn:
            turns = int((now - turn) // self._turn_s) + 1
            for _ in range(min(turns, self._KEPT)):
                self._begin()
            self._next_turn = turn + turns * self._turn_s
        generations = self._generations
        for seen in generations:
            if key in seen:
                return False
        newest = generations[-1]
        newest.add(key)
        self._held += 1
        if len(newest) >= self._full_at:
            self._begin()
        while self._held > self._max_keys:  # max_keys < 3 generations of one
            self._held -= len(generations.popleft())
            if not generations:
                generations.append(set())
        return True

    def _begin(self) -> None:
        """A new generation; the oldest goes when more than three are held."""
        generations = self._generations
        generations.append(set())
        if len(generations) > self._KEPT:
            self._held -= len(generations.popleft())


class _DedupLogic(StatefulBatchLogic[MarketEvent, MarketEvent, None]):
    def __init__(
        self, window_s: float, max_keys: int, on_drop: Callable[[Family, int], None] | None
    ) -> None:
        self._window = SeenWindow(window_s, max_keys)
        self._on_drop = on_drop

    def on_batch(self, values: list[MarketEvent]) -> tuple[Iterable[MarketEvent], bool]:
        window = self._window
        kept: list[MarketEvent] = []
        for family, env in values:
            if window.first_sighting(identity_bytes(family, env), env.ingest_ts.timestamp()):
                kept.append((family, env))
        dropped = len(values) - len(kept)
        if dropped:
            family = values[0][0]
            DUPLICATES.labels(family).inc(dropped)
            if self._on_drop is not None:
                self._on_drop(family, dropped)
        return kept, StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


@operator
def dedup(
    step_id: str,
    up: Stream[MarketEvent],
    window_s: float,
    max_keys: int,
    on_drop: Callable[[Family, int], None] | None = None,
) -> Stream[MarketEvent]:
    """Pass the first sighting of each market message, drop repeats within ``window_s``.

    ``max_keys`` bounds the identities held per topic family; ``on_drop(family, n)`` is told
    about every batch of drops (besides the ``torghut_ingest_duplicates_total`` counter).
    Order within a family is kept.
    """
    keyed = op.key_on("by_family", up, lambda item: item[0])
    kept = op.stateful_batch(
        "seen_window", keyed, lambda _resume: _DedupLogic(window_s, max_keys, on_drop)
    )
    return op.key_rm("unkey", kept)
