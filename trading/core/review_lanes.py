"""Per-symbol lanes on a few daemon threads: where LLM reviews run, off the dataflow worker.

Why lanes and not a plain thread pool: a review can take up to its deadline, and the dataflow
worker must keep reading signals meanwhile (a review on the worker froze ingest → TA → trading
for minutes). Running reviews elsewhere must not reorder one symbol's orders, though (a sell
overtaking the buy it closes), so each symbol has a FIFO lane; at most ``workers`` lanes run at
once (bounded concurrency) and at most ``max_pending`` jobs wait or run (bounded memory — a
caller whose job is refused decides what that means). Threads are daemons: a stopping process
never waits for a model's answer.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable

from torghut.logs import get_logger

__all__ = ["SymbolLanes"]

_log = get_logger("trading.core.review_lanes")


class SymbolLanes:
    """Runs jobs in order per key, ``workers`` keys at a time (see the module docstring)."""

    def __init__(self, workers: int, max_pending: int, *, name: str = "review") -> None:
        self._max_pending = max_pending
        self._lock = threading.Condition()
        self._lanes: dict[str, deque[Callable[[], None]]] = {}
        self._pending = 0
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, key: str, job: Callable[[], None]) -> bool:
        """Queue ``job`` behind ``key``'s earlier jobs; ``False`` (not queued) when full."""
        with self._lock:
            if self._pending >= self._max_pending:
                return False
            self._pending += 1
            lane = self._lanes.get(key)
            if lane is not None:
                lane.append(job)
                return True
            self._lanes[key] = deque([job])
        self._ready.put(key)
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job waits or runs; ``False`` if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Let the threads end once the jobs already queued have run."""
        for _ in self._threads:
            self._ready.put(None)

    def _work(self) -> None:
        while (key := self._ready.get()) is not None:
            self._drain(key)

    def _drain(self, key: str) -> None:
        while True:
            with self._lock:
                job = self._lanes[key][0]
            try:
                job()
            except Exception:  # noqa: BLE001 - a thread boundary: log it, keep the lane going
                _log.exception("review_job_failed", key=key)
            with self._lock:
                lane = self._lanes[key]
                lane.popleft()
                self._pending -= 1
                if not lane:
                    del self._lanes[key]
                    self._lock.notify_all()
                    return
