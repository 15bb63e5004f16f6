"""What the benches read of a process or thread from Linux's ``/proc`` (one parser for both)."""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "thread_name"]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat: str) -> float:
    """User + system CPU seconds from the text of a ``/proc/<pid>[/task/<tid>]/stat`` (the
    12th and 13th fields after the parenthesised name, which may itself hold spaces)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_name(stat: str) -> str:
    """The name in the same text (``comm``)."""
    return stat[stat.index("(") + 1 : stat.rindex(")")]
