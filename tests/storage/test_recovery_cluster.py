"""Recovery of a multi-process cluster: one backup set written together, each process
restoring its share, and a start that is not the whole cluster's refused loudly.

The processes are threads here (the store is shared, as S3 is between pods); the real
multi-process flow is ``tests/ta/test_cluster.py``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers import wait_until
from torghut.recovery import (
    BackupError,
    BackupLoop,
    ClusterMember,
    ClusterStartError,
    ClusterWatch,
    LocalDirStore,
    Manifest,
    backup_once,
    complete_sets,
    join_cluster,
    prepare_recovery,
    restore_latest_if_empty,
    round_set_id,
)
from torghut.recovery.backup import next_round

T = TypeVar("T")
PARTS = 4
TWO = (ClusterMember(0, 2), ClusterMember(1, 2))


def _together(*calls: Callable[[], T]) -> list[T]:
    """Run the calls at once, as the processes of a cluster do; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result(timeout=60) for f in futures]


def _fresh_cluster(tmp_path: Path, store: LocalDirStore) -> list[Path]:
    dirs = [tmp_path / f"rec-{m.index}" for m in TWO]
    for d, m in zip(dirs, TWO, strict=True):
        assert restore_latest_if_empty(d, store, PARTS, m) is None
    return dirs


def _write_fronts(path: Path, ex_num: int) -> None:
    """A worker frontier of execution ``ex_num`` in one partition, as Bytewax writes them."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (?, 2, 0)", (ex_num,)
        )
        conn.execute(
            "INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (?, 0, 3)", (ex_num,)
        )


def test_each_process_initialises_and_restores_its_own_partitions(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path / "backups")
    dirs = _fresh_cluster(tmp_path, store)
    assert [sorted(p.name for p in d.iterdir()) for d in dirs] == [
        ["part-0.sqlite3", "part-2.sqlite3"],
        ["part-1.sqlite3", "part-3.sqlite3"],
    ]
    _write_fronts(dirs[1] / "part-3.sqlite3", ex_num=0)
    set_id = round_set_id(datetime.now(UTC), 60)
    manifests = _together(
        *(
            lambda d=d, m=m: backup_once(d, store, 3, member=m, set_id=set_id, generation="g1")
            for d, m in zip(dirs, TWO, strict=True)
        )
    )
    assert manifests[0] == manifests[1]
    manifest: Manifest = manifests[0]
    assert (manifest.processes, manifest.part_count, manifest.ex_num) == (2, PARTS, 0)
    # the progress partition of process 1 went first, before any state copy of either process
    assert (manifest.partitions[0].index, manifest.partitions[0].progress) == (3, True)
    assert sorted(p.index for p in manifest.partitions) == [0, 1, 2, 3]
    assert [m.set_id for m in complete_sets(store)] == [set_id]

    restored = [tmp_path / f"new-{m.index}" for m in TWO]
    for d, m in zip(restored, TWO, strict=True):
        assert restore_latest_if_empty(d, store, PARTS, m) == manifest
    assert [sorted(p.name for p in d.iterdir()) for d in restored] == [
        ["part-0.sqlite3", "part-2.sqlite3"],
        ["part-1.sqlite3", "part-3.sqlite3"],
    ]
    # the set restores onto a different number of processes too (Bytewax re-routes state)
    solo = tmp_path / "solo"
    assert restore_latest_if_empty(solo, store, PARTS) == manifest
    assert len(list(solo.iterdir())) == PARTS


def test_a_round_missed_by_one_process_leaves_no_complete_set(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path / "backups")
    dirs = _fresh_cluster(tmp_path, store)
    set_id = round_set_id(datetime.now(UTC), 60)
    with pytest.raises(TimeoutError, match=r"ex-1\.json"):
        backup_once(
            dirs[0], store, 3, member=TWO[0], set_id=set_id, generation="g", barrier_timeout_s=0.5
        )
    # a marker of another start (generation) does not count either
    store.write(f"{set_id}/ex-1.json", b'{"gen": "old", "ex_num": 7}')
    with pytest.raises(TimeoutError):
        backup_once(
            dirs[0], store, 3, member=TWO[0], set_id=set_id, generation="g", barrier_timeout_s=0.5
        )
    assert complete_sets(store) == []


def test_a_process_started_alone_fails_loudly_and_its_peer_exits(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path / "backups")
    first = _together(*(lambda m=m: join_cluster(store, m, "empty", 20, 0.02) for m in TWO))
    assert first[0].generation == first[1].generation != ""
    watch = ClusterWatch(store, TWO[0], first[0])
    assert watch.check() is None

    # process 1 restarts on its own: process 0 is still in the old generation (hung, in
    # reality), so process 1 gives up with a message that says what to do
    with pytest.raises(ClusterStartError, match="restarts as a whole"):
        join_cluster(store, TWO[1], "empty", 0.6, 0.02)
    why = watch.check()
    assert why is not None
    assert "process 1 started again" in why

    # running, the watch of process 0 ends it (in production: exit 75, restart by the
    # supervisor) once it sees that start
    ended = threading.Event()
    reasons: list[str] = []

    def on_restart(why: str) -> None:
        reasons.append(why)
        ended.set()

    ClusterWatch(store, TWO[0], first[0], interval_s=0.02, on_restart=on_restart).start()
    assert ended.wait(20), "the watch did not notice process 1's own start"
    assert "process 1 started again" in reasons[0]

    # the whole cluster starting again meets as one new generation
    again = _together(*(lambda m=m: join_cluster(store, m, "empty", 20, 0.02) for m in TWO))
    assert again[0].generation == again[1].generation != first[0].generation


def test_mixed_empty_and_resumed_directories_are_refused(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path / "backups")
    dirs = _fresh_cluster(tmp_path, store)
    for p in dirs[1].iterdir():  # process 1 lost its disk, process 0 did not
        p.unlink()

    def start(m: ClusterMember) -> Callable[[], str]:
        def run() -> str:
            try:
                prepare_recovery(dirs[m.index], store, PARTS, member=m, start_timeout_s=20)
            except ClusterStartError as exc:
                return str(exc)
            return "started"

        return run

    outcomes = _together(start(TWO[0]), start(TWO[1]))
    for outcome in outcomes:
        assert "recovery directories disagree" in outcome
        assert "process 1: empty" in outcome
    assert not any(dirs[1].iterdir())  # nothing restored into the empty one


def test_partitions_of_another_layout_are_refused(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path / "backups")
    solo = tmp_path / "solo"
    restore_latest_if_empty(solo, store, PARTS)  # one process held all four
    with pytest.raises(BackupError, match=r"holds partitions \[0, 1, 2, 3\] of 4"):
        # now started as process 0 of a 2-process cluster; its peer holds its own share
        _together(
            lambda: prepare_recovery(solo, store, PARTS, member=TWO[0], start_timeout_s=20),
            lambda: _local_peer(tmp_path, store),
        )


def _local_peer(tmp_path: Path, store: LocalDirStore) -> None:
    peer = tmp_path / "peer"
    restore_latest_if_empty(peer, store, PARTS, TWO[1])
    prepare_recovery(peer, store, PARTS, member=TWO[1], start_timeout_s=20)


def test_the_next_round_is_the_one_in_progress_when_an_attempt_gave_up_at_its_start() -> None:
    # gave up at the end of round 10..12, a few ms into 12..14: join 12, do not skip it
    assert next_round(12.003, 2.0, last=10.0) == 12.0
    # a quick success early in round 12: the next attempt is round 14, never 12 again
    assert next_round(12.2, 2.0, last=12.0) == 14.0
    # a first start a quarter or more into a round waits for the next one
    assert next_round(12.7, 2.0, last=None) == 14.0
    assert next_round(12.3, 2.0, last=None) == 12.0


def test_two_processes_whose_first_rounds_differ_meet_in_a_later_round(tmp_path: Path) -> None:
    """Process 1 starts after process 0's first round has begun (too late to join it): process
    0's round fails waiting for it, and the two must still write a complete set together."""
    store = LocalDirStore(tmp_path / "backups")
    dirs = _fresh_cluster(tmp_path, store)
    interval = 0.6
    loops = [
        BackupLoop(d, store, interval, keep_sets=3, member=m, generation="g")
        for d, m in zip(dirs, TWO, strict=True)
    ]
    loops[0].start()
    try:
        # process 0 is in a round (its share written, waiting for process 1's)
        wait_until(lambda: any("ex-0.json" in store.files(i) for i in store.set_ids()), timeout=10)
        # ... and process 1 starts once that round is more than a quarter through
        wait_until(lambda: time.time() % interval > interval / 2, timeout=10, interval=0.01)
        loops[1].start()
        wait_until(lambda: complete_sets(store), timeout=15, message="the processes never met")
    finally:
        for loop in loops:
            loop.stop()
    assert {m.processes for m in complete_sets(store)} == {2}
