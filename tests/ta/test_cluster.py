"""The TA flow as a Bytewax cluster of 2 processes × 1 worker over 4-partition market topics.

On the real local Kafka and S3 (``python -m bytewax.run dataflows.ta:flow -i I -a …``
subprocesses, each with its own chdb directory, since chdb locks its directory to one
process; their ``FINAL`` rows are read afterwards by a subprocess each and put together):

* a 2-process backfill gives the same ClickHouse ``FINAL`` rows as a 1-process backfill;
* a 2-process run with recovery and S3 backups, one process killed with SIGKILL mid-stream:
  that process restarted alone fails loudly (a cluster restarts as a whole) and its hung peer
  exits by itself; the cluster restarted as a whole on empty recovery disks restores its
  partitions from one S3 set and ends with the same rows, none missing, none extra.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.helpers import wait_until
from tests.ta.conftest import (
    FlowRun,
    dump_clickhouse,
    flow_env,
    make_market,
    produce,
    read_all,
    start_flow,
)
from torghut.recovery import EXIT_PEER_RESTARTED

TIMEOUT = 120
PROCESSES = 2
Envs = Callable[[Path], dict[str, str]]
"""A process's environment from its work directory."""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """The processes of one TA cluster: process ``i`` works in ``base/p<i>`` (chdb, logs)."""

    def __init__(self, base: Path, env: Envs, *args: str) -> None:
        self.base = base
        self.env = env
        self.args = args
        ports = _free_ports(PROCESSES)
        self.addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
        self.runs: list[FlowRun] = []

    def work(self, i: int) -> Path:
        return self.base / f"p{i}"

    def start(self, i: int, log: str, **extra: str) -> FlowRun:
        env = {**self.env(self.work(i)), **extra}
        run = start_flow(
            env,
            self.work(i) / log,
            "-w",
            "1",
            "-i",
            str(i),
            "-a",
            self.addresses,
            *(a.replace("{i}", str(i)) for a in self.args),
        )
        return run

    def start_all(self, log: str, **extra: str) -> list[FlowRun]:
        self.runs = [self.start(i, log, **extra) for i in range(PROCESSES)]
        return self.runs

    def wait_all(self) -> None:
        for run in self.runs:
            assert run.wait(TIMEOUT) == 0, run.tail()

    def kill_all(self) -> None:
        for run in self.runs:
            run.kill()

    def rows(self) -> dict[str, Any]:
        """Every process's ``FINAL`` rows together, in one order."""
        with ThreadPoolExecutor(PROCESSES) as pool:
            dumps = list(pool.map(dump_clickhouse, [self.work(i) for i in range(PROCESSES)]))
        return _merge(dumps)


def _merge(dumps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in dumps[0]:
        rows = [r for d in dumps for r in d[table]["rows"]]
        out[table] = {"columns": dumps[0][table]["columns"], "rows": sorted(rows, key=json.dumps)}
    return out


def _sorted(dump: dict[str, Any]) -> dict[str, Any]:
    return _merge([dump])


def _outputs(unique_topic: Any, run: str) -> dict[str, str]:
    return {f"ta_{n}": unique_topic(f"{run}-{n}") for n in ("bars", "signals", "status", "dlq")}


def _complete_sets(s3_client: Any, bucket: str) -> list[dict[str, Any]]:
    resp = s3_client.list_objects_v2(Bucket=bucket)
    keys = sorted(o["Key"] for o in resp.get("Contents", []) if o["Key"].endswith("manifest.json"))
    return [json.loads(s3_client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]


def test_two_processes_equal_one_and_survive_a_kill_restored_from_s3(
    kafka_bootstrap: str,
    unique_topic: Any,
    s3_settings: Any,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    market = make_market(seconds=30)
    inputs = {name: unique_topic(name, partitions=4) for name in ("trades", "quotes", "bars")}
    inputs["status"] = unique_topic("status", partitions=1)
    half, q_half = len(market.trades) // 2, len(market.quotes) // 2
    produce(kafka_bootstrap, inputs["trades"], market.trades[:half])
    produce(kafka_bootstrap, inputs["quotes"], market.quotes[:q_half])
    produce(kafka_bootstrap, inputs["bars"], market.bars)

    def env(run: str, *, exit_at_end: bool) -> tuple[dict[str, str], Envs]:
        topics = {**inputs, **_outputs(unique_topic, run)}

        def of(work: Path) -> dict[str, str]:
            return {
                **flow_env(
                    bootstrap=kafka_bootstrap,
                    topics=topics,
                    work=work,
                    exit_at_end=exit_at_end,
                    s3=s3_settings,
                    bucket=s3_bucket,
                ),
                "RECOVERY_PARTITIONS": "4",
                "RECOVERY_S3_PREFIX": f"cluster-{run}",
                "RECOVERY_CLUSTER_START_TIMEOUT_S": "60",
                "RECOVERY_BACKUP_INTERVAL_S": "2",
            }

        return topics, of

    # --- crash run: recovery on, S3 backup rounds every 2 s, process 1 killed mid-stream --
    crash_topics, crash_env = env("crash", exit_at_end=False)
    recovery = str(tmp_path / "crash" / "rec-{i}")
    crash = Cluster(tmp_path / "crash", crash_env, "-r", recovery, "-s", "1", "-b", "10")
    first = crash.start_all("first.log")
    try:
        read_all(kafka_bootstrap, crash_topics["ta_bars"], 40, timeout=TIMEOUT)
        # a set taken once epochs have closed: it holds worker frontiers and state
        wait_until(
            lambda: (
                any(
                    p["progress"]
                    for m in _complete_sets(s3_client, s3_bucket)
                    for p in m["partitions"]
                )
                or any(r.proc.poll() is not None for r in first)
            ),
            timeout=60,
            message="no S3 backup set with progress completed by the cluster",
        )
        assert all(r.proc.poll() is None for r in first), [r.tail() for r in first]
        produce(kafka_bootstrap, inputs["trades"], market.trades[half:])
        produce(kafka_bootstrap, inputs["quotes"], market.quotes[q_half:])
        first[1].kill()  # SIGKILL, mid-stream
        assert first[1].proc.returncode == -9

        # restarted alone, process 1 cannot rejoin: it says so and exits non-zero. Its peer
        # ends too (Bytewax's "Send thread panic", or, when that leaves it hung, the cluster
        # watch's exit 75 on seeing process 1 start again), to be restarted with it.
        alone = crash.start(1, "alone.log", RECOVERY_CLUSTER_START_TIMEOUT_S="4")
        assert alone.wait(TIMEOUT) != 0
        assert "restarts as a whole" in alone.tail(20_000), alone.tail()
        assert first[0].wait(TIMEOUT) in (1, EXIT_PEER_RESTARTED), first[0].tail()
    finally:
        crash.kill_all()
    manifests = _complete_sets(s3_client, s3_bucket)
    assert manifests, "no complete backup set"
    assert {m["processes"] for m in manifests} == {PROCESSES}
    assert all(sorted(p["index"] for p in m["partitions"]) == [0, 1, 2, 3] for m in manifests)
    assert any(p["progress"] for m in manifests for p in m["partitions"])

    # --- the whole cluster again, on empty recovery disks: restored from S3, to the end ------
    for i in range(PROCESSES):
        shutil.rmtree(tmp_path / "crash" / f"rec-{i}")
    crash.start_all("resumed.log", TA_EXIT_AT_END="true")
    crash.wait_all()
    restored = set()
    for run in crash.runs:
        found = re.search(
            r'"restored_from_backup": true, "backup_set": "([^"]+)"', run.tail(500_000)
        )
        assert found, run.tail()
        restored.add(found[1])
    assert len(restored) == 1, f"the processes restored different sets: {restored}"
    assert restored <= {m["set_id"] for m in manifests}

    # --- reference (1 process) and an uninterrupted 2-process backfill of the same input ----
    _, ref_env = env("ref", exit_at_end=True)
    reference = start_flow(ref_env(tmp_path / "ref"), tmp_path / "ref" / "ref.log")
    two = Cluster(tmp_path / "two", env("two", exit_at_end=True)[1])
    two.start_all("two.log")
    assert reference.wait(TIMEOUT) == 0, reference.tail()
    two.wait_all()

    expected = _sorted(dump_clickhouse(tmp_path / "ref"))
    assert len(expected["ta_microbars"]["rows"]) >= 6 * 29
    assert two.rows() == expected, "2 processes differ from 1 process"
    assert crash.rows() == expected, "crash + partial restart + S3 restore differs from 1 process"
