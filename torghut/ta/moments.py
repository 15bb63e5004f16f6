"""Exact windowed sums for Bollinger bands and realised volatility: no drift, ever.

Why not float running sums: adding the newest value and subtracting the oldest leaves the
rounding error of every value that ever passed through the window in the sums, and the
variance ``E[x²] - E[x]²`` of prices near 1e4 with a tiny spread cancels almost all digits.
Why not recomputing each window: that is O(N) per bar.

Instead each value is held as an exact integer in fixed point, ``X = trunc(x · 2^F)`` (exact
for every double with ``|x| ≥ 2^(52-F)``; below that the truncation is under ``2^-F``), and the
window keeps the exact integer sums ``S1 = ΣX`` and ``S2 = ΣX²``. Python integers do not
round, so after 10^9 bars the sums are still the sums of exactly the values in the window.
Mean and population variance are then single correctly rounded divisions:

    mean = S1 / (N · 2^F),    var = (N · S2 - S1²) / (N² · 2^(2F))

so a constant window has variance exactly 0, and every result is within half an ulp of the
exact statistic of the (fixed-point) inputs. Cost: a handful of small-integer operations.
"""

from __future__ import annotations

import math

__all__ = ["ExactWindow"]


class ExactWindow:
    """The last ``size`` values with exact mean and population σ, O(1) per value."""

    __slots__ = ("_count", "_head", "_ring", "_s1", "_s2", "_scale", "_shift", "size")

    def __init__(self, size: int, fraction_bits: int = 64) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.size = size
        self._shift = fraction_bits
        self._scale = float(2**fraction_bits)
        self._ring: list[int] = [0] * size
        self._head = 0
        self._count = 0
        self._s1 = 0
        self._s2 = 0

    @property
    def full(self) -> bool:
        """True once ``size`` values have been pushed."""
        return self._count >= self.size

    def push(self, x: float) -> None:
        """Append ``x``, dropping the oldest value once the window is full."""
        fixed = int(x * self._scale)
        head = self._head
        old = self._ring[head]
        self._ring[head] = fixed
        self._head = head + 1 if head + 1 < self.size else 0
        self._s1 += fixed - old
        self._s2 += fixed * fixed - old * old
        if self._count < self.size:
            self._count += 1

    def replace_newest(self, x: float) -> None:
        """Replace the most recently pushed value by ``x`` (a corrected bar)."""
        if self._count == 0:
            raise ValueError("no value to replace")
        fixed = int(x * self._scale)
        newest = self._head - 1 if self._head else self.size - 1
        old = self._ring[newest]
        self._ring[newest] = fixed
        self._s1 += fixed - old
        self._s2 += fixed * fixed - old * old

    def mean(self) -> float:
        """Mean of the values in the window (correctly rounded)."""
        return self._s1 / (self._count << self._shift)

    def std(self) -> float:
        """Population standard deviation (ddof = 0) of the values in the window."""
        n = self._count
        numerator = n * self._s2 - self._s1 * self._s1
        return math.sqrt(numerator / ((n * n) << (2 * self._shift)))
