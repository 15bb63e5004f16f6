"""Small test helpers shared by all test suites."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from bytewax.dataflow import Dataflow

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Raises ``AssertionError(message)`` once ``timeout`` seconds have passed (the predicate is
    evaluated one last time at the deadline). Exceptions of the types in ``ignore`` count as
    "not yet" and the last one is chained to the AssertionError; any other exception propagates.
    ``message`` may be a callable, evaluated only on failure (to describe the last state).
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_exc = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (after {timeout:.1f}s)") from last_exc
        time.sleep(interval)


def all_steps(flow: Dataflow) -> list[Any]:
    """Every step of a built flow, substeps included, in the order they were built (the order
    a worker runs them in); ``step_id`` is what recovery state is filed under."""
    out: list[Any] = []

    def walk(steps: list[Any]) -> None:
        for step in steps:
            out.append(step)
            walk(step.substeps)

    walk(flow.substeps)
    return out
