"""Garbage-collector settings of the streaming processes (the TA flow, the all-in-one flow).

Why: reference counting frees almost everything these processes allocate; the cyclic collector
only has to find cycles, and the TA flow makes tens of thousands of short-lived containers per
input batch (tick tuples, partial sets, per-second dicts) next to a large long-lived state.
With CPython's default generation-0 threshold (700 allocations) the collector runs many times
per batch, and every run finds the batch's temporaries still alive, promotes them, and
traverses them again in the older generations. A threshold of 100 000 lets a batch's
temporaries die by reference counting before a collection sees them: measured 10–20 % more
events per CPU-second on ``python -m bench.ta``. Cyclic garbage (rare here) waits a little
longer, bounded by that many allocations. ``gc.freeze()`` then moves everything that exists
at start-up (modules, classes, configuration) out of the collector's reach for good.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "tune_for_streaming"]

GEN0_THRESHOLD = 100_000


def tune_for_streaming(gen0: int = GEN0_THRESHOLD) -> None:
    """Raise the generation-0 threshold and freeze what exists now; call once, at start-up."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
    gc.freeze()
