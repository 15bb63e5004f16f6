"""A step renamed between versions keeps its recovery state: ``move_step_state`` re-files it.

Real Bytewax runs on one recovery store: the first version counts at the top level and
crashes (``TestingSource.ABORT``) after snapshotting; the second version has the same step
inside an enclosing operator, so its id changed, and it resumes the count only if the state
was moved. Also the TA flow's own move table: every new id names a step of today's flow (the
all-in-one flow's: ``tests/e2e/test_local_flow.py``).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow, Stream, operator
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows import ta
from dataflows.ta import build_flow
from operators.graceful_stop import GracefulStop
from operators.ta_status import TaProgress
from tests.helpers import all_steps
from torghut.config import load_settings
from torghut.recovery import (
    BackupError,
    LocalDirStore,
    backup_once,
    move_step_state,
    prepare_recovery,
)
from torghut.recovery.partitions import PartitionError


def _count(total: int | None, _: str) -> tuple[int, int]:
    n = (total or 0) + 1
    return n, n


@operator
def _enclosing(step_id: str, up: Stream[tuple[str, str]]) -> Stream[tuple[str, int]]:
    return op.stateful_map("count", up, _count)


def _run(
    recovery: Path, items: list[str | TestingSource.ABORT], nested: bool, out: list[tuple[str, int]]
) -> None:
    flow = Dataflow("f")
    keyed = op.key_on("key", op.input("inp", flow, TestingSource(items)), lambda s: s)
    counts = _enclosing("wrap", keyed) if nested else op.stateful_map("count", keyed, _count)
    op.output("out", counts, TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(recovery)))  # type: ignore[no-untyped-call]


def _store(tmp_path: Path) -> tuple[Path, list[str | TestingSource.ABORT]]:
    """A store the first version left at its crash, and the input the next version resumes
    (an ``ABORT`` fires once, so the same list is read again)."""
    recovery = tmp_path / "rec"
    recovery.mkdir()
    init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
    items: list[str | TestingSource.ABORT] = ["a", "a", "a", TestingSource.ABORT(), "a", "a"]
    first: list[tuple[str, int]] = []
    _run(recovery, items, nested=False, out=first)  # ends at the ABORT, state snapshotted
    assert first == [("a", 1), ("a", 2), ("a", 3)]
    return recovery, items


def test_a_moved_step_resumes_its_state_and_an_unmoved_one_starts_over(tmp_path: Path) -> None:
    recovery, items = _store(tmp_path)
    parts = list(recovery.glob("part-*.sqlite3"))
    baseline = tmp_path / "copy"
    baseline.mkdir()
    for p in parts:  # a copy left unmoved: what the rename alone would do
        with sqlite3.connect(p) as src, sqlite3.connect(baseline / p.name) as dst:
            src.backup(dst)

    assert move_step_state(parts, {"f.count": "f.wrap.count"}) > 0
    assert move_step_state(parts, {"f.count": "f.wrap.count"}) == 0  # idempotent
    resumed: list[tuple[str, int]] = []
    _run(recovery, items, nested=True, out=resumed)
    assert resumed == [("a", 4), ("a", 5)]

    unmoved: list[tuple[str, int]] = []
    _run(baseline, items, nested=True, out=unmoved)
    assert unmoved == [("a", 1), ("a", 2)]


def test_state_under_both_ids_is_refused_not_merged(tmp_path: Path) -> None:
    recovery, _ = _store(tmp_path)
    parts = list(recovery.glob("part-*.sqlite3"))
    with sqlite3.connect(parts[0]) as conn:
        conn.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
            "VALUES ('f.wrap.count', 'a', 99, NULL)"
        )
    with pytest.raises(PartitionError, match=r"both 'f\.count' and 'f\.wrap\.count'"):
        move_step_state(parts, {"f.count": "f.wrap.count"})
    with pytest.raises(BackupError, match="renamed steps"):
        prepare_recovery(
            recovery,
            LocalDirStore(tmp_path / "backups"),
            1,
            moved_steps={"f.count": "f.wrap.count"},
        )


def test_prepare_recovery_moves_the_state_of_a_resumed_directory(tmp_path: Path) -> None:
    recovery, items = _store(tmp_path)
    prepare_recovery(
        recovery, LocalDirStore(tmp_path / "backups"), 1, moved_steps={"f.count": "f.wrap.count"}
    )
    resumed: list[tuple[str, int]] = []
    _run(recovery, items, nested=True, out=resumed)
    assert resumed == [("a", 4), ("a", 5)]


def test_a_backup_taken_before_the_rename_restores_onto_an_empty_disk_with_the_state_moved(
    tmp_path: Path,
) -> None:
    recovery, items = _store(tmp_path)
    store = LocalDirStore(tmp_path / "backups")
    backup_once(recovery, store, keep_sets=2)  # taken by the old version
    empty = tmp_path / "new-disk"
    ready = prepare_recovery(empty, store, 1, moved_steps={"f.count": "f.wrap.count"})
    assert ready.restored is not None
    resumed: list[tuple[str, int]] = []
    _run(empty, items, nested=True, out=resumed)
    assert resumed == [("a", 4), ("a", 5)]


def test_the_ta_flows_moves_name_steps_of_todays_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # built, never connected
    flow = build_flow(load_settings(), TaProgress(), GracefulStop(threading.Event()))
    ids = {s.step_id for s in all_steps(flow)}
    for old, new in ta.MOVED_STEPS.items():
        assert new in ids, new
        assert old not in ids, old
