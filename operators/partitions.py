"""The source partitions of a TA input batch.

The Kafka source (:mod:`operators.kafka_source`) hands on one
:class:`~operators.kafka_source.PartitionBatch` per poll of a topic-partition; the feed's time
is kept per source partition (:mod:`operators.microbars`), so the TA steps split what Bytewax
hands them by partition first. In-process sources (the all-in-one flow's websocket, tests,
benchmarks) hand on plain values, bytes or envelopes: one feed, ``"feed"``.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from operators.kafka_source import PartitionBatch
from torghut.events import Envelope

__all__ = ["TaInput", "by_partition", "of_topic", "raw_values"]

TaInput = PartitionBatch | bytes | Envelope[Any]
"""An item of a TA input stream: a poll of the Kafka source, the message bytes of an
in-process source, or an envelope already decoded (the general path decodes nothing)."""


def by_partition(batch: list[TaInput]) -> list[tuple[str, list[Any]]]:
    """The batch's message values per source partition (``topic/partition``), in order.

    Bytewax may hand one operator call the polls of several source partitions (it
    concatenates what the partitions of one worker polled), so the feed's time is kept per
    partition only if the batch is split here: the Kafka source hands on one
    :class:`~operators.kafka_source.PartitionBatch` per poll. Other values (bytes, envelopes
    of the all-in-one flow's single websocket) come from one feed: ``"feed"``.
    """
    if not batch:
        return []
    if not _polls(batch):
        return [("feed", batch)]
    if len(batch) == 1:
        return [(batch[0].source_id, batch[0].values)]
    split: dict[str, list[Any]] = {}
    for polled in batch:
        held = split.get(polled.source_id)
        if held is None:
            split[polled.source_id] = list(polled.values)
        else:
            held.extend(polled.values)
    return list(split.items())


def raw_values(batch: list[TaInput]) -> list[Any]:
    """The values of a batch, whatever their source partitions (see :func:`by_partition`)."""
    if _polls(batch):
        return [v for polled in batch for v in polled.values]
    return batch


def _polls(batch: list[TaInput]) -> TypeGuard[list[PartitionBatch]]:
    """Whether the batch holds polls of the Kafka source. A batch comes from one input, whose
    items are all of one kind, so its first item says: one check per batch, not per item."""
    return bool(batch) and type(batch[0]) is PartitionBatch


@operator
def of_topic(step_id: str, polls: Stream[PartitionBatch], topic: str) -> Stream[PartitionBatch]:
    """The polls of one topic's partitions (one input step reads several topics: see
    :mod:`operators.one_input`)."""
    prefix = f"{topic}/"
    return op.filter("filter", polls, lambda polled: polled.source_id.startswith(prefix))
