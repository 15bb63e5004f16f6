"""KafkaBatchSource on the real broker: every message once, exact resume, errors never skipped,
and "caught up" never vouched for across a pause of the process."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import msgspec
import pytest
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, cluster_main, run_main
from confluent_kafka import Producer

from operators.caught_up import STALL_US
from operators.kafka_source import (
    KafkaBatchSource,
    KafkaConsumeError,
    PartitionBatch,
    consumer_config,
)
from operators.ta_pipeline import ta_pipeline
from operators.ta_status import TaProgress
from tests.helpers import check_vouching_across_a_pause, wait_until
from tests.ta.conftest import SYMBOLS, make_market
from torghut.config import TaSettings
from torghut.dead_letters import DeadLetter

TopicFactory = Callable[..., str]


def _produce(
    bootstrap: str, topic: str, values: list[bytes | None], partitions: int, **config: Any
) -> None:
    p = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, **config}
    )
    for i, v in enumerate(values):
        p.produce(topic, v, partition=i % partitions)
    assert p.flush(30) == 0


def _config(bootstrap: str, batch: int = 100) -> dict[str, str]:
    return consumer_config({"bootstrap.servers": bootstrap}, batch_size=batch, prefetch_kb=256)


class _Drains:
    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def mark_source_drained(self, source_id: str, wall_us: int) -> None:
        self.seen[source_id] = wall_us


def _flow(source: KafkaBatchSource, out: list[Any], ids: set[str] | None = None) -> Dataflow:
    """The source's values (and, into ``ids``, the source ids of the polls they came in)."""
    flow = Dataflow("kafka_source_test")

    def values(polled: PartitionBatch) -> list[bytes | None]:
        assert isinstance(polled, PartitionBatch)
        if ids is not None:
            ids.add(polled.source_id)
        return polled.values

    op.output("out", op.flat_map("values", op.input("in", flow, source), values), TestingSink(out))
    return flow


def _values(polls: list[PartitionBatch]) -> list[bytes | None]:
    return [v for polled in polls for v in polled.values]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_message_is_read_exactly_once(
    kafka_bootstrap: str, unique_topic: TopicFactory, workers: int
) -> None:
    topic = unique_topic("src-once", partitions=4)
    values = [f"m{i}".encode() for i in range(5000)]
    _produce(kafka_bootstrap, topic, values, 4)
    out: list[Any] = []
    drains = _Drains()
    source = KafkaBatchSource(
        _config(kafka_bootstrap, batch=300),
        [topic],
        batch_size=300,
        exit_at_end=True,
        drained=drains,
    )
    ids: set[str] = set()
    flow = _flow(source, out, ids)
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=2)  # type: ignore[no-untyped-call]
    assert len(out) == len(values)
    assert sorted(out) == sorted(values)
    assert all(isinstance(v, bytes) for v in out)
    assert ids == {f"{topic}/{p}" for p in range(4)}, "every poll names its partition"
    assert set(drains.seen) <= {f"{topic}/{p}" for p in range(4)}


def test_caught_up_polls_vouch_for_nothing_from_before_a_pause_of_the_process(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    """After a gap in polling (the process was stopped, its fetcher too), the cached high
    watermark is from before the gap: the first polls must not report the source caught up
    at their own time, or the TA steps would idle-close bars whose trades still wait at the
    broker. Claims resume once the partition has been polled without a pause for the margin,
    and never reach back into the gap."""
    topic = unique_topic("src-pause", partitions=1)
    _produce(kafka_bootstrap, topic, [b"a"], 1)
    config = _config(kafka_bootstrap)
    margin_us = int(config["fetch.wait.max.ms"]) * 1000 + STALL_US
    drains = _Drains()
    part = KafkaBatchSource(config, [topic], batch_size=10, drained=drains).build_part(
        "in", f"0-{topic}", None
    )
    src = f"{topic}/0"
    assert drains.seen == {src: 0}, "registered before its first poll, not caught up"
    check_vouching_across_a_pause(part.next_batch, lambda: drains.seen[src], margin_us)
    part.close()


def test_caught_up_partitions_are_polled_again_together_on_one_grid(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    """Every caught-up partition asks to be polled at the next tick of one wall-clock grid
    (multiples of ``idle_poll_ms``), not ``idle_poll_ms`` after its own poll: so Bytewax polls
    them in one activation of the dataflow instead of one activation each. After a pause of
    polling, the tick is the one after the poll, never one already past."""
    topic = unique_topic("src-grid", partitions=3)
    _produce(kafka_bootstrap, topic, [b"a", b"b", b"c", b"d", b"e", b"f"], 3)
    idle_us = 400_000
    source = KafkaBatchSource(
        _config(kafka_bootstrap), [topic], batch_size=10, idle_poll_ms=idle_us / 1000
    )
    parts = [source.build_part("in", f"{p}-{topic}", None) for p in range(3)]
    read: list[bytes | None] = []

    def all_read() -> bool:  # then every partition had a fetch response: it is caught up
        for part in parts:
            read.extend(_values(part.next_batch()))
        return len(read) == 6

    wait_until(all_read, timeout=30, message=lambda: f"read only {read}")

    def polled_within_one_tick() -> tuple[int, list[int]] | None:
        before = time.time_ns() // 1000
        for part in parts:
            assert part.next_batch() == []
        after = time.time_ns() // 1000
        if before // idle_us != after // idle_us:
            return None  # a tick fell between the polls: poll them again
        awake = [part.next_awake() for part in parts]
        return after, [round(a.timestamp() * 1_000_000) for a in awake if a is not None]

    found = wait_until(polled_within_one_tick, timeout=30)
    assert found is not None
    after, awake_us = found
    assert len(awake_us) == 3, "a caught-up partition must ask to be polled again"
    assert len(set(awake_us)) == 1, f"not one instant: {awake_us}"
    assert awake_us[0] % idle_us == 0, "not on the grid"
    assert after < awake_us[0] <= after + idle_us, "not the next tick"
    # a pause: not polled for more than a tick, a partition asks for the tick after its poll
    wait_until(lambda: time.time_ns() // 1000 > awake_us[0] + idle_us, timeout=5, interval=0.01)
    paused = parts[0]
    assert paused.next_batch() == []
    polled = time.time_ns() // 1000
    resumed = paused.next_awake()
    assert resumed is not None
    resumed_us = round(resumed.timestamp() * 1_000_000)
    assert resumed_us % idle_us == 0, "not on the grid after a pause"
    assert polled < resumed_us <= polled + idle_us, "a stale tick after a pause"
    for part in parts:
        part.close()


def test_a_partition_behind_fills_its_batch_but_never_waits_for_messages_not_yet_sent(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    """Record batches of two messages and fetch responses of a few (a broker returns at least
    one whole record batch) keep the partition behind the broker's high watermark after its
    first poll, so it waits to fill its batch: for the 300 messages the broker has, not for
    the 1,000 of a full batch, which held the worker for the whole ``fill_ms`` (3 s here)
    while nothing more could come."""
    topic = unique_topic("src-fill", partitions=1)
    sent = [b"%04d" % i + b"x" * 996 for i in range(300)]
    _produce(kafka_bootstrap, topic, sent, 1, **{"batch.size": 2500})
    config = {**_config(kafka_bootstrap, batch=1000), "max.partition.fetch.bytes": "4096"}
    source = KafkaBatchSource(config, [topic], batch_size=1000, fill_ms=3000)
    part = source.build_part("in", f"0-{topic}", None)
    polls: list[PartitionBatch] = []
    started = time.monotonic()
    wait_until(
        lambda: polls.extend(part.next_batch()) or len(_values(polls)) >= len(sent),
        timeout=30,
        interval=0.001,
    )
    took = time.monotonic() - started
    part.close()
    assert _values(polls) == sent
    assert len(polls) <= 3, "a backlog is still read in full batches, not fetch by fetch"
    assert took < 1.5, f"waited {took:.2f} s for messages the broker did not have"


def test_exit_at_end_stops_at_the_high_watermark_seen_at_start(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    topic = unique_topic("src-end", partitions=1)
    _produce(kafka_bootstrap, topic, [b"a", b"b", b"c"], 1)
    source = KafkaBatchSource(_config(kafka_bootstrap), [topic], batch_size=2, exit_at_end=True)
    part = source.build_part("in", f"0-{topic}", None)
    _produce(kafka_bootstrap, topic, [b"later"], 1)  # after the start: not part of the backfill
    got: list[bytes | None] = []
    drains: list[bool] = []

    def read() -> bool:
        try:
            got.extend(_values(part.next_batch()))
        except StopIteration:
            drains.append(True)
        return bool(drains)

    wait_until(read, timeout=30, interval=0.01, message=lambda: f"read {got}")
    assert got == [b"a", b"b", b"c"]
    assert part.snapshot() == 3
    part.close()


def test_a_resumed_partition_reads_exactly_from_the_snapshot(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    topic = unique_topic("src-resume", partitions=1)
    _produce(kafka_bootstrap, topic, [f"v{i}".encode() for i in range(50)], 1)
    source = KafkaBatchSource(_config(kafka_bootstrap), [topic], batch_size=7, exit_at_end=True)
    first = source.build_part("in", f"0-{topic}", None)
    batch = wait_until(first.next_batch, timeout=30, interval=0.01)
    assert batch == [PartitionBatch(f"{topic}/0", [f"v{i}".encode() for i in range(7)])]
    snap = first.snapshot()
    assert snap == 7
    first.close()

    again = source.build_part("in", f"0-{topic}", snap)
    rest: list[bytes | None] = []

    def drain() -> bool:
        try:
            rest.extend(_values(again.next_batch()))
        except StopIteration:
            return True
        return False

    wait_until(drain, timeout=30, interval=0.01)
    assert rest == [f"v{i}".encode() for i in range(7, 50)]
    again.close()


def test_recovery_resumes_the_flow_from_the_snapshotted_offsets(
    kafka_bootstrap: str, unique_topic: TopicFactory, tmp_path: Path
) -> None:
    topic = unique_topic("src-recovery", partitions=2)
    _produce(kafka_bootstrap, topic, [f"a{i}".encode() for i in range(400)], 2)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))

    def run() -> list[Any]:
        out: list[Any] = []
        source = KafkaBatchSource(
            _config(kafka_bootstrap, 50), [topic], batch_size=50, exit_at_end=True
        )
        run_main(  # type: ignore[no-untyped-call]
            _flow(source, out), epoch_interval=timedelta(0), recovery_config=recovery
        )
        return out

    assert sorted(run()) == sorted(f"a{i}".encode() for i in range(400))
    _produce(kafka_bootstrap, topic, [f"b{i}".encode() for i in range(60)], 2)
    assert sorted(run()) == sorted(f"b{i}".encode() for i in range(60))
    assert run() == []


def test_an_errored_message_stops_the_flow_naming_where(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    topic = unique_topic("src-error", partitions=1)
    _produce(kafka_bootstrap, topic, [b"x"] * 5, 1)
    source = KafkaBatchSource(_config(kafka_bootstrap), [topic], batch_size=10)
    part = source.build_part("in", f"0-{topic}", 1000)  # retention lost it: no such offset
    with pytest.raises(KafkaConsumeError, match=rf"{topic}/0.*next offset to read 1000"):
        wait_until(part.next_batch, timeout=30, interval=0.01)
    assert part.snapshot() == 1000  # nothing skipped: a restart still starts there
    part.close()

    out: list[Any] = []
    with pytest.raises(BytewaxRuntimeError) as failed:
        run_main(_flow(_Resumed(source, 1000), out))  # type: ignore[no-untyped-call]
    assert "next offset to read 1000" in _chain(failed.value)
    assert out == []


def _chain(exc: BaseException | None) -> str:
    text = []
    while exc is not None:
        text.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(text)


class _Resumed(FixedPartitionedSource[bytes | None, int]):
    """``inner`` as a resume from ``offset`` builds it (what the recovery store would do)."""

    def __init__(self, inner: KafkaBatchSource, offset: int) -> None:
        self._inner, self._offset = inner, offset

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[bytes | None, int]:
        return self._inner.build_part(step_id, for_part, self._offset)


def test_bad_messages_are_counted_and_dead_lettered_by_the_ta_pipeline(
    kafka_bootstrap: str, unique_topic: TopicFactory
) -> None:
    market = make_market(seconds=4)
    trades_topic = unique_topic("src-trades", partitions=2)
    quotes_topic = unique_topic("src-quotes", partitions=2)
    good = [msgspec.json.encode(e) for e in market.trades]
    bad: list[bytes | None] = [b"{not json", None]
    _produce(kafka_bootstrap, trades_topic, [*good[:50], *bad, *good[50:]], 2)
    _produce(kafka_bootstrap, quotes_topic, [msgspec.json.encode(e) for e in market.quotes], 2)
    progress = TaProgress()
    settings = TaSettings(symbol_allowlist=SYMBOLS, idle_close_ms=600_000)

    def source(topic: str) -> KafkaBatchSource:
        return KafkaBatchSource(_config(kafka_bootstrap), [topic], batch_size=100, exit_at_end=True)

    flow = Dataflow("ta_dead_letters")
    out = ta_pipeline(
        "ta",
        op.input("trades", flow, source(trades_topic)),
        op.input("quotes", flow, source(quotes_topic)),
        None,
        settings,
        progress,
    )
    dead: list[DeadLetter] = []
    bars: list[Any] = []
    op.output("dead", out.dead_letters, TestingSink(dead))
    op.output("bars", out.microbars, TestingSink(bars))
    run_main(flow)  # type: ignore[no-untyped-call]
    invalid = [d for d in dead if d.reason == "invalid_message"]
    assert sorted(d.raw for d in invalid) == [b"", b"{not json"]
    assert progress.dead_letters == len(dead) >= 2
    assert bars
    assert progress.batches["compiled"] > 0
