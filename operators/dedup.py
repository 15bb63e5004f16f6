"""Drop repeated market messages with bounded memory.

Why: after a reconnect Alpaca (and our simulator's fault injection) can send a message again,
and the websocket source is at-most-once across restarts but at-least-once across reconnects.
Each message has a content identity (:func:`identity`); the first sighting passes, later ones
within the window are dropped and counted.

Memory is bounded twice: an identity is forgotten once it is older than ``window_s`` (by the
envelope's ``ingest_ts``, i.e. the receive time, so reconnect overlaps that arrive seconds later
are caught) and the oldest identities are evicted once ``max_keys`` are held. Eviction is O(1)
per message (an insertion-ordered ``OrderedDict``).

State is kept per topic family (``trades``, ``quotes``, ``bars``, ``status``): the Bytewax key
is the family, so all messages of one family pass through one worker in arrival order, which
keeps per-symbol order intact. ``snapshot()`` returns ``None`` on purpose: Bytewax calls it at
every epoch end and would deep-copy up to ``max_keys`` identities each time, and the websocket
source cannot rewind anyway, so a resumed ingest starts with an empty window.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic
from prometheus_client import Counter

from operators.alpaca_decode import Family, MarketEvent
from torghut.events import Bar, Envelope, Quote, Trade, TradingStatus

__all__ = ["DUPLICATES", "SeenWindow", "dedup", "identity"]

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


class SeenWindow:
    """Identities seen in the last ``window_s`` seconds, at most ``max_keys`` of them.

    >>> w = SeenWindow(window_s=10, max_keys=2)
    >>> [w.first_sighting(k, t) for k, t in [("a", 0), ("a", 1), ("b", 2), ("c", 3), ("a", 4)]]
    [True, False, True, True, True]
    >>> w.first_sighting("c", 20)
    True
    """

    __slots__ = ("_max_keys", "_seen", "_window_s")

    def __init__(self, window_s: float, max_keys: int) -> None:
        if window_s <= 0 or max_keys < 1:
            raise ValueError("window_s must be > 0 and max_keys >= 1")
        self._window_s = window_s
        self._max_keys = max_keys
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_sighting(self, key: Hashable, now: float) -> bool:
        """Record ``key`` at time ``now`` (seconds); False if it was already seen in the window."""
        seen = self._seen
        horizon = now - self._window_s
        while seen:
            oldest_key, oldest_at = next(iter(seen.items()))
            if oldest_at > horizon and len(seen) < self._max_keys:
                break
            del seen[oldest_key]
        if key in seen:
            if seen[key] > horizon:
                return False
            del seen[key]
        seen[key] = now
        return True


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
            if window.first_sighting(identity(family, env), env.ingest_ts.timestamp()):
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
