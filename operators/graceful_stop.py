"""SIGINT / SIGTERM end a dataflow through its sources' EOF: exit 0, state snapshotted.

Why: under ``python -m bytewax.run`` a signal is a crash. The Rust runtime polls Python's
signal handlers (``check_signals``) from its main loop; Python's default SIGINT handler raises
``KeyboardInterrupt`` there, which Bytewax turns into ``BytewaxRuntimeError: signal
received`` and a panic (exit 1), and SIGTERM's default action kills the process (exit 143).
Either way no final snapshot is written and a restart replays the last epoch
(``shared/bytewax-notes.md`` §4.7). The only clean end Bytewax knows is the EOF of every
input: then each stateful step runs ``on_eof``, every sink flushes and closes, and a final
snapshot (source offsets included) is written at the EOF epoch.

So :meth:`GracefulStop.install` replaces both handlers with one that only sets an event, and
:func:`stoppable` wraps each input so that its partitions raise ``StopIteration`` (EOF) at
their next poll once the event is set. A second signal restores the default handlers, so a
third one stops the process the hard way if the clean stop hangs.

What EOF means for the TA flow: at the end of the input (a backfill) open bars are published
as they stand; after a requested stop they are not — the TA steps see the same event
(``TaProgress.stop_requested``) and keep their open bars and staged quotes in the state that the
EOF snapshot writes, so a restart closes them on the feed's time exactly as an uninterrupted run
would (no bar final before the feed has passed it, no correction caused by the stop).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Generic, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from torghut.logs import get_logger

__all__ = ["GracefulStop", "stoppable"]

X = TypeVar("X")
S = TypeVar("S")

log = get_logger("operators.graceful_stop")

_RECHECK = timedelta(milliseconds=200)
"""Longest a partition sleeps before it looks at the stop event again."""


class GracefulStop:
    """The stop request of one process: set by SIGINT/SIGTERM (or :meth:`request`)."""

    def __init__(self, requested: threading.Event | None = None) -> None:
        self.requested = requested if requested is not None else threading.Event()

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (must run in the main thread, e.g. at flow import)."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def request(self, reason: str = "requested") -> None:
        if not self.requested.is_set():
            log.info("graceful_stop", reason=reason)
        self.requested.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            log.warning("graceful_stop_repeated", signal=signal.Signals(signum).name)
            return
        self.request(signal.Signals(signum).name)


def stoppable(source: FixedPartitionedSource[X, S], stop: GracefulStop) -> _Stoppable[X, S]:
    """``source`` whose partitions end (EOF) at their next poll once ``stop`` is requested."""
    return _Stoppable(source, stop.requested)


class _Stoppable(FixedPartitionedSource[X, S], Generic[X, S]):
    def __init__(self, inner: FixedPartitionedSource[X, S], stop: threading.Event) -> None:
        self._inner = inner
        self._stop = stop

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: S | None
    ) -> _StoppablePartition[X, S]:
        inner = self._inner.build_part(step_id, for_part, resume_state)
        return _StoppablePartition(inner, self._stop)


class _StoppablePartition(StatefulSourcePartition[X, S], Generic[X, S]):
    def __init__(self, inner: StatefulSourcePartition[X, S], stop: threading.Event) -> None:
        self._inner = inner
        self._stop = stop

    def next_batch(self) -> Iterable[X]:
        if self._stop.is_set():
            raise StopIteration
        return self._inner.next_batch()

    def next_awake(self) -> datetime | None:
        awake = self._inner.next_awake()
        if awake is None:
            return None
        return min(awake, datetime.now(UTC) + _RECHECK)

    def snapshot(self) -> S:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()
