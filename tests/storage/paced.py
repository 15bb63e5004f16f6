"""A resumable, paced Bytewax test source that can abort like a crash.

TestingSource emits faster than an epoch closes (so a crash would resume from zero), and its
PAUSE sentinel shifts the resume index; this source emits one item every ``interval`` with the
next index as its snapshot, so epochs close while it runs and resume is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bytewax.inputs import AbortExecution, FixedPartitionedSource, StatefulSourcePartition

X = TypeVar("X")


class PacedSource(FixedPartitionedSource[X, int], Generic[X]):
    """Items ``item(0) .. item(n-1)``; raises AbortExecution before index ``abort_at``."""

    def __init__(
        self,
        n: int,
        item: Callable[[int], X],
        abort_at: int | None = None,
        interval: timedelta = timedelta(milliseconds=2),
    ) -> None:
        self.n, self.item, self.abort_at, self.interval = n, item, abort_at, interval

    def list_parts(self) -> list[str]:
        return ["paced"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PacedPart[X]:
        return _PacedPart(self, resume_state or 0)


class _PacedPart(StatefulSourcePartition[X, int]):
    def __init__(self, spec: PacedSource[X], start: int) -> None:
        self.spec = spec
        self.next = start

    def next_batch(self) -> list[X]:
        if self.next == self.spec.abort_at:
            raise AbortExecution()
        if self.next >= self.spec.n:
            raise StopIteration
        self.next += 1
        return [self.spec.item(self.next - 1)]

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + self.spec.interval

    def snapshot(self) -> int:
        return self.next
