"""Garbage-collector settings of the long-running ingest and TA processes.

Why: the TA flow allocates container objects at a high rate (envelopes, bars, signals, batch
lists) while its keyed state (per-symbol bars, indicator engines, pending bars) grows with the
number of symbols, and CPython's default thresholds (700, 10, 10) run a young collection every
700 allocations and a full one every 100 young ones. Nearly all of that garbage is freed by
reference counting, so those collections mostly re-traverse live state: interleaved in one
process (``bench/ta.py``'s in-process TA, 1 M events, 5,000 symbols) the flow took 22 % less
CPU with ``(50_000, 20, 100)`` than with the defaults (273-279 k vs 332-336 k events per
CPU-second), and within noise at 500 symbols. Start-up objects (modules, settings, the graph)
live for good, so they are also frozen out of the collector's reach.

The ingest flow allocates at the same rate (a frame, its events and envelopes per message) and
a full collection there holds the GIL while the websocket reader waits: with the default
thresholds in ingest, ``bench/latency.py``'s bar end → feed passed at the TA input was p99
485–578 ms and provisional rows p99 747–748 ms in two quiet runs; with this policy 90–280 and
319–435 ms in three (the same machine and hour; the runs vary, the direction held).
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "tune_for_streaming"]

THRESHOLDS = (50_000, 20, 100)


def tune_for_streaming() -> None:
    """Freeze what exists now and raise the collection thresholds (call once, at start)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
