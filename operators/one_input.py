"""Several partitioned sources read by one Bytewax input step, so their epochs stay in step.

Why: Bytewax (0.21) keeps an epoch per input *step*, and a step's partitions advance to the
next epoch only when the step runs after the epoch interval has passed *and* every output has
finished the current epoch (its back-pressure: ``probe.less_than(epoch)`` in
``partitioned_input``); the next epoch's clock then starts from that moment. With several
input steps (trades, quotes, bars, the status heartbeat) each step's clock starts at a
different moment, and a step that reaches its epoch end first reads nothing until the others
reach theirs. The offsets drift by the wait every epoch, so the pause grows until it wraps at
the epoch interval: measured in ``bench/latency.py`` (500 symbols, 10 k events/s, 5 s
epochs) the TA worker stopped reading for 0.1 s, then 0.2, … up to 2.5 s every epoch, and the
bars of one second in five were emitted that much later. The partitions of one step share
its clock, so one step reading every source has no such wait.

Parts keep their sources' keys (the Kafka source's ``"{partition}-{topic}"`` resumes its
offsets from a recovery store written under the same step id); keys must be distinct.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

__all__ = ["OneInput", "one_input"]

X = TypeVar("X")
Y = TypeVar("Y")


def one_input(
    first: FixedPartitionedSource[X, Any], second: FixedPartitionedSource[Y, Any]
) -> OneInput[X, Y]:
    """One source with the partitions of both (items ``X | Y``; split them downstream)."""
    return OneInput(first, second)


class OneInput(FixedPartitionedSource[X | Y, Any], Generic[X, Y]):
    """The partitions of two sources as one; see the module docstring for why."""

    def __init__(
        self, first: FixedPartitionedSource[X, Any], second: FixedPartitionedSource[Y, Any]
    ) -> None:
        self._sources: tuple[FixedPartitionedSource[Any, Any], ...] = (first, second)
        self._owner: dict[str, FixedPartitionedSource[Any, Any]] = {}

    def list_parts(self) -> list[str]:
        owner: dict[str, FixedPartitionedSource[Any, Any]] = {}
        for source in self._sources:
            for key in source.list_parts():
                if key in owner:
                    raise ValueError(
                        f"partition {key!r} is listed by {type(owner[key]).__name__} and by "
                        f"{type(source).__name__}: one input needs distinct partition keys"
                    )
                owner[key] = source
        self._owner = owner
        return list(owner)

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any | None
    ) -> StatefulSourcePartition[X | Y, Any]:
        if for_part not in self._owner:  # resumed before this worker listed the parts
            self.list_parts()
        source = self._owner.get(for_part)
        if source is None:
            raise ValueError(
                f"step {step_id!r}: no source lists partition {for_part!r} "
                f"(partitions now: {sorted(self._owner)})"
            )
        part: StatefulSourcePartition[X | Y, Any] = source.build_part(
            step_id, for_part, resume_state
        )
        return part
