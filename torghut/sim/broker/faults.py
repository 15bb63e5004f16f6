"""Fault knobs for crash and retry tests of the trading loop.

The interesting failures sit between "the broker has the order" and "the client knows it":
an error or a withheld response after acceptance, a slow answer, a throttled request, a stream
that drops. Each knob is armed for a number of requests and consumed by the HTTP shell, so a
test states exactly which request misbehaves. All methods are thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torghut.sim.broker.book import Order

SubmitFaultMode = Literal["error_before_accept", "error_after_accept", "delay", "hold"]


@dataclass(frozen=True, slots=True)
class SubmitFault:
    """How one ``POST /v2/orders`` misbehaves.

    * ``error_before_accept``: answer ``status`` without creating the order.
    * ``error_after_accept``: create the order, then answer ``status`` (504 makes alpaca-py
      retry, which then meets "client_order_id must be unique"; 500 surfaces as ``APIError``).
    * ``delay``: create the order and answer normally after ``delay`` seconds.
    * ``hold``: create the order and withhold the answer until :meth:`Faults.release_held`
      (or the simulator stops): a client with no timeout hangs, like a dropped response.
    """

    mode: SubmitFaultMode
    status: int = 504
    delay: float = 0.0


class Faults:
    """The armed faults of one simulator."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._submit: list[SubmitFault] = []
        self._throttle = 0
        self._on_accept: Callable[[Order], None] | None = None
        self._release_listeners: list[Callable[[], None]] = []

    def fail_next_submits(
        self, count: int = 1, *, status: int = 504, after_accept: bool = True
    ) -> None:
        mode: SubmitFaultMode = "error_after_accept" if after_accept else "error_before_accept"
        self._arm(SubmitFault(mode, status=status), count)

    def delay_next_submits(self, seconds: float, count: int = 1) -> None:
        self._arm(SubmitFault("delay", delay=seconds), count)

    def hold_next_submits(self, count: int = 1) -> None:
        self._arm(SubmitFault("hold"), count)

    def throttle_next_requests(self, count: int) -> None:
        """Answer the next ``count`` REST requests with 429 before looking at them."""
        with self._lock:
            self._throttle = count

    def on_accept(self, callback: Callable[[Order], None] | None) -> None:
        """Call ``callback(order)`` after the broker has each new order, before the response.

        Runs on the server thread; use it to kill a client process at the worst moment.
        """
        with self._lock:
            self._on_accept = callback

    def release_held(self) -> None:
        """Let every withheld submit response go out."""
        with self._lock:
            listeners = list(self._release_listeners)
        for listener in listeners:
            listener()

    def clear(self) -> None:
        """Disarm everything (held responses stay held until released)."""
        with self._lock:
            self._submit.clear()
            self._throttle = 0
            self._on_accept = None

    def take_submit_fault(self) -> SubmitFault | None:
        with self._lock:
            return self._submit.pop(0) if self._submit else None

    def take_throttle(self) -> bool:
        with self._lock:
            if self._throttle <= 0:
                return False
            self._throttle -= 1
            return True

    def accepted(self, order: Order) -> None:
        with self._lock:
            callback = self._on_accept
        if callback is not None:
            callback(order)

    def add_release_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._release_listeners.append(listener)

    def remove_release_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._release_listeners.remove(listener)

    def _arm(self, fault: SubmitFault, count: int) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._submit.extend([fault] * count)
