"""How far a source's "nothing pending" poll vouches for the wall clock, pauses included.

The TA steps close a quiet symbol's bar on the wall clock only once every source has reported a
poll that found nothing pending at or after the bar's due time
(:meth:`operators.ta_status.TaProgress.mark_source_drained`): "everything produced before
then has been read". A poll sees only what its own process has taken in, though, and when the
process did not run for a while (SIGSTOP, a VM or laptop suspended, a long stall of the
interpreter) its I/O threads did not run either: the first poll after the pause finds the
queues empty — Kafka's prefetch queue, with a high watermark cached before the pause; the
websocket's frame queue, with the frames sent before the pause still in the socket — and a
report at that poll's time let the steps close every open bar at once, then correct them as
the backlog came in (seen in ``make demo`` paused for 4 s: five final bars corrected).

So a source records every poll here, and a poll that found nothing pending vouches only for
what the source's own threads have certainly taken in:

* a gap of more than :data:`STALL_US` between two polls means the process did not run: the
  source is **live again** only from the poll after the gap, and vouches for nothing newer than
  before the gap until it has been live for ``settle_us`` — the time its I/O needs, once
  running, to take in what was waiting (for Kafka ``fetch.wait.max.ms``, within which the
  fetcher has a fetch response from after the pause; for the websocket, the time the reader
  thread needs to move the socket's backlog into the frame queue);
* a shorter pause is not seen as a gap, so every claim also leaves :data:`STALL_US` of
  margin: a poll at ``p`` vouches for ``p - settle_us - STALL_US``.

Conservative by construction: a long activation of the worker (a big batch, a snapshot) also
reads as a gap and only postpones idle closing by ``settle_us``; the feed's own time, which
closes bars while data flows, is untouched. The wall clock here only decides *when* bars may
close, never what they contain.
"""

from __future__ import annotations

__all__ = ["STALL_US", "CaughtUp"]

STALL_US = 250_000
"""A gap between two polls of one source longer than this (µs) is a pause of the process.

Bytewax polls a caught-up partition every few ms (``idle_poll_ms``) and a busy one after each
activation (tens of ms); 250 ms is longer than both and short enough that the margin it adds
to every claim is small beside the idle time (``TA_IDLE_CLOSE_MS``, 2.5 s)."""


class CaughtUp:
    """One source partition's polls → the wall time its caught-up polls may vouch for.

    >>> c = CaughtUp(settle_us=500_000)  # polled every 100 ms from t = 0
    >>> [c.vouch(t, caught_up=True) for t in range(0, 900_000, 100_000)]
    [None, None, None, None, None, None, None, None, 50000]
    >>> c.vouch(5_000_000, caught_up=True) is None  # 4.2 s without a poll: a pause
    True
    >>> [c.vouch(t, caught_up=True) for t in range(5_100_000, 5_900_000, 100_000)][-1]
    5050000
    """

    __slots__ = ("_last_us", "_live_since_us", "_margin_us", "latest_us")

    def __init__(self, settle_us: int) -> None:
        if settle_us < 0:
            raise ValueError(f"settle_us must be >= 0, got {settle_us}")
        self._margin_us = settle_us + STALL_US
        self._last_us: int | None = None
        self._live_since_us = 0
        self.latest_us: int | None = None
        """The newest time vouched for so far (None before the first)."""

    def vouch(self, polled_us: int, *, caught_up: bool) -> int | None:
        """Record a poll taken at wall time ``polled_us`` (every poll, busy or not); for one
        that found nothing pending, the wall time it vouches for, or None while the source has
        not been live long enough since it (re)started polling."""
        last = self._last_us
        if last is None or polled_us - last > STALL_US:
            self._live_since_us = polled_us
        self._last_us = polled_us if last is None else max(last, polled_us)
        if not caught_up:
            return None
        claim = polled_us - self._margin_us
        if claim < self._live_since_us:
            return None
        if self.latest_us is None or claim > self.latest_us:
            self.latest_us = claim
        return claim
