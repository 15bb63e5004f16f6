"""Small test helpers shared by all test suites."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from bytewax.dataflow import Dataflow

from operators.caught_up import STALL_US

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


def check_vouching_across_a_pause(
    next_batch: Callable[[], object], vouched: Callable[[], int], margin_us: int
) -> None:
    """A source partition's caught-up reports around a pause of its polling
    (:class:`operators.caught_up.CaughtUp`): polled every 10 ms it vouches, for no later than
    ``margin_us`` before its poll and no earlier than its first poll; after 0.5 s without a
    poll (the process stopped) its first poll vouches for nothing new, and later claims never
    reach back into the pause. ``vouched()`` is the time last reported (0: registered only)."""
    started: list[int] = []
    ended: list[int] = []

    def poll() -> int:
        started.append(time.time_ns() // 1000)
        next_batch()
        ended.append(time.time_ns() // 1000)
        return vouched()

    wait_until(lambda: poll() > 0, timeout=30, interval=0.01, message="never caught up")
    before = vouched()
    assert started[0] <= before <= ended[-1] - margin_us
    time.sleep(2 * STALL_US / 1e6)  # the scenario itself, not a wait: no poll for 0.5 s
    resumed = time.time_ns() // 1000
    assert poll() == before, "the first poll after the pause vouched for the pause"
    wait_until(lambda: poll() > before, timeout=30, interval=0.01, message="never again")
    assert vouched() >= resumed
