"""Back up Bytewax recovery partitions to S3 (or a directory) safely, and restore them, for one
process or a cluster of processes each holding its own partitions.

Why this procedure (``shared/bytewax-notes.md`` §4.6, verified there): copying a live
``part-N.sqlite3`` misses everything still in its ``-wal``, and combining copies taken at
different times resumes *silently with wrong state* unless the partitions holding the latest
execution's progress rows (``fronts``) are the oldest copies of the set. So one backup set is:

1. per partition, a consistent single-file copy made with SQLite's online backup API;
2. uploaded **progress partitions first** (those with ``fronts`` rows for the newest
   ``ex_num``), then the others, each with its size and SHA-256;
3. a ``manifest.json`` written **last**: a set without one is incomplete and never restored.

A cluster (``-i/-a``, :mod:`torghut.recovery.cluster`) writes one set together: process ``i``
holds and backs up the partitions ``p % N == i``, and the same order holds across processes,
by barriers in the shared store (records of the cluster's start generation only): every
process publishes the newest execution number it sees (``ex-<i>.json``; the ``exs`` row of an
execution lives in one partition only), then uploads its progress partitions and says so
(``progress-<i>.json``); only when all have done that does any process copy a state
partition; each then lists its copies (``process-<i>.json``) and process 0 writes the
manifest. All processes use the same set id, the start of the backup round (the wall clock
rounded down to ``RECOVERY_BACKUP_INTERVAL_S``). A round that a process misses (dead, slow)
times out and leaves an incomplete set, never restored and pruned later.

Sets are ``<root>/<set-id>/`` with a sortable, strictly increasing UTC timestamp id
(``20261125T013000.123456Z``); the ``keep_sets`` newest complete sets are kept. Run the flow
with ``-b`` (backup interval) at least twice the time one set takes, so the older progress
copies stay resumable against the newer state copies.

Restore takes the newest *complete and verified* set (manifest present, every partition index
``0..part_count-1`` present with its size, this process's files with equal checksums) into an
**empty** recovery directory, never mixing sets: in a cluster process 0 chooses the set and
every process restores its own partitions of it. A corrupt set is skipped for the next older
one; if sets exist but none verifies, restore refuses rather than silently starting from empty
state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from bytewax.recovery import init_db_dir
from prometheus_client import Counter, Gauge, Histogram

from torghut.logs import get_logger
from torghut.recovery.cluster import (
    SOLO,
    ClusterMember,
    ClusterStart,
    await_records,
    join_cluster,
)
from torghut.recovery.partitions import (
    PartitionError,
    copy_partitions,
    inspect_partitions,
    move_step_state,
)
from torghut.recovery.store import BackupStore

__all__ = [
    "MANIFEST",
    "BackupError",
    "BackupLoop",
    "Manifest",
    "PartitionCopy",
    "RecoveryStart",
    "backup_once",
    "complete_sets",
    "next_round",
    "prepare_recovery",
    "restore_latest",
    "restore_latest_if_empty",
    "round_set_id",
]

MANIFEST = "manifest.json"
_PART_FILE = re.compile(r"^part-(\d+)\.sqlite3$")
_SET_ID_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_RESTORE_CHOICE = "cluster/restore.json"

BACKUPS = Counter("torghut_recovery_backups_total", "Complete recovery backup sets written")
BACKUP_FAILURES = Counter(
    "torghut_recovery_backup_failures_total", "Recovery backup attempts that failed"
)
BACKUP_SECONDS = Histogram(
    "torghut_recovery_backup_seconds",
    "Duration of one backup set (copy + upload + manifest)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LAST_BACKUP = Gauge(
    "torghut_recovery_last_backup_timestamp_seconds", "Unix time of the last complete backup set"
)

log = get_logger("torghut.recovery.backup")


class BackupError(RuntimeError):
    """A backup or restore cannot proceed safely; the message says why."""


# --------------------------------------------------------------------------- backup


@dataclass(frozen=True)
class PartitionCopy:
    """One partition file of a set as recorded in the manifest."""

    name: str
    index: int
    size: int
    sha256: str
    progress: bool


@dataclass(frozen=True)
class Manifest:
    """The last file of a set; its presence makes the set complete."""

    set_id: str
    created_at: str
    part_count: int
    ex_num: int | None
    partitions: tuple[PartitionCopy, ...]
    """In upload order: progress partitions first."""
    duration_s: float
    processes: int = 1
    """How many processes wrote the set (it restores onto any number up to ``part_count``)."""
    generation: str = ""

    def to_json(self) -> bytes:
        body = {
            "set_id": self.set_id,
            "created_at": self.created_at,
            "part_count": self.part_count,
            "ex_num": self.ex_num,
            "duration_s": self.duration_s,
            "processes": self.processes,
            "gen": self.generation,
            "partitions": [vars(p) for p in self.partitions],
        }
        return json.dumps(body, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body = json.loads(data)
        return cls(
            set_id=str(body["set_id"]),
            created_at=str(body["created_at"]),
            part_count=int(body["part_count"]),
            ex_num=None if body["ex_num"] is None else int(body["ex_num"]),
            partitions=tuple(PartitionCopy(**p) for p in body["partitions"]),
            duration_s=float(body["duration_s"]),
            processes=int(body.get("processes", 1)),
            generation=str(body.get("gen", "")),
        )


def round_set_id(now: datetime, interval_s: float) -> str:
    """The set id of the backup round ``now`` falls in: every process of a cluster computes
    the same one (clocks in sync to well under the interval)."""
    return _set_id_at(now.timestamp() // interval_s * interval_s)


def next_round(now: float, interval_s: float, last: float | None) -> float:
    """Start (epoch seconds) of the backup round to attempt next: the round in progress if it
    began less than a quarter of an interval ago, else the next one; never ``last`` again.

    Why the round in progress: an attempt whose peers never came gives up at the end of its
    round, i.e. just after the next one began. Waiting for the one after that (as this loop
    once did) skips a round every time, so two processes whose first rounds differed by one
    kept failing in turn forever, each waiting for the other in a round the other skipped.
    """
    start = now // interval_s * interval_s
    if now - start > interval_s / 4:
        start += interval_s
    if last is not None and start <= last:
        start = last + interval_s
    return start


def _set_id_at(timestamp: float) -> str:
    return datetime.fromtimestamp(round(timestamp, 6), UTC).strftime(_SET_ID_FORMAT)


def backup_once(
    recovery_dir: Path,
    store: BackupStore,
    keep_sets: int,
    *,
    member: ClusterMember = SOLO,
    set_id: str | None = None,
    generation: str = "",
    barrier_timeout_s: float = 60.0,
) -> Manifest:
    """Write this process's share of one complete set, then (process 0) prune to
    ``keep_sets``; returns the set's manifest once it is complete.

    A single process may leave ``set_id`` out (the next id after every existing one); the
    processes of a cluster pass the round's id (:func:`round_set_id`) and the generation of
    their start, and wait up to ``barrier_timeout_s`` for each other at every step.
    """
    started = time.monotonic()
    parts = _partition_files(recovery_dir)
    if not parts:
        raise BackupError(f"no part-N.sqlite3 recovery partitions in {recovery_dir}")
    if set_id is None:
        if member.count > 1:
            raise ValueError("the processes of a cluster back up in rounds: pass set_id")
        set_id = _next_set_id(store)
    else:
        _check_round_is_new(store, set_id)
    barrier = _Barrier(store, set_id, member, generation, barrier_timeout_s)
    infos = inspect_partitions(parts)
    counts = {i.part_count for i in infos.values()}
    if len(counts) != 1:
        raise BackupError(f"{recovery_dir}: partitions disagree on the partition count")
    part_count = counts.pop()
    if sorted(parts) != member.partitions(part_count):
        raise BackupError(
            f"{recovery_dir} holds partitions {sorted(parts)} of {part_count}, but {member} "
            f"holds {member.partitions(part_count)}: back up a directory that holds them all"
        )
    known = [i.newest_ex for i in infos.values() if i.newest_ex is not None]
    ex_num = barrier.newest_execution(max(known, default=None))
    progress = {i for i, info in infos.items() if ex_num is not None and ex_num in info.front_exs}
    copies: list[PartitionCopy] = []
    with tempfile.TemporaryDirectory(prefix="torghut-backup-") as tmp:

        def upload(indices: list[int]) -> None:
            pairs = [(parts[i], Path(tmp) / parts[i].name) for i in indices]
            copy_partitions(pairs)
            for index, (src, copy) in zip(indices, pairs, strict=True):
                store.upload(f"{set_id}/{src.name}", copy)
                digest = _sha256(copy)
                copies.append(
                    PartitionCopy(src.name, index, copy.stat().st_size, digest, index in progress)
                )

        upload(sorted(progress))
        barrier.progress_uploaded()  # no state copy anywhere before every progress copy
        upload(sorted(set(parts) - progress))
    all_copies = barrier.share_copies(copies)
    if member.index == 0:
        ordered = sorted(all_copies, key=lambda c: (not c.progress, c.index))
        manifest = Manifest(
            set_id=set_id,
            created_at=datetime.now(UTC).isoformat(),
            part_count=part_count,
            ex_num=ex_num,
            partitions=tuple(ordered),
            duration_s=round(time.monotonic() - started, 6),
            processes=member.count,
            generation=generation,
        )
        if sorted(c.index for c in ordered) != list(range(part_count)):
            raise BackupError(
                f"set {set_id}: the processes hold partitions "
                f"{sorted(c.index for c in ordered)} of {part_count}"
            )
        store.write(f"{set_id}/{MANIFEST}", manifest.to_json())
        _prune(store, keep_sets)
    else:
        (body,) = await_records(store, [f"{set_id}/{MANIFEST}"], generation, barrier_timeout_s)
        manifest = Manifest.from_json(json.dumps(body).encode())
    BACKUPS.inc()
    BACKUP_SECONDS.observe(manifest.duration_s)
    LAST_BACKUP.set(time.time())
    log.info(
        "recovery_backup_written",
        set_id=set_id,
        partitions=part_count,
        progress=sorted(progress),
        process=member.index,
        duration_s=manifest.duration_s,
    )
    return manifest


class _Barrier:
    """The steps at which the processes of one backup round wait for each other (nothing to
    wait for with one process)."""

    def __init__(
        self,
        store: BackupStore,
        set_id: str,
        member: ClusterMember,
        generation: str,
        timeout_s: float,
    ) -> None:
        self.store = store
        self.set_id = set_id
        self.member = member
        self.generation = generation
        self.timeout_s = timeout_s

    def newest_execution(self, local: int | None) -> int | None:
        """The newest execution number any process sees."""
        if self.member.count == 1:
            return local
        records = self._exchange("ex", {"ex_num": local})
        known = [int(r["ex_num"]) for r in records if r["ex_num"] is not None]
        return max(known) if known else None

    def progress_uploaded(self) -> None:
        """Returns once every process has uploaded its progress partitions."""
        if self.member.count > 1:
            self._exchange("progress", {})

    def share_copies(self, mine: list[PartitionCopy]) -> list[PartitionCopy]:
        """Every process's copies (process 0 waits for them; the others need only their own)."""
        if self.member.count == 1:
            return mine
        self._write("process", {"copies": [vars(c) for c in mine]})
        if self.member.index != 0:
            return mine
        records = self._await("process")
        return [PartitionCopy(**c) for r in records for c in r["copies"]]

    def _exchange(self, step: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        self._write(step, body)
        return self._await(step)

    def _write(self, step: str, body: dict[str, Any]) -> None:
        key = f"{self.set_id}/{step}-{self.member.index}.json"
        self.store.write(key, json.dumps({**body, "gen": self.generation}).encode())

    def _await(self, step: str) -> list[dict[str, Any]]:
        keys = [f"{self.set_id}/{step}-{j}.json" for j in range(self.member.count)]
        return await_records(self.store, keys, self.generation, self.timeout_s)


def complete_sets(store: BackupStore) -> list[Manifest]:
    """Manifests of the sets that have one, newest first (their files are not verified here)."""
    out: list[Manifest] = []
    for set_id in sorted(store.set_ids(), reverse=True):
        data = store.read(f"{set_id}/{MANIFEST}")
        if data is not None:
            out.append(Manifest.from_json(data))
    return out


def _partition_files(recovery_dir: Path) -> dict[int, Path]:
    if not recovery_dir.is_dir():
        return {}
    out: dict[int, Path] = {}
    for p in recovery_dir.iterdir():
        m = _PART_FILE.match(p.name)
        if m:
            out[int(m[1])] = p
    return out


def _next_set_id(store: BackupStore) -> str:
    """A timestamp id strictly greater than every existing one (clock steps back are absorbed)."""
    now = datetime.now(UTC)
    existing = store.set_ids()
    if existing:
        newest = datetime.strptime(max(existing), _SET_ID_FORMAT).replace(tzinfo=UTC)
        now = max(now, newest + timedelta(microseconds=1))
    return now.strftime(_SET_ID_FORMAT)


def _check_round_is_new(store: BackupStore, set_id: str) -> None:
    """A round's set must be the newest and not complete yet (a restart within the same
    round, or a clock stepped back, must not rewrite a set that a restore may pick)."""
    if store.read(f"{set_id}/{MANIFEST}") is not None:
        raise BackupError(f"backup set {set_id} is already complete")
    newer = [s for s in store.set_ids() if s > set_id]
    if newer:
        raise BackupError(f"backup set {set_id} is older than {max(newer)}: clock stepped back?")


def _prune(store: BackupStore, keep_sets: int) -> None:
    """Delete every set (complete or not) older than the ``keep_sets``-th newest complete one.

    Incomplete sets newer than that may be a backup in progress and are left alone.
    """
    complete = [m.set_id for m in complete_sets(store)]
    if len(complete) <= keep_sets:
        return
    oldest_kept = complete[keep_sets - 1]
    for set_id in store.set_ids():
        if set_id < oldest_kept:
            store.delete_set(set_id)
            log.info("recovery_backup_pruned", set_id=set_id)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class RecoveryStart:
    """How a process's recovery directory was made ready (:func:`prepare_recovery`)."""

    cluster: ClusterStart
    restored: str | None
    """The backup set restored, or None (resumed from disk, or fresh partitions)."""


def prepare_recovery(
    recovery_dir: Path,
    store: BackupStore,
    partitions: int,
    *,
    member: ClusterMember = SOLO,
    start_timeout_s: float = 120.0,
    moved_steps: Mapping[str, str] | None = None,
) -> RecoveryStart:
    """Before Bytewax opens ``recovery_dir``: meet the cluster, then resume, restore or init.

    * partitions on disk (every process): resume from them; they must be this process's
      share (:meth:`ClusterMember.partitions`), else :class:`BackupError`;
    * empty (every process): restore the newest complete set (in a cluster the one process 0
      chose), or with no backup at all create this process's share of ``partitions`` empty
      partitions;
    * a mix of both, or a process started alone: :class:`~torghut.recovery.cluster.
      ClusterStartError` from :func:`~torghut.recovery.cluster.join_cluster`;
    * anything else in the directory: :class:`BackupError` (never guess).

    ``moved_steps`` (old step id → new) re-files the state of steps the flow renamed, in
    resumed and restored partitions alike (:func:`~torghut.recovery.partitions.move_step_state`).
    """
    local = _partition_files(recovery_dir)
    if not local and recovery_dir.exists() and any(recovery_dir.iterdir()):
        raise BackupError(f"{recovery_dir} holds files but no recovery partitions")
    start = join_cluster(store, member, "local" if local else "empty", start_timeout_s)
    if local:
        count = next(iter(inspect_partitions(local).values())).part_count
        if sorted(local) != member.partitions(count):
            raise BackupError(
                f"{recovery_dir} holds partitions {sorted(local)} of {count}, but {member} "
                f"holds {member.partitions(count)}: to change the number of processes, "
                "empty every recovery directory and restart the cluster (it restores the "
                "newest backup set)"
            )
        _move_steps(local, moved_steps)
        return RecoveryStart(start, None)
    chosen = _agree_on_set(store, member, start, start_timeout_s)
    manifest = restore_latest_if_empty(recovery_dir, store, partitions, member, chosen)
    _move_steps(_partition_files(recovery_dir), moved_steps)
    return RecoveryStart(start, manifest.set_id if manifest else None)


def _move_steps(parts: dict[int, Path], moved_steps: Mapping[str, str] | None) -> None:
    try:
        moved = move_step_state(parts.values(), moved_steps or {})
    except PartitionError as exc:
        raise BackupError(f"moving the state of renamed steps: {exc}") from exc
    if moved:
        log.warning("recovery_steps_moved", rows=moved, steps=sorted(moved_steps or {}))


def _agree_on_set(
    store: BackupStore, member: ClusterMember, start: ClusterStart, timeout_s: float
) -> str | None:
    """The set every process of a cluster restores: process 0 picks the newest complete one
    whose files are all present; the others read its choice. A single process picks alone."""
    if member.count == 1:
        return None
    key = _RESTORE_CHOICE
    if member.index == 0:
        choice = next(
            (m.set_id for m in complete_sets(store) if _listing_problem(store, m) is None), None
        )
        store.write(key, json.dumps({"gen": start.generation, "set_id": choice}).encode())
        return choice
    (body,) = await_records(store, [key], start.generation, timeout_s)
    return None if body["set_id"] is None else str(body["set_id"])


def restore_latest(
    recovery_dir: Path,
    store: BackupStore,
    member: ClusterMember = SOLO,
    set_id: str | None = None,
) -> Manifest | None:
    """Restore this process's partitions of the newest complete, verified set (or of
    ``set_id``) into the empty ``recovery_dir``.

    Returns its manifest, or None when the store holds no complete set. Raises
    :class:`BackupError` when ``recovery_dir`` is not empty, or when complete sets exist but
    none verifies (refusing to start from scratch while backups exist).
    """
    if recovery_dir.exists() and any(recovery_dir.iterdir()):
        raise BackupError(f"refusing to restore into non-empty {recovery_dir}")
    manifests = [m for m in complete_sets(store) if set_id is None or m.set_id == set_id]
    problems: list[str] = []
    for manifest in manifests:
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=_parent(recovery_dir)))
        try:
            problem = _fetch_verified(store, manifest, staging, member)
            if problem is None:
                recovery_dir.mkdir(parents=True, exist_ok=True)
                for p in staging.iterdir():
                    os.replace(p, recovery_dir / p.name)
                log.info(
                    "recovery_restored",
                    set_id=manifest.set_id,
                    partitions=manifest.part_count,
                    process=member.index,
                    dir=str(recovery_dir),
                )
                return manifest
            problems.append(f"{manifest.set_id}: {problem}")
            log.warning("recovery_backup_set_rejected", set_id=manifest.set_id, problem=problem)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if problems or set_id is not None:
        raise BackupError(
            "no usable recovery backup set: " + ("; ".join(problems) or f"{set_id} is gone")
        )
    return None


def restore_latest_if_empty(
    recovery_dir: Path,
    store: BackupStore,
    partitions: int,
    member: ClusterMember = SOLO,
    set_id: str | None = None,
) -> Manifest | None:
    """Fill an empty ``recovery_dir``; the manifest of the set restored, or None.

    * partitions already present: nothing to do (the flow resumes from them), None;
    * empty or missing: restore the newest complete set (or ``set_id``), or, when the store
      has none, create this process's share of ``partitions`` empty partitions with
      ``bytewax.recovery.init_db_dir`` (None);
    * anything else in the directory: :class:`BackupError` (never guess).

    ``moved_steps`` (old step id → new) re-files the state of steps the flow renamed, in
    resumed and restored partitions alike (:func:`~torghut.recovery.partitions.move_step_state`).
    """
    if _partition_files(recovery_dir):
        return None
    restored = restore_latest(recovery_dir, store, member, set_id)
    if restored is not None:
        return restored
    if partitions < member.count:
        raise BackupError(
            f"RECOVERY_PARTITIONS={partitions} is fewer than the cluster's {member.count} "
            "processes: every process needs at least one partition"
        )
    recovery_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".init-", dir=_parent(recovery_dir)))
    try:
        init_db_dir(staging, partitions)  # type: ignore[no-untyped-call]
        for index in member.partitions(partitions):
            name = f"part-{index}.sqlite3"
            os.replace(staging / name, recovery_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "recovery_initialised", partitions=partitions, process=member.index, dir=str(recovery_dir)
    )
    return None


def _fetch_verified(
    store: BackupStore, manifest: Manifest, staging: Path, member: ClusterMember
) -> str | None:
    """Download this process's files of a set into ``staging``; why the set is unusable, or
    None when it is sound."""
    problem = _listing_problem(store, manifest)
    if problem is not None:
        return problem
    if manifest.part_count < member.count:
        return f"{manifest.part_count} partitions cannot be spread over {member.count} processes"
    for part in manifest.partitions:
        if not member.owns(part.index):
            continue
        dest = staging / part.name
        store.download(f"{manifest.set_id}/{part.name}", dest)
        if dest.stat().st_size != part.size or _sha256(dest) != part.sha256:
            return f"{part.name} checksum mismatch"
    return None


def _listing_problem(store: BackupStore, manifest: Manifest) -> str | None:
    """Why a set's listing does not match its manifest (a partition index or file missing, a
    size wrong), or None."""
    indices = sorted(p.index for p in manifest.partitions)
    if indices != list(range(manifest.part_count)):
        return f"manifest lists partitions {indices} of {manifest.part_count}"
    present = store.files(manifest.set_id)
    for part in manifest.partitions:
        if present.get(part.name) != part.size:
            return f"{part.name} missing or of the wrong size"
    return None


def _parent(path: Path) -> Path:
    parent = path.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


# --------------------------------------------------------------------------- loop


class BackupLoop:
    """Backs ``recovery_dir`` up every ``interval_s`` seconds on a daemon thread.

    Rounds start on the wall clock's multiples of ``interval_s`` (the set id is the round's
    start, :func:`round_set_id`), so the processes of a cluster, each running its own loop
    with the generation of their common start, write the same set. A failed attempt is
    logged and counted (``torghut_recovery_backup_failures_total``) and retried at the next
    round; the flow keeps running, and its status topic shows the age of
    :attr:`last_backup_at`. With ``gc_delay_s`` (the flow's Bytewax ``backup_interval``) a
    set that took more than half of it is logged as too slow: older progress copies may then
    no longer be resumable against newer state copies (``bytewax-notes.md`` §4.6).
    """

    def __init__(
        self,
        recovery_dir: Path,
        store: BackupStore,
        interval_s: float,
        keep_sets: int = 5,
        gc_delay_s: float | None = None,
        *,
        member: ClusterMember = SOLO,
        generation: str = "",
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.recovery_dir = recovery_dir
        self.store = store
        self.interval_s = interval_s
        self.keep_sets = keep_sets
        self.gc_delay_s = gc_delay_s
        self.member = member
        self.generation = generation
        self.last_backup_at: datetime | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._attempt = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("BackupLoop already started")
        self._thread = threading.Thread(target=self._run, name="recovery-backup", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0, final_backup: bool = False) -> None:
        """Stop after the attempt in progress; ``final_backup`` after a clean flow end (EOF
        wrote a final snapshot) takes one last set of the now quiet directory (one process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if final_backup:
            self.backup_now()

    def backup_now(
        self, set_id: str | None = None, barrier_timeout_s: float | None = None
    ) -> Manifest | None:
        """One attempt (serialised with the loop's); records the outcome like the loop does.

        ``set_id`` and ``barrier_timeout_s``: the round's id and the time left in it."""
        with self._attempt:
            try:
                manifest = backup_once(
                    self.recovery_dir,
                    self.store,
                    self.keep_sets,
                    member=self.member,
                    set_id=set_id,
                    generation=self.generation,
                    barrier_timeout_s=barrier_timeout_s or self.interval_s,
                )
            except (
                BackupError,
                TimeoutError,
                OSError,
                PartitionError,
                BotoCoreError,
                ClientError,
            ) as exc:
                BACKUP_FAILURES.inc()
                self.last_error = str(exc)[:500]
                log.error("recovery_backup_failed", error=self.last_error, set_id=set_id)
                return None
            self.last_backup_at = datetime.now(UTC)
            self.last_error = None
            if self.gc_delay_s is not None and manifest.duration_s * 2 > self.gc_delay_s:
                log.warning(
                    "recovery_backup_too_slow",
                    duration_s=manifest.duration_s,
                    gc_delay_s=self.gc_delay_s,
                    hint="raise the flow's -b/backup_interval to at least twice the set duration",
                )
            return manifest

    def _run(self) -> None:
        last: float | None = None
        while True:
            now = time.time()
            start = next_round(now, self.interval_s, last)
            if self._stop.wait(max(start - now, 0.0)):
                return
            # A round ends where the next begins: a process that missed it (slow, restarted)
            # gives up with the others and every process meets again at the next round.
            left = start + self.interval_s - time.time()
            self.backup_now(_set_id_at(start), max(left, 0.5))
            last = start
