"""Windowed mean and population σ with a proven error bound and O(1) amortised work.

Why not plain running sums: adding the newest value and subtracting the oldest leaves the
rounding error of every value that ever passed through the window in the sums, and
``E[x²] - E[x]²`` of prices near 1e4 with a tiny spread cancels almost every digit. Why not a
fresh two-pass over the window each bar: that is O(N) per bar.

Method: the window keeps the sums of deviations from a shift ``K``, ``A = Σ(x - K)`` and
``B = Σ(x - K)²``, and a running upper bound on their accumulated rounding error (each float
operation errs by at most ``u·|result|``, ``u = 2^-53``). The second moment is
``M2 = B - A²/N``. Whenever the bound could exceed ``TOLERANCE · M2`` (relative error 1e-11 in
the variance, 5e-12 in σ), the window is re-summed exactly-rounded with ``math.fsum`` around a
fresh shift ``K = mean`` and the bound restarts near zero. Drift therefore never builds up over
long series, and a large jump leaving the window triggers a re-sum instead of leaving residue.
Re-sums are rare for ordinary price paths (when the mean wanders far from ``K`` or a jump
leaves), so the work is O(1) amortised; an adversarial series can force one per bar, which
costs O(N) with N = 20 or 60.

A window whose values are all identical is recognised by a run-length counter, so constant
prices give σ = 0 and a mean equal to the price exactly.
"""

from __future__ import annotations

import math
from typing import Any

from torghut.ta.packed_state import restore_slots

__all__ = ["RollingMoments"]

_U = 2.0**-53
_U4 = 4.0 * _U
TOLERANCE = 1e-11


class RollingMoments:
    """The last ``size`` values, with their mean and σ (ddof = 0) once ``size`` are in."""

    __slots__ = (
        "_a",
        "_b",
        "_count",
        "_err_a",
        "_err_b",
        "_head",
        "_k",
        "_ring",
        "_run",
        "_run_before",
        "size",
    )

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.size = size
        self._ring: list[float] = [0.0] * size
        self._head = 0
        self._count = 0
        self._k = 0.0
        self._a = 0.0
        self._b = 0.0
        self._err_a = 0.0
        self._err_b = 0.0
        self._run = 0
        self._run_before = 0

    def update(self, x: float) -> tuple[float, float] | None:
        """Append ``x`` (dropping the oldest value once full); return ``(mean, σ)`` of the
        window, or ``None`` until ``size`` values have been seen."""
        ring = self._ring
        head = self._head
        size = self.size
        prev = ring[head - 1]
        old = ring[head]
        ring[head] = x
        self._head = head + 1 if head + 1 < size else 0
        self._run_before = run = self._run
        self._run = run = run + 1 if run and x == prev else 1
        if self._count < size:
            self._count += 1
            if self._count < size:
                return None
            self._resum()
            return self._stats(run, self._a, self._b)
        k = self._k
        d = x - k
        e = old - k
        dd = d * d
        ee = e * e
        self._a = a = self._a + (d - e)
        self._b = b = self._b + (dd - ee)
        self._err_a += _U * (abs(d) + abs(e) + 2.0 * abs(a))
        self._err_b += _U4 * (dd + ee + abs(b))
        return self._stats(run, a, b)

    def __getstate__(
        self,
    ) -> tuple[int, list[float], int, int, float, float, float, float, float, int, int]:
        """Flat, for cheap snapshots (``packed_state.py``): pickle writes the ring of floats
        in one pass."""
        return (
            self.size,
            self._ring,
            self._head,
            self._count,
            self._k,
            self._a,
            self._b,
            self._err_a,
            self._err_b,
            self._run,
            self._run_before,
        )

    def __setstate__(self, state: Any) -> None:
        if restore_slots(self, state):
            return
        (
            self.size,
            ring,
            self._head,
            self._count,
            self._k,
            self._a,
            self._b,
            self._err_a,
            self._err_b,
            self._run,
            self._run_before,
        ) = state
        self._ring = list(ring)

    def revise(self, x: float) -> tuple[float, float] | None:
        """Replace the most recently added value by ``x`` (a corrected bar); as ``update``."""
        if self._count == 0:
            raise ValueError("no value to replace")
        ring = self._ring
        size = self.size
        newest = self._head - 1 if self._head else size - 1
        old = ring[newest]
        ring[newest] = x
        run = self._run_before
        self._run = run = run + 1 if run and x == ring[newest - 1] else 1
        if self._count < size:
            return None
        k = self._k
        d = x - k
        e = old - k
        dd = d * d
        ee = e * e
        self._a = a = self._a + (d - e)
        self._b = b = self._b + (dd - ee)
        self._err_a += _U * (abs(d) + abs(e) + 2.0 * abs(a))
        self._err_b += _U4 * (dd + ee + abs(b))
        return self._stats(run, a, b)

    def _stats(self, run: int, a: float, b: float) -> tuple[float, float]:
        size = self.size
        if run >= size:
            return self._ring[self._head - 1], 0.0
        m2 = b - a * a / size
        err_a = self._err_a
        if self._err_b + (2.0 * abs(a) * err_a + err_a * err_a) / size + _U4 * b > TOLERANCE * m2:
            self._resum()
            a = self._a
            m2 = self._b - a * a / size
        return self._k + a / size, math.sqrt(m2 / size) if m2 > 0.0 else 0.0

    def _resum(self) -> None:
        ring = self._ring
        k = math.fsum(ring) / self.size
        deviations = [x - k for x in ring]
        self._k = k
        self._a = math.fsum(deviations)
        self._b = b = math.fsum([d * d for d in deviations])
        self._err_a = _U * abs(self._a)
        self._err_b = _U4 * b
