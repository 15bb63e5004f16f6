"""Typed joints between the TA operators: what passes from one step to the next, and the split.

Two shapes, each with one composite that splits it into typed streams (and
:func:`split_type` for a stream of two item types):

* :func:`split_dead_letters`: a stream of ``X | DeadLetter`` (a decoding step emits its
  results and, for bad input, dead letters in one ``flat_map_batch``) into ``Stream[X]`` and
  ``Stream[DeadLetter]``. The narrowing from ``X | DeadLetter`` to ``X`` is written once, here,
  instead of a ``type: ignore`` at every ``op.branch``.
* :class:`GroupRows` and :func:`group_rows`: a keyed TA step (microbars, indicators) emits, per
  activation of a key group, **one** item holding all its rows, its dead letters and its
  progress mark, instead of one item per row. Why: at 5,000 symbols a batch closes thousands of
  bars and signals, and every item crossing a Bytewax step costs a Python call per step
  (``branch`` predicate, ``key_rm``, ``filter``, keyed routing into the next step); with one
  item per key group and activation those costs are paid 16 times a batch, not per row.
  :func:`group_rows` flattens the rows for the sinks with one ``flat_map_batch`` per output.

>>> from operators.key_groups import KeyGroupProgress
>>> rows = GroupRows(["bar"], [], KeyGroupProgress("g00", 5, 3))
>>> _updates([("g00", rows)])
['bar', KeyGroupProgress(group='g00', shown_us=5, final_us=3)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeGuard, TypeVar, cast

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from operators.key_groups import KeyGroupProgress
from torghut.dead_letters import DeadLetter

__all__ = [
    "GroupRows",
    "RowStreams",
    "Split",
    "TypeSplit",
    "group_rows",
    "split_dead_letters",
    "split_type",
]

X = TypeVar("X")
Y = TypeVar("Y")
R = TypeVar("R")


@dataclass(frozen=True)
class Split(Generic[X]):
    """The two sides of :func:`split_dead_letters`."""

    items: Stream[X]
    dead_letters: Stream[DeadLetter]


@operator
def split_dead_letters(step_id: str, up: Stream[X | DeadLetter]) -> Split[X]:
    """Dead letters to one stream, everything else to the other (typed as such)."""
    branched = op.branch("branch", up, _is_dead_letter)
    return Split(cast(Stream[X], branched.falses), branched.trues)


def _is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    return type(item) is DeadLetter


@dataclass(frozen=True)
class TypeSplit(Generic[X, Y]):
    """The two sides of :func:`split_type`."""

    rest: Stream[X]
    of_type: Stream[Y]


@operator
def split_type(
    step_id: str, up: Stream[X | Y], kinds: type[Y] | tuple[type[Y], ...]
) -> TypeSplit[X, Y]:
    """Items of exactly one of ``kinds`` to one stream, everything else to the other (typed
    as such): what one input step reads from several sources (:mod:`operators.one_input`)."""
    exact = kinds if isinstance(kinds, tuple) else (kinds,)
    branched = op.branch("branch", up, lambda item: type(item) in exact)
    return TypeSplit(cast(Stream[X], branched.falses), cast(Stream[Y], branched.trues))


class GroupRows(NamedTuple, Generic[R]):
    """What one activation of a keyed TA step emits for its key group.

    ``rows`` in the order they were produced; ``mark``, if the group's progress moved, says
    every row of the group up to it is in this item or an earlier one (it follows ``rows``).
    """

    rows: list[R]
    dead: list[DeadLetter]
    mark: KeyGroupProgress | None


@dataclass(frozen=True)
class RowStreams(Generic[R]):
    """:func:`group_rows`' outputs: the rows, the rows with the marks, the dead letters."""

    rows: Stream[R]
    updates: Stream[R | KeyGroupProgress]
    """``rows`` in order with each key group's progress marks (for sinks flushing on them)."""
    dead_letters: Stream[DeadLetter]


@operator
def group_rows(step_id: str, keyed: Stream[tuple[str, GroupRows[R]]]) -> RowStreams[R]:
    """Flatten a keyed step's :class:`GroupRows` into rows, rows with marks, dead letters."""
    rows: Stream[R] = op.flat_map_batch("rows", keyed, _rows)
    updates: Stream[R | KeyGroupProgress] = op.flat_map_batch("updates", keyed, _updates)
    dead: Stream[DeadLetter] = op.flat_map_batch("dead_letters", keyed, _dead)
    return RowStreams(rows, updates, dead)


def _rows(batch: list[tuple[str, GroupRows[R]]]) -> list[R]:
    out: list[R] = []
    for _group, item in batch:
        out.extend(item.rows)
    return out


def _updates(batch: list[tuple[str, GroupRows[R]]]) -> list[R | KeyGroupProgress]:
    out: list[R | KeyGroupProgress] = []
    for _group, item in batch:
        out.extend(item.rows)
        if item.mark is not None:
            out.append(item.mark)
    return out


def _dead(batch: list[tuple[str, GroupRows[R]]]) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    for _group, item in batch:
        out.extend(item.dead)
    return out
