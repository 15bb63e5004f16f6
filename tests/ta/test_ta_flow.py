"""The TA flow end to end on real Kafka and S3: deterministic, scalable, crash-safe.

One market (``conftest.make_market``) is produced to Kafka and processed by
``python -m bytewax.run dataflows.ta:flow`` subprocesses (reading through
:class:`operators.kafka_source.KafkaBatchSource`, whose offsets live in the recovery snapshots):

* a reference run (1 worker) reads it to the end;
* a run with 2 workers (``-w 2``) must give the same ClickHouse ``FINAL`` rows;
* a run with recovery is killed with SIGKILL mid-stream, its local recovery directory deleted,
  and restarted: it must restore the newest backup set from S3 and end with the same ``FINAL``
  rows as the reference (nothing missing, nothing extra; ``ingest_ts`` excluded).

The reference run's dead-letter topic and bar counts also show that every trade is accounted
for: in a final bar, dropped as a counted duplicate, or dead-lettered with its reason.
"""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec

from tests.helpers import wait_until
from tests.ta.conftest import (
    T0,
    dump_clickhouse,
    flow_env,
    make_market,
    produce,
    read_all,
    start_flow,
)
from torghut.dead_letters import DeadLetter
from torghut.events import Envelope, TaStatus

FLOW_TIMEOUT = 150


def _topics(unique_topic: Any) -> dict[str, str]:
    topics = {name: unique_topic(name, partitions=2) for name in ("trades", "quotes", "bars")}
    topics["status"] = unique_topic("status", partitions=1)
    return topics


def _outputs(unique_topic: Any, run: str) -> dict[str, str]:
    return {
        f"ta_{n}": unique_topic(f"{run}-{n}", partitions=1)
        for n in ("bars", "signals", "status", "dlq")
    }


def _run_to_end(env: dict[str, str], log: Path, *args: str) -> None:
    run = start_flow(env, log, *args)
    code = run.wait(FLOW_TIMEOUT)
    assert code == 0, run.tail()


def _complete_sets(s3_client: Any, bucket: str) -> list[str]:
    resp = s3_client.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in resp.get("Contents", []) if o["Key"].endswith("manifest.json"))


def test_two_workers_and_a_crash_restored_from_s3_equal_the_uninterrupted_run(
    kafka_bootstrap: str,
    unique_topic: Any,
    s3_settings: Any,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    market = make_market()
    inputs = _topics(unique_topic)
    half = len(market.trades) // 2
    q_half = len(market.quotes) // 2
    produce(kafka_bootstrap, inputs["trades"], market.trades[:half])
    produce(kafka_bootstrap, inputs["quotes"], market.quotes[:q_half])
    produce(kafka_bootstrap, inputs["bars"], market.bars)

    # --- crash run: recovery on, backups to S3 every second, killed mid-stream -------------
    crash_dir = tmp_path / "crash"
    crash_out = _outputs(unique_topic, "crash")
    rdir = crash_dir / "recovery"
    tail_env = flow_env(
        bootstrap=kafka_bootstrap,
        topics={**inputs, **crash_out},
        work=crash_dir,
        exit_at_end=False,
        s3=s3_settings,
        bucket=s3_bucket,
    )
    first = start_flow(tail_env, crash_dir / "first.log", "-r", str(rdir), "-s", "1", "-b", "4")
    try:
        # Some bars of the first half are out, and a backup set was completed after that.
        read_all(kafka_bootstrap, crash_out["ta_bars"], 60, timeout=FLOW_TIMEOUT)
        sets_then = _complete_sets(s3_client, s3_bucket)
        wait_until(
            lambda: (
                len(_complete_sets(s3_client, s3_bucket)) > len(sets_then)
                or first.proc.poll() is not None
            ),
            timeout=60,
            message="no S3 backup set completed",
        )
        assert first.proc.poll() is None, first.tail()
        produce(kafka_bootstrap, inputs["trades"], market.trades[half:])
        produce(kafka_bootstrap, inputs["quotes"], market.quotes[q_half:])
    finally:
        first.kill()  # SIGKILL, mid-stream
    assert first.proc.returncode == -9
    statuses = [
        msgspec.json.decode(v, type=Envelope[TaStatus]).payload
        for v in read_all(kafka_bootstrap, crash_out["ta_status"], 1)
    ]
    st = statuses[-1]
    assert st.watermark is not None
    assert st.bars > 0
    assert st.last_snapshot_at is not None
    assert any(s.last_backup_at is not None for s in statuses)
    shutil.rmtree(rdir)

    resumed_env = {**tail_env, "TA_EXIT_AT_END": "true"}
    resumed = start_flow(
        resumed_env, crash_dir / "resumed.log", "-r", str(rdir), "-s", "1", "-b", "4"
    )
    assert resumed.wait(FLOW_TIMEOUT) == 0, resumed.tail()
    assert '"restored_from_backup": true' in resumed.tail(200_000), resumed.tail()

    # --- reference run and 2-worker run over the complete input -----------------------------
    ref_dir, two_dir = tmp_path / "ref", tmp_path / "two"
    ref_out = _outputs(unique_topic, "ref")
    ref_env = flow_env(
        bootstrap=kafka_bootstrap, topics={**inputs, **ref_out}, work=ref_dir, exit_at_end=True
    )
    two_env = flow_env(
        bootstrap=kafka_bootstrap,
        topics={**inputs, **_outputs(unique_topic, "two")},
        work=two_dir,
        exit_at_end=True,
    )
    reference = start_flow(ref_env, ref_dir / "ref.log")
    _run_to_end(two_env, two_dir / "two.log", "-w", "2")
    assert reference.wait(FLOW_TIMEOUT) == 0, reference.tail()

    expected = dump_clickhouse(ref_dir)
    bars = expected["ta_microbars"]
    signals = expected["ta_signals"]
    assert len(bars["rows"]) >= 6 * 39
    window = signals["columns"].index("window_size")
    minute_end = (T0 + timedelta(minutes=1)).isoformat()
    assert [r[1] for r in signals["rows"] if r[window] == "PT1M"] == [minute_end]
    version = bars["columns"].index("version")
    assert any(r[version] > 1 for r in bars["rows"]), "late trades must have corrected bars"

    assert dump_clickhouse(two_dir) == expected, "2 workers differ from 1 worker"
    assert dump_clickhouse(crash_dir) == expected, "crash + S3 restore differs from reference"

    # --- nothing lost silently (reference run) ---------------------------------------------
    count = bars["columns"].index("count")
    in_bars = sum(r[count] for r in bars["rows"])
    dlq = [
        msgspec.json.decode(v, type=DeadLetter)
        for v in read_all(
            kafka_bootstrap, ref_out["ta_dlq"], sum(market.invalid.values()) + market.beyond_horizon
        )
    ]
    reasons = Counter(d.reason for d in dlq)
    assert reasons == Counter(
        {**market.invalid, "beyond_correction_horizon": market.beyond_horizon}
    )
    assert in_bars == market.valid_unique_trades
