"""Recovery backups on real SeaweedFS S3: exact resume after restore, sets never mixed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSink, run_main

from tests.helpers import wait_until
from tests.storage.paced import PacedSource
from torghut.recovery import (
    MANIFEST,
    BackupError,
    BackupLoop,
    LocalDirStore,
    S3Store,
    backup_once,
    complete_sets,
    restore_latest,
    restore_latest_if_empty,
)

REPO = Path(__file__).resolve().parents[2]
N = 300
EPOCH = timedelta(milliseconds=50)  # shorter epochs cost an fsync each
Totals = dict[str, tuple[int, int]]


def _source(
    abort_at: int | None = None, interval: timedelta = timedelta(milliseconds=2)
) -> PacedSource[int]:
    return PacedSource(N, lambda i: i, abort_at, interval)


def _expected() -> Totals:
    return {
        k: (
            sum(1 for x in range(N) if str(x % 3) == k),
            sum(x for x in range(N) if str(x % 3) == k),
        )
        for k in "012"
    }


def _flow(source: PacedSource[int], out: list[tuple[str, tuple[int, int]]]) -> Dataflow:
    """Per key (x % 3): running (count, sum); the state must survive backup + restore exactly."""
    flow = Dataflow("recovery_backup_demo")
    keyed = op.key_on("key", op.input("inp", flow, source), lambda x: str(x % 3))

    def add(state: tuple[int, int] | None, x: int) -> tuple[tuple[int, int], tuple[int, int]]:
        count, total = state or (0, 0)
        return (count + 1, total + x), (count + 1, total + x)

    op.output("out", op.stateful_map("sum", keyed, add), TestingSink(out))
    return flow


def _final(out: list[tuple[str, tuple[int, int]]]) -> Totals:
    return {k: v for k, v in out}


def _crashed_run(recovery_dir: Path, abort_at: int) -> list[tuple[str, tuple[int, int]]]:
    """Run the demo flow on fresh partitions until it aborts (like a crash) at ``abort_at``."""
    assert (
        restore_latest_if_empty(recovery_dir, LocalDirStore(recovery_dir.parent / "none"), 2)
        is None
    )
    out: list[tuple[str, tuple[int, int]]] = []
    flow = _flow(_source(abort_at), out)
    run_main(flow, epoch_interval=EPOCH, recovery_config=RecoveryConfig(recovery_dir))
    return out


@pytest.fixture
def s3_store(s3_client: Any, s3_bucket: str) -> S3Store:
    return S3Store(s3_client, s3_bucket, "torghut/recovery/ta")


def test_restore_from_s3_resumes_with_exact_state(tmp_path: Path, s3_store: S3Store) -> None:
    first = _crashed_run(tmp_path / "rec", abort_at=150)
    assert len(first) == 150
    manifest = backup_once(tmp_path / "rec", s3_store, keep_sets=3)

    restored = tmp_path / "fresh"
    assert restore_latest_if_empty(restored, s3_store, partitions=2) is not None
    assert sorted(p.name for p in restored.iterdir()) == ["part-0.sqlite3", "part-1.sqlite3"]
    second: list[tuple[str, tuple[int, int]]] = []
    run_main(
        _flow(_source(), second),
        epoch_interval=EPOCH,
        recovery_config=RecoveryConfig(restored),
    )

    assert _final(second) == _expected()
    assert N - 150 <= len(second) < N  # resumed from the backup, not from scratch
    assert manifest.part_count == 2


def test_backup_of_a_running_flow_resumes_exactly(tmp_path: Path, s3_store: S3Store) -> None:
    live = tmp_path / "live"
    out: list[tuple[str, tuple[int, int]]] = []
    restore_latest_if_empty(live, s3_store, 2)
    # 20 ms an item: the flow runs ~6 s, so it is still writing when a backup started after 60
    # items ends, however slow the machine (at 2 ms an item a 0.7 s backup outlasted the flow)
    runner = threading.Thread(
        target=run_main,
        args=(_flow(_source(interval=timedelta(milliseconds=20)), out),),
        kwargs={
            "epoch_interval": EPOCH,
            "recovery_config": RecoveryConfig(live, timedelta(seconds=30)),
        },
    )
    runner.start()
    try:
        wait_until(lambda: len(out) >= 60, timeout=60, message=lambda: f"only {len(out)} outputs")
        manifest = backup_once(live, s3_store, keep_sets=3)  # while the flow writes
        at_backup = len(out)
    finally:
        runner.join(timeout=120)
    assert not runner.is_alive(), f"flow still running after {len(out)} outputs"
    assert _final(out) == _expected()
    assert at_backup < N - 20
    assert any(p.progress for p in manifest.partitions)
    assert [p.progress for p in manifest.partitions] == sorted(
        (p.progress for p in manifest.partitions), reverse=True
    )

    restored = tmp_path / "restored"
    assert restore_latest_if_empty(restored, s3_store, partitions=2) is not None
    second: list[tuple[str, tuple[int, int]]] = []
    run_main(
        _flow(_source(), second),
        epoch_interval=EPOCH,
        recovery_config=RecoveryConfig(restored),
    )
    assert _final(second) == _expected()
    assert 0 < len(second) < N  # resumed where the live backup was taken


def test_progress_partitions_are_uploaded_first(tmp_path: Path, s3_store: S3Store) -> None:
    rec = tmp_path / "rec"
    _crashed_run(rec, abort_at=100)
    manifest = backup_once(rec, s3_store, keep_sets=3)
    assert manifest.ex_num == 0
    fronts = {}
    for part in (rec / "part-0.sqlite3", rec / "part-1.sqlite3"):
        with sqlite3.connect(part) as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM fronts WHERE ex_num = ?", (manifest.ex_num,)
            ).fetchone()
        fronts[part.name] = n
    first = manifest.partitions[0]
    assert first.progress is True
    assert fronts[first.name] > 0
    assert [p.progress for p in manifest.partitions] == [
        fronts[p.name] > 0 for p in manifest.partitions
    ]


def test_incomplete_sets_are_never_chosen(
    tmp_path: Path, s3_store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    rec = tmp_path / "rec"
    _crashed_run(rec, abort_at=30)
    good = backup_once(rec, s3_store, keep_sets=5)
    no_manifest = backup_once(rec, s3_store, keep_sets=5)
    s3_client.delete_object(
        Bucket=s3_bucket, Key=f"torghut/recovery/ta/{no_manifest.set_id}/{MANIFEST}"
    )
    missing_part = backup_once(rec, s3_store, keep_sets=5)
    s3_client.delete_object(
        Bucket=s3_bucket, Key=f"torghut/recovery/ta/{missing_part.set_id}/part-0.sqlite3"
    )

    assert [m.set_id for m in complete_sets(s3_store)] == [missing_part.set_id, good.set_id]
    chosen = restore_latest(tmp_path / "restored", s3_store)
    assert chosen is not None
    assert chosen.set_id == good.set_id


def test_checksum_mismatch_is_rejected(
    tmp_path: Path, s3_store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    rec = tmp_path / "rec"
    _crashed_run(rec, abort_at=30)
    manifest = backup_once(rec, s3_store, keep_sets=5)
    key = f"torghut/recovery/ta/{manifest.set_id}/part-1.sqlite3"
    body = bytearray(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    body[-1] ^= 0xFF  # same size, different content
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))

    target = tmp_path / "restored"
    with pytest.raises(BackupError, match=r"part-1\.sqlite3 checksum mismatch"):
        restore_latest_if_empty(target, s3_store, partitions=2)
    assert not target.exists() or not any(target.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restore-")]


def test_keep_sets_prunes_the_oldest(tmp_path: Path, s3_store: S3Store) -> None:
    rec = tmp_path / "rec"
    _crashed_run(rec, abort_at=10)
    ids = [backup_once(rec, s3_store, keep_sets=2).set_id for _ in range(4)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert sorted(s3_store.set_ids()) == ids[-2:]
    assert [m.set_id for m in complete_sets(s3_store)] == [ids[3], ids[2]]


def test_restore_never_overwrites_and_empty_store_initialises(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path / "backups")
    rec = tmp_path / "rec"
    assert restore_latest_if_empty(rec, store, partitions=3) is None  # nothing to restore
    assert sorted(p.name for p in rec.iterdir()) == [f"part-{i}.sqlite3" for i in range(3)]
    assert restore_latest_if_empty(rec, store, partitions=3) is None  # local partitions win
    backup_once(rec, store, keep_sets=2)
    with pytest.raises(BackupError, match="non-empty"):
        restore_latest(rec, store)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    with pytest.raises(BackupError, match="non-empty"):
        restore_latest_if_empty(junk, store, partitions=3)


def test_backup_loop_runs_until_stopped(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    restore_latest_if_empty(rec, LocalDirStore(tmp_path / "none"), partitions=2)
    store = LocalDirStore(tmp_path / "backups")
    loop = BackupLoop(rec, store, interval_s=0.05, keep_sets=2)
    loop.start()
    try:
        wait_until(lambda: len(complete_sets(store)) >= 2, timeout=20)
    finally:
        loop.stop()
    assert loop.last_backup_at is not None
    assert loop.last_error is None
    stopped_at = len(store.set_ids())
    assert stopped_at == 2  # pruned to keep_sets

    before = {m.set_id for m in complete_sets(store)}
    loop.stop(final_backup=True)  # after a clean end: one more set of the quiet directory
    after = {m.set_id for m in complete_sets(store)}
    assert len(after - before) == 1

    broken = BackupLoop(tmp_path / "missing", store, interval_s=1.0)
    assert broken.backup_now() is None
    assert broken.last_error is not None
    assert "no part-N.sqlite3" in broken.last_error


def test_cli_backup_list_restore(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    _crashed_run(rec, abort_at=10)
    env = {
        **os.environ,
        "RECOVERY_DIR": str(rec),
        "RECOVERY_BACKUP_DIR": str(tmp_path / "bk"),
        "RECOVERY_S3_BUCKET": "",
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "torghut.recovery", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    set_id = cli("backup")
    assert cli("list").startswith(f"{set_id}\t2 partitions\t")
    assert cli("restore", "--dir", str(tmp_path / "restored")) == set_id
    assert (tmp_path / "restored" / "part-1.sqlite3").is_file()
