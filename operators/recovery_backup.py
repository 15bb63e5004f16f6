"""Back up Bytewax recovery partitions to S3 (or a directory) safely, and restore them.

Why this procedure (``shared/bytewax-notes.md`` §4.6, verified there): copying a live
``part-N.sqlite3`` misses everything still in its ``-wal``, and combining copies taken at
different times resumes *silently with wrong state* unless the partitions holding the latest
execution's progress rows (``fronts``) are the oldest copies of the set. So one backup set is:

1. per partition, a consistent single-file copy made with SQLite's online backup API;
2. uploaded **progress partitions first** (those with ``fronts`` rows for the newest
   ``ex_num``), then the others, each with its size and SHA-256;
3. a ``manifest.json`` written **last**: a set without one is incomplete and never restored.

Sets are ``<root>/<set-id>/`` with a sortable, strictly increasing UTC timestamp id
(``20261125T013000.123456Z``); the ``keep_sets`` newest complete sets are kept. Run the flow
with ``-b`` (backup interval) at least twice the time one set takes, so the older progress
copies stay resumable against the newer state copies.

Restore takes the newest *complete and verified* set (manifest present, every partition index
``0..part_count-1`` present, sizes and checksums equal) into an **empty** recovery directory,
never mixing sets; a corrupt set is skipped for the next older one. If sets exist but none
verifies, restore refuses rather than silently starting from empty state.

One backup loop per recovery directory holding all partitions (one TA process, or a shared
volume); per-pod subsets would need a coordinated set id (not provided).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from bytewax.recovery import init_db_dir
from prometheus_client import Counter, Gauge, Histogram

from torghut.config import RecoverySettings, SettingsError, load_section
from torghut.logs import configure_logging, get_logger

__all__ = [
    "BackupError",
    "BackupLoop",
    "BackupStore",
    "LocalDirStore",
    "Manifest",
    "PartitionCopy",
    "S3Store",
    "backup_once",
    "complete_sets",
    "restore_latest",
    "restore_latest_if_empty",
    "store_from_settings",
]

MANIFEST = "manifest.json"
_PART_FILE = re.compile(r"^part-(\d+)\.sqlite3$")
_SET_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
_SET_ID_FORMAT = "%Y%m%dT%H%M%S.%fZ"

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

log = get_logger("operators.recovery_backup")


class BackupError(RuntimeError):
    """A backup or restore cannot proceed safely; the message says why."""


# --------------------------------------------------------------------------- stores


class BackupStore(Protocol):
    """Where backup sets live: keys are ``<set-id>/<file name>`` under the store's root."""

    def upload(self, key: str, source: Path) -> None: ...

    def download(self, key: str, dest: Path) -> None: ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    def write(self, key: str, data: bytes) -> None: ...

    def set_ids(self) -> list[str]:
        """Every set id present (complete or not), in any order."""

    def files(self, set_id: str) -> dict[str, int]:
        """File name -> size of one set."""

    def delete_set(self, set_id: str) -> None: ...


class LocalDirStore:
    """Sets as directories under ``root`` (the embedded default, ``RECOVERY_BACKUP_DIR``).

    Writes go to a temporary file and are renamed into place, so a file (and above all the
    manifest) is either absent or complete.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def upload(self, key: str, source: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def set_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and _SET_ID.match(p.name)]

    def files(self, set_id: str) -> dict[str, int]:
        d = self.root / set_id
        if not d.is_dir():
            return {}
        return {p.name: p.stat().st_size for p in d.iterdir() if not p.name.startswith(".")}

    def delete_set(self, set_id: str) -> None:
        shutil.rmtree(self.root / set_id, ignore_errors=True)

    def _path(self, key: str) -> Path:
        return self.root / key


class S3Store:
    """Sets under ``s3://bucket/prefix/<set-id>/`` (S3, MinIO, SeaweedFS; path-style)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def upload(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(key))

    def download(self, key: str, dest: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(dest))

    def read(self, key: str) -> bytes | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        data: bytes = obj["Body"].read()
        return data

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def set_ids(self) -> list[str]:
        # From object keys, not CommonPrefixes: some S3 servers (SeaweedFS) keep listing a
        # "directory" after its last object is deleted.
        ids: set[str] = set()
        base = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(base) :].split("/", 1)[0]
                if _SET_ID.match(name):
                    ids.add(name)
        return list(ids)

    def files(self, set_id: str) -> dict[str, int]:
        base = f"{self._key(set_id)}/"
        out: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(base) :]] = int(obj["Size"])
        return out

    def delete_set(self, set_id: str) -> None:
        keys = [{"Key": f"{self._key(set_id)}/{name}"} for name in self.files(set_id)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
            )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def store_from_settings(settings: RecoverySettings, flow: str) -> BackupStore:
    """S3 when ``RECOVERY_S3_BUCKET`` is set, else ``RECOVERY_BACKUP_DIR``; one root per flow."""
    if not settings.s3_bucket:
        return LocalDirStore(settings.backup_dir / flow)
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=(
            settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
        ),
        aws_secret_access_key=(
            settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        ),
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
        verify=str(settings.s3_ca_bundle) if settings.s3_ca_bundle else None,
    )
    return S3Store(client, settings.s3_bucket, f"{settings.s3_prefix.strip('/')}/{flow}")


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

    def to_json(self) -> bytes:
        body = {
            "set_id": self.set_id,
            "created_at": self.created_at,
            "part_count": self.part_count,
            "ex_num": self.ex_num,
            "duration_s": self.duration_s,
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
        )


def backup_once(recovery_dir: Path, store: BackupStore, keep_sets: int) -> Manifest:
    """Write one complete set of ``recovery_dir``'s partitions, then prune to ``keep_sets``."""
    started = time.monotonic()
    parts = _partition_files(recovery_dir)
    if not parts:
        raise BackupError(f"no part-N.sqlite3 recovery partitions in {recovery_dir}")
    set_id = _next_set_id(store)
    ex_num, progress = _progress_partitions(parts)
    ordered = sorted(parts, key=lambda i: (i not in progress, i))
    copies: list[PartitionCopy] = []
    part_count: int | None = None
    with tempfile.TemporaryDirectory(prefix="torghut-backup-") as tmp:
        for index in ordered:
            src, copy = parts[index], Path(tmp) / parts[index].name
            count = _online_copy(src, copy)
            if part_count is not None and count != part_count:
                raise BackupError(f"{recovery_dir}: partitions disagree on the partition count")
            part_count = count
            store.upload(f"{set_id}/{src.name}", copy)
            copies.append(
                PartitionCopy(
                    src.name, index, copy.stat().st_size, _sha256(copy), index in progress
                )
            )
    assert part_count is not None  # parts is non-empty
    if sorted(parts) != list(range(part_count)):
        raise BackupError(
            f"{recovery_dir} holds partitions {sorted(parts)} of {part_count}: back up a directory "
            "that holds every partition"
        )
    manifest = Manifest(
        set_id=set_id,
        created_at=datetime.now(UTC).isoformat(),
        part_count=part_count,
        ex_num=ex_num,
        partitions=tuple(copies),
        duration_s=round(time.monotonic() - started, 6),
    )
    store.write(f"{set_id}/{MANIFEST}", manifest.to_json())
    _prune(store, keep_sets)
    BACKUPS.inc()
    BACKUP_SECONDS.observe(manifest.duration_s)
    LAST_BACKUP.set(time.time())
    log.info(
        "recovery_backup_written",
        set_id=set_id,
        partitions=part_count,
        progress=sorted(progress),
        duration_s=manifest.duration_s,
    )
    return manifest


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


def _progress_partitions(parts: dict[int, Path]) -> tuple[int | None, set[int]]:
    """The newest execution number and the partitions holding its worker frontiers."""
    ex_by_part: dict[int, int | None] = {}
    for index, path in parts.items():
        with _open(path) as conn:
            ex_by_part[index] = conn.execute("SELECT MAX(ex_num) FROM exs").fetchone()[0]
    known = [e for e in ex_by_part.values() if e is not None]
    if not known:
        return None, set()
    newest = max(known)
    progress: set[int] = set()
    for index, path in parts.items():
        with _open(path) as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM fronts WHERE ex_num = ?", (newest,)
            ).fetchone()
        if n:
            progress.add(index)
    return newest, progress


def _online_copy(src: Path, dest: Path) -> int:
    """Consistent one-file copy of a live WAL database; returns its recorded partition count."""
    with _open(src) as source:
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
        finally:
            target.close()
        row = source.execute("SELECT part_count FROM parts").fetchone()
    if row is None:
        raise BackupError(f"{src} has no parts row: not a Bytewax recovery partition")
    return int(row[0])


def _open(path: Path) -> closing[sqlite3.Connection]:
    """A short-lived connection that waits politely (busy timeout) for the flow's writer."""
    return closing(sqlite3.connect(path, timeout=5.0))


def _next_set_id(store: BackupStore) -> str:
    """A timestamp id strictly greater than every existing one (clock steps back are absorbed)."""
    now = datetime.now(UTC)
    existing = store.set_ids()
    if existing:
        newest = datetime.strptime(max(existing), _SET_ID_FORMAT).replace(tzinfo=UTC)
        now = max(now, newest + timedelta(microseconds=1))
    return now.strftime(_SET_ID_FORMAT)


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


def restore_latest(recovery_dir: Path, store: BackupStore) -> Manifest | None:
    """Restore the newest complete, verified set into the empty ``recovery_dir``.

    Returns its manifest, or None when the store holds no complete set. Raises
    :class:`BackupError` when ``recovery_dir`` is not empty, or when complete sets exist but
    none verifies (refusing to start from scratch while backups exist).
    """
    if recovery_dir.exists() and any(recovery_dir.iterdir()):
        raise BackupError(f"refusing to restore into non-empty {recovery_dir}")
    manifests = complete_sets(store)
    problems: list[str] = []
    for manifest in manifests:
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=_parent(recovery_dir)))
        try:
            problem = _fetch_verified(store, manifest, staging)
            if problem is None:
                recovery_dir.mkdir(parents=True, exist_ok=True)
                for p in staging.iterdir():
                    os.replace(p, recovery_dir / p.name)
                log.info(
                    "recovery_restored",
                    set_id=manifest.set_id,
                    partitions=manifest.part_count,
                    dir=str(recovery_dir),
                )
                return manifest
            problems.append(f"{manifest.set_id}: {problem}")
            log.warning("recovery_backup_set_rejected", set_id=manifest.set_id, problem=problem)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if problems:
        raise BackupError("no usable recovery backup set: " + "; ".join(problems))
    return None


def restore_latest_if_empty(recovery_dir: Path, store: BackupStore, partitions: int) -> bool:
    """Prepare ``recovery_dir`` before the flow starts; True when a backup was restored.

    * partitions already present: nothing to do (the flow resumes from them), False;
    * empty or missing: restore the newest complete set (True), or, when the store has none,
      create ``partitions`` empty partitions with ``bytewax.recovery.init_db_dir`` (False);
    * anything else in the directory: :class:`BackupError` (never guess).
    """
    if _partition_files(recovery_dir):
        return False
    if restore_latest(recovery_dir, store) is not None:
        return True
    recovery_dir.mkdir(parents=True, exist_ok=True)
    init_db_dir(recovery_dir, partitions)  # type: ignore[no-untyped-call]
    log.info("recovery_initialised", partitions=partitions, dir=str(recovery_dir))
    return False


def _fetch_verified(store: BackupStore, manifest: Manifest, staging: Path) -> str | None:
    """Download a set into ``staging``; the reason it is unusable, or None when it is sound."""
    indices = sorted(p.index for p in manifest.partitions)
    if indices != list(range(manifest.part_count)):
        return f"manifest lists partitions {indices} of {manifest.part_count}"
    present = store.files(manifest.set_id)
    for part in manifest.partitions:
        if present.get(part.name) != part.size:
            return f"{part.name} missing or of the wrong size"
        dest = staging / part.name
        store.download(f"{manifest.set_id}/{part.name}", dest)
        if dest.stat().st_size != part.size or _sha256(dest) != part.sha256:
            return f"{part.name} checksum mismatch"
    return None


def _parent(path: Path) -> Path:
    parent = path.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


# --------------------------------------------------------------------------- loop


class BackupLoop:
    """Backs ``recovery_dir`` up every ``interval_s`` seconds on a daemon thread.

    A failed attempt is logged and counted (``torghut_recovery_backup_failures_total``) and
    retried at the next interval; the flow keeps running, and its status topic shows the age
    of :attr:`last_backup_at`. With ``gc_delay_s`` (the flow's Bytewax ``backup_interval``) a
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
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.recovery_dir = recovery_dir
        self.store = store
        self.interval_s = interval_s
        self.keep_sets = keep_sets
        self.gc_delay_s = gc_delay_s
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
        wrote a final snapshot) takes one last set of the now quiet directory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if final_backup:
            self.backup_now()

    def backup_now(self) -> Manifest | None:
        """One attempt (serialised with the loop's); records the outcome like the loop does."""
        with self._attempt:
            try:
                manifest = backup_once(self.recovery_dir, self.store, self.keep_sets)
            except (BackupError, OSError, sqlite3.Error, BotoCoreError, ClientError) as exc:
                BACKUP_FAILURES.inc()
                self.last_error = str(exc)[:500]
                log.error("recovery_backup_failed", error=self.last_error)
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
        while not self._stop.wait(self.interval_s):
            self.backup_now()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m operators.recovery_backup {backup,restore,list} [--dir D] [--flow F]``."""
    parser = argparse.ArgumentParser(
        prog="python -m operators.recovery_backup",
        description="Back up / restore Bytewax recovery partitions (settings from RECOVERY_*).",
    )
    parser.add_argument("command", choices=("backup", "restore", "list"))
    parser.add_argument("--dir", type=Path, help="recovery directory (default RECOVERY_DIR)")
    parser.add_argument("--flow", default="ta", help="flow name: one backup root per flow")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_section(RecoverySettings)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    recovery_dir = args.dir or settings.dir
    store = store_from_settings(settings, args.flow)
    if args.command == "backup":
        manifest = backup_once(recovery_dir, store, settings.keep_sets)
        sys.stdout.write(f"{manifest.set_id}\n")
    elif args.command == "restore":
        restored = restore_latest(recovery_dir, store)
        sys.stdout.write(f"{restored.set_id if restored else 'no complete backup set'}\n")
    else:
        for m in complete_sets(store):
            size = sum(p.size for p in m.partitions)
            sys.stdout.write(f"{m.set_id}\t{m.part_count} partitions\t{size} bytes\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
