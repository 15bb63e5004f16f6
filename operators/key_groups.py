"""Key groups: the unit of keyed state in the TA flow.

Why not one key per symbol: Bytewax runs a keyed step once per key present in a batch, and at
500 symbols every quote batch touched every symbol, so the flow spent more time in those
activations (a ``QuoteUpdate`` per symbol, the step's bookkeeping, a timer check) than in the
quotes themselves. Like Flink's key groups, symbols are hashed into a fixed number of groups;
a group's state holds its symbols' states side by side, and one batch activates each group
once. The maths stays per symbol (per symbol and window for the indicators): grouping changes
who carries the state, not what is computed.

The group count is fixed, not configured: it names the recovery state (a symbol must find its
state in the same group after a restart) and bounds the parallelism (at most
:data:`KEY_GROUPS` workers can share a keyed step). The hash is CRC-32, stable across
processes and Python versions, unlike ``hash()``.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

__all__ = ["ALL_GROUPS", "KEY_GROUPS", "KEY_GROUPS_SEEN", "KeyGroupProgress", "key_group"]

KEY_GROUPS = 16
"""Number of key groups; changing it orphans existing recovery state."""

ALL_GROUPS = tuple(f"g{i:02d}" for i in range(KEY_GROUPS))
"""Every group's key: the feed's time is broadcast to all of them with each input batch."""


class KeyGroupProgress(NamedTuple):
    """A key group's progress mark, emitted after its rows, in the same stream.

    Every row of the group ending at or before ``shown_us`` has been emitted (provisional or
    final); every final row ending at or before ``final_us`` too. A sink that has the marks of
    all :data:`KEY_GROUPS` groups knows the rows up to the smallest are complete (Flink's
    watermark as the minimum over input channels), because each group's mark follows its rows.
    """

    group: str
    shown_us: int
    final_us: int


KEY_GROUPS_SEEN: dict[str, str] = {}
"""The groups :func:`key_group` has computed (bounded): hot loops look a symbol up here first."""
_CACHE_MAX = 100_000


def key_group(symbol: str) -> str:
    """The key group of ``symbol`` (``"g00"`` … ``"g15"``).

    >>> key_group("AAPL") == key_group("AAPL")
    True
    """
    group = KEY_GROUPS_SEEN.get(symbol)
    if group is None:
        if len(KEY_GROUPS_SEEN) >= _CACHE_MAX:
            KEY_GROUPS_SEEN.clear()
        group = KEY_GROUPS_SEEN[symbol] = f"g{zlib.crc32(symbol.encode()) % KEY_GROUPS:02d}"
    return group
