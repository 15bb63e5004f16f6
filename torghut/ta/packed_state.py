"""How the indicator classes pickle: each as a flat tuple of numbers, not an object graph.

Why: the TA flow snapshots every changed :class:`~torghut.ta.indicators.IndicatorEngine` at
every epoch end, and the worker stops meanwhile. Pickled the default way, an engine is a graph
of about fifteen ``__slots__`` objects, each written as its class, a slot-name dict and its
values (100–125 µs per engine on the shared 2-vCPU machine); as one tuple of tuples of floats
and ints, 18–22 µs (``bench/snapshots.py``). So each class defines ``__getstate__`` (its
fields as a flat tuple, its parts' tuples nested) and ``__setstate__`` (the reverse), and the
engine pickles its parts' tuples without their classes (:func:`rebuild`).

Snapshots taken before that (the recovery state of a running deployment) hold the default
form ``(None, {slot: value})``; :func:`restore_slots` still accepts it, so they restore.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

__all__ = ["rebuild", "restore_slots"]


class _Stateful(Protocol):
    def __setstate__(self, state: Any) -> None: ...


_T = TypeVar("_T", bound=_Stateful)


def restore_slots(obj: object, state: Any) -> bool:
    """Set ``obj``'s slots from a snapshot of the default form; False if ``state`` is not one."""
    if not (
        isinstance(state, tuple) and len(state) == 2 and state[0] is None and type(state[1]) is dict
    ):
        return False
    for name, value in state[1].items():
        object.__setattr__(obj, name, value)
    return True


def rebuild(cls: type[_T], state: Any) -> _T:
    """An instance of ``cls`` from its ``__getstate__`` tuple (what unpickling it does)."""
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj
