"""The TA flow as an operator runs it: Ctrl-C stops it cleanly, a too-old backfill is refused.

Both run ``python -m bytewax.run dataflows.ta:flow`` subprocesses against the real Kafka.
"""

from __future__ import annotations

import json
import pickle
import re
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from tests.ta.conftest import (
    dump_clickhouse,
    flow_env,
    make_market,
    produce,
    read_all,
    start_flow,
)

FLOW_TIMEOUT = 150
INPUTS = ("trades", "quotes", "bars")


def _topics(unique_topic: Any) -> dict[str, str]:
    topics = {name: unique_topic(name, partitions=2) for name in INPUTS}
    topics["status"] = unique_topic("status", partitions=1)  # the ingest's heartbeats
    for n in ("bars", "signals", "status", "dlq"):
        topics[f"ta_{n}"] = unique_topic(f"out-{n}", partitions=1)
    return topics


def _snapshot_offsets(rdir: Path, topics: dict[str, str]) -> dict[str, int]:
    """The newest snapshotted offset of every Kafka input partition (``name/partition-topic``;
    the flow reads every source in one input step, ``ta.input``)."""
    kind = {topics[name]: name for name in INPUTS}
    newest: dict[str, tuple[int, int]] = {}
    for part in sorted(rdir.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            rows = db.execute("SELECT step_id, state_key, snap_epoch, ser_change FROM snaps")
            for step, key, epoch, blob in rows:
                topic = key.partition("-")[2]
                if step != "ta.input" or topic not in kind or blob is None:
                    continue
                name = f"{kind[topic]}/{key}"
                if name not in newest or epoch > newest[name][0]:
                    newest[name] = (epoch, pickle.loads(blob))
    return {name: offset for name, (_, offset) in newest.items()}


def _high_watermarks(bootstrap: str, topics: dict[str, str]) -> dict[str, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ta-stop-test"})
    try:
        return {
            f"{name}/{p}-{topics[name]}": c.get_watermark_offsets(
                TopicPartition(topics[name], p), timeout=10
            )[1]
            for name in INPUTS
            for p in range(2)
        }
    finally:
        c.close()


def _assigned_offsets(log: str) -> dict[str, int]:
    """``topic/partition`` → first offset, from the flow's ``kafka_partition_assigned`` logs."""
    out: dict[str, int] = {}
    for line in log.splitlines():
        if "kafka_partition_assigned" in line and line.startswith("{"):
            rec = json.loads(line)
            out[rec["source"]] = rec["offset"]
    return out


def test_sigint_stops_cleanly_with_a_snapshot_a_restart_continues_from(
    kafka_bootstrap: str, unique_topic: Any, tmp_path: Path
) -> None:
    market = make_market(seconds=20)
    topics = _topics(unique_topic)
    half, q_half = len(market.trades) // 2, len(market.quotes) // 2
    produce(kafka_bootstrap, topics["trades"], market.trades[:half])
    produce(kafka_bootstrap, topics["quotes"], market.quotes[:q_half])
    produce(kafka_bootstrap, topics["bars"], market.bars)
    rdir = tmp_path / "recovery"
    env = flow_env(bootstrap=kafka_bootstrap, topics=topics, work=tmp_path, exit_at_end=False)
    env["RECOVERY_BACKUP_INTERVAL_S"] = "0"
    first = start_flow(env, tmp_path / "first.log", "-r", str(rdir), "-s", "1", "-b", "0")
    try:
        read_all(kafka_bootstrap, topics["ta_bars"], 20, timeout=FLOW_TIMEOUT)
        assert first.proc.poll() is None, first.tail()
        first.proc.send_signal(signal.SIGINT)
        code = first.wait(FLOW_TIMEOUT)
    finally:
        first.kill()
    log = first.tail(1_000_000)
    assert code == 0, log[-4000:]
    assert "panicked" not in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    assert '"reason": "SIGINT"' in log

    offsets = _snapshot_offsets(rdir, topics)
    highs = _high_watermarks(kafka_bootstrap, topics)
    assert set(offsets) == set(highs)
    # Everything produced was there to read before the signal: the final (EOF) snapshot holds
    # exactly where each partition stopped, at most its end.
    assert all(0 <= offsets[k] <= highs[k] for k in highs), (offsets, highs)
    assert sum(offsets.values()) > 0

    produce(kafka_bootstrap, topics["trades"], market.trades[half:])
    produce(kafka_bootstrap, topics["quotes"], market.quotes[q_half:])
    resumed = start_flow(
        {**env, "TA_EXIT_AT_END": "true"},
        tmp_path / "resumed.log",
        "-r",
        str(rdir),
        "-s",
        "1",
        "-b",
        "0",
    )
    assert resumed.wait(FLOW_TIMEOUT) == 0, resumed.tail()
    assigned = _assigned_offsets(resumed.tail(1_000_000))
    expected = {
        f"{topics[k.split('/')[0]]}/{k.split('/')[1].split('-')[0]}": v for k, v in offsets.items()
    }
    assert assigned == expected
    rows = dump_clickhouse(tmp_path)
    assert len(rows["ta_microbars"]["rows"]) >= 6 * 19


def test_a_backfill_older_than_a_ttl_is_refused_naming_table_ttl_and_oldest_time(
    kafka_bootstrap: str, unique_topic: Any, tmp_path: Path
) -> None:
    t0 = (datetime.now(UTC) - timedelta(days=20)).replace(second=0, microsecond=0)
    market = make_market(seconds=5, t0=t0)
    topics = _topics(unique_topic)
    produce(kafka_bootstrap, topics["trades"], market.trades)
    produce(kafka_bootstrap, topics["quotes"], market.quotes)
    env = flow_env(bootstrap=kafka_bootstrap, topics=topics, work=tmp_path, exit_at_end=True)
    run = start_flow(env, tmp_path / "old.log")
    code = run.wait(FLOW_TIMEOUT)
    log = run.tail(1_000_000)
    assert code != 0, log[-4000:]
    # 20 days old: beyond ta_signals' 14 days, within ta_microbars' 30 days
    found = re.search(
        r"refusing to write TA rows from Kafka (\S+): its oldest event time is (\S+),", log
    )
    assert found is not None, log[-4000:]
    oldest = datetime.fromisoformat(found.group(2))
    assert t0 <= oldest < t0 + timedelta(seconds=10)
    assert "ta_signals keeps rows for 14 days" in log
    assert "ta_microbars keeps rows" not in log
    rows = dump_clickhouse(tmp_path)
    assert rows["ta_signals"]["rows"] == []
