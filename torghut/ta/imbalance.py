"""Top-of-book fields of a signal: the latest quote at or before the bar end, if fresh.

Definition: for a bar ending at ``E``, take the quote with the greatest event time ``ts ≤ E``
(ties: the one received last). If there is none, or ``E - ts > max_age`` (configurable,
``TaSettings.quote_max_age_ms``), every imbalance field is ``None``. Otherwise
``imbalance_bid_px/ask_px`` are the quote's prices, ``imbalance_bid_sz/ask_sz`` its sizes
(whole shares), and ``imbalance_spread = ask - bid``. A price of 0 means that side is empty
(Alpaca's convention): that side's price and size are ``None``, and so is the spread.

Why a small book rather than "the last quote received": bars close after the allowed lateness,
so when the bar ending at ``E`` is computed, quotes from after ``E`` have usually arrived
already. Only one quote per bar interval can ever be "the latest at or before" a bar end, so
the book keeps, per interval ``(k·W - W, k·W]`` of the bar grid (``W`` the window size), the
latest quote, plus the best quote at or before the last processed bar end. That is a few
entries per symbol; at most ``max_pending`` intervals are kept (the oldest folds into the
carried quote), so a symbol quoted for hours without trading stays small. Bar ends are assumed
to lie on the grid, as both lanes' bars do.
"""

from __future__ import annotations

from typing import Any

from msgspec.structs import astuple

from torghut.events import Quote
from torghut.ta.packed_state import restore_slots

__all__ = ["Imbalance", "QuoteBook"]

Imbalance = tuple[float | None, float | None, float | None, int | None, int | None]
"""``(spread, bid_px, ask_px, bid_sz, ask_sz)``."""

_NO_QUOTE: Imbalance = (None, None, None, None, None)


class QuoteBook:
    """Recent quotes of one symbol, enough to answer ``at(bar_end)`` in O(1)."""

    __slots__ = ("_carry", "_pending", "grid_us", "max_age_us", "max_pending")

    def __init__(self, grid_us: int, max_age_us: int, max_pending: int = 64) -> None:
        if grid_us < 1 or max_age_us < 0 or max_pending < 1:
            raise ValueError("grid_us and max_pending must be >= 1 and max_age_us >= 0")
        self.grid_us = grid_us
        self.max_age_us = max_age_us
        self.max_pending = max_pending
        self._carry: tuple[int, Quote] | None = None
        self._pending: dict[int, tuple[int, Quote]] = {}

    def add(self, ts_us: int, quote: Quote) -> None:
        """Record a quote with event time ``ts_us`` (µs since the epoch), in any order."""
        carry = self._carry
        if carry is not None and ts_us <= carry[0]:
            if ts_us == carry[0]:
                self._carry = (ts_us, quote)
            return
        slot = -(-ts_us // self.grid_us)
        pending = self._pending
        held = pending.get(slot)
        if held is None or ts_us >= held[0]:
            pending[slot] = (ts_us, quote)
        if len(pending) > self.max_pending:
            self._fold(pending.pop(min(pending)))

    def at(self, end_us: int) -> Imbalance:
        """Imbalance fields for the bar ending at ``end_us``; folds older quotes away."""
        pending = self._pending
        if pending:
            end_slot = -(-end_us // self.grid_us)
            for slot in [s for s in pending if s <= end_slot]:
                entry = pending[slot]
                if entry[0] <= end_us:
                    del pending[slot]
                    self._fold(entry)
        carry = self._carry
        if carry is None or end_us - carry[0] > self.max_age_us or carry[0] > end_us:
            return _NO_QUOTE
        quote = carry[1]
        bid = quote.bid_price
        ask = quote.ask_price
        has_bid = bid > 0.0
        has_ask = ask > 0.0
        return (
            ask - bid if has_bid and has_ask else None,
            bid if has_bid else None,
            ask if has_ask else None,
            int(quote.bid_size) if has_bid else None,
            int(quote.ask_size) if has_ask else None,
        )

    def __getstate__(self) -> tuple[int, int, int, tuple[Any, ...]]:
        """Flat, for cheap snapshots (``packed_state.py``): ``(slot, ts_us, *quote fields)``
        per held quote, slot ``None`` for the carried one; no ``Quote`` objects, which pickle
        several times slower than their fields."""
        carry = self._carry
        held: list[tuple[Any, ...]] = (
            [] if carry is None else [(None, carry[0], *astuple(carry[1]))]
        )
        held.extend((slot, ts, *astuple(quote)) for slot, (ts, quote) in self._pending.items())
        return self.grid_us, self.max_age_us, self.max_pending, tuple(held)

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        self.grid_us, self.max_age_us, self.max_pending, held = state
        self._carry = None
        self._pending = {}
        for slot, ts, *fields in held:
            entry = (ts, Quote(*fields))
            if slot is None:
                self._carry = entry
            else:
                self._pending[slot] = entry

    def _fold(self, entry: tuple[int, Quote]) -> None:
        carry = self._carry
        if carry is None or entry[0] >= carry[0]:
            self._carry = entry
