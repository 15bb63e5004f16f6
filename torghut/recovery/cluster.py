"""A Bytewax cluster's processes agree on one start, and a partial restart fails loudly.

Why (``shared/bytewax-notes.md`` §5.2, verified there): processes of a Bytewax cluster connect
once, at start. When one dies the others hang; a restarted process cannot rejoin them and
retries its connections forever, and if it restored its partitions from a backup set while the
others resume from their disks, the cluster would resume from mixed epochs (§4.6: possibly with
silently wrong state). So **a cluster restarts as a whole**, and every start is checked here
before Bytewax opens the recovery store:

* :func:`join_cluster`: every process writes a start record with a fresh nonce
  (``cluster/start-<i>.json`` in the flow's backup store, which all processes share) and
  waits until every process of the cluster has written one *and* has seen this process's
  record (each writes ``cluster/joined-<i>.json`` with the hash of the nonces it sees; all
  equal = one generation). A process started alone never gets there: the others are dead
  or hung and write nothing, so it stops with :class:`ClusterStartError` after
  ``RECOVERY_CLUSTER_START_TIMEOUT_S`` instead of hanging.
* The recovery directories must agree: all hold their partitions (resume from disk), or all
  are empty (restore one backup set, chosen by process 0, or start fresh). A mix stops every
  process with :class:`ClusterStartError`.
* :class:`ClusterWatch`: a running process whose peer wrote a new start record (it was
  restarted alone) exits with :data:`EXIT_PEER_RESTARTED`, so the hung survivors do not sit
  there: the supervisor (Kubernetes) restarts them and the cluster meets again as a whole.

Partitions are spread over the processes by index: process ``i`` of ``N`` holds the partitions
``p`` with ``p % N == i`` (:class:`ClusterMember`), so together they hold every partition
exactly once (§4.4), and a backup set restores onto any number of processes up to its
partition count.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from torghut.logs import get_logger
from torghut.recovery.store import BackupStore

__all__ = [
    "EXIT_PEER_RESTARTED",
    "SOLO",
    "ClusterMember",
    "ClusterStart",
    "ClusterStartError",
    "ClusterWatch",
    "await_records",
    "join_cluster",
]

EXIT_PEER_RESTARTED = 75
"""Exit code of a process whose cluster peer restarted alone (EX_TEMPFAIL: restart me too)."""

DiskState = Literal["local", "empty"]

log = get_logger("torghut.recovery.cluster")


class ClusterStartError(RuntimeError):
    """The processes of a cluster did not start together consistently; the message says why
    and what to do."""


@dataclass(frozen=True)
class ClusterMember:
    """This process's place in the cluster: process ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"process {self.index} of {self.count} is not a cluster position")

    def owns(self, partition: int) -> bool:
        """Whether this process holds recovery partition ``partition``."""
        return partition % self.count == self.index

    def partitions(self, part_count: int) -> list[int]:
        """The partition indices this process holds out of ``part_count``."""
        return [p for p in range(part_count) if self.owns(p)]

    def __str__(self) -> str:
        return f"process {self.index} of {self.count}"


SOLO = ClusterMember()
"""A single process: it holds every partition."""


@dataclass(frozen=True)
class ClusterStart:
    """What the processes agreed on at start."""

    generation: str
    """Hash of every process's start nonce: markers of other starts are ignored."""
    disks: DiskState
    nonces: tuple[str, ...]


def join_cluster(
    store: BackupStore,
    member: ClusterMember,
    disk: DiskState,
    timeout_s: float,
    poll_s: float = 0.2,
) -> ClusterStart:
    """Meet every other process of this start, or raise :class:`ClusterStartError`.

    A single process meets nobody (generation ``""``).
    """
    if member.count == 1:
        return ClusterStart("", disk, ())
    nonce = secrets.token_hex(8)
    _write_json(
        store,
        f"cluster/start-{member.index}.json",
        {
            "process": member.index,
            "processes": member.count,
            "nonce": nonce,
            "disk": disk,
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(),
        },
    )
    log.info("cluster_start_announced", process=member.index, processes=member.count, disk=disk)
    deadline = time.monotonic() + timeout_s
    written = ""
    starts: list[dict[str, Any] | None] = []
    while time.monotonic() < deadline:
        starts = [_read_json(store, f"cluster/start-{j}.json") for j in range(member.count)]
        mine = starts[member.index]
        if mine is None or mine.get("nonce") != nonce:
            raise ClusterStartError(
                f"{member}: another process wrote this process's start record: two processes "
                "run with the same process id (-i)"
            )
        if all(s is not None and s.get("processes") == member.count for s in starts):
            nonces = tuple(str(s["nonce"]) for s in starts if s is not None)
            generation = _generation(nonces)
            if generation != written:
                _write_json(store, f"cluster/joined-{member.index}.json", {"gen": generation})
                written = generation
            joined = [_read_json(store, f"cluster/joined-{j}.json") for j in range(member.count)]
            if all(j is not None and j.get("gen") == generation for j in joined):
                disks = {str(s["disk"]) for s in starts if s is not None}
                if len(disks) > 1:
                    raise ClusterStartError(_mixed_disks(starts))
                log.info("cluster_joined", process=member.index, generation=generation)
                return ClusterStart(generation, disk, nonces)
        time.sleep(poll_s)
    raise ClusterStartError(_alone(member, starts, timeout_s, str(store)))


def await_records(
    store: BackupStore,
    keys: list[str],
    generation: str,
    timeout_s: float,
    poll_s: float = 0.1,
) -> list[dict[str, Any]]:
    """The JSON records at ``keys`` once all exist with ``generation``; TimeoutError if not.

    The barrier of a cluster backup round (:func:`torghut.recovery.backup.backup_once`):
    records of another generation (a previous start) do not count.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        records = [_read_json(store, k) for k in keys]
        if all(r is not None and r.get("gen") == generation for r in records):
            return [r for r in records if r is not None]
        if time.monotonic() >= deadline:
            missing = [k for k, r in zip(keys, records, strict=True) if r is None]
            raise TimeoutError(f"after {timeout_s:g} s still waiting for {missing or keys}")
        time.sleep(poll_s)


class ClusterWatch:
    """Ends this process when a peer starts again on its own (see the module docstring).

    ``on_restart`` defaults to logging and ``os._exit(EXIT_PEER_RESTARTED)``: the Bytewax
    worker threads of a cluster that lost a peer are hung, so nothing short of exiting helps.
    """

    def __init__(
        self,
        store: BackupStore,
        member: ClusterMember,
        start: ClusterStart,
        interval_s: float = 2.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.member = member
        self.start_info = start
        self.interval_s = interval_s
        self._on_restart = on_restart or _exit_for_restart
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-watch", daemon=True)

    def start(self) -> None:
        if self.member.count > 1:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> str | None:
        """Why this cluster is broken (a peer's newer start), or None."""
        for j, nonce in enumerate(self.start_info.nonces):
            record = _read_json(self.store, f"cluster/start-{j}.json")
            if record is not None and record.get("nonce") != nonce:
                return f"process {j} started again at {record.get('started_at')} on its own"
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                why = self.check()
            except (OSError, ValueError, BotoCoreError, ClientError) as exc:
                # a store outage must not end a healthy cluster
                log.warning("cluster_watch_failed", error=str(exc)[:300])
                continue
            if why is not None:
                self._on_restart(why)
                return


def _exit_for_restart(why: str) -> None:
    log.error(
        "cluster_peer_restarted",
        why=why,
        exit_code=EXIT_PEER_RESTARTED,
        hint="a Bytewax cluster restarts as a whole: this process exits so that all restart",
    )
    os._exit(EXIT_PEER_RESTARTED)


def _generation(nonces: tuple[str, ...]) -> str:
    return hashlib.sha256("|".join(nonces).encode()).hexdigest()[:16]


def _alone(
    member: ClusterMember, starts: list[dict[str, Any] | None], timeout_s: float, where: str
) -> str:
    peers = []
    for j, s in enumerate(starts):
        if j == member.index:
            continue
        if s is None:
            peers.append(f"process {j}: no start record")
        else:
            peers.append(f"process {j}: last started at {s.get('started_at')}")
    return (
        f"{member}: the other processes did not start with this one within {timeout_s:g} s "
        f"({'; '.join(peers) or 'no peers seen'}). A Bytewax cluster restarts as a whole: a "
        "process restarted alone cannot rejoin running peers. Stop every process of the "
        f"cluster and start them all again. (The processes meet in {where}: every process "
        "must use the same backup store, RECOVERY_S3_BUCKET or one shared RECOVERY_BACKUP_DIR.)"
    )


def _mixed_disks(starts: list[dict[str, Any] | None]) -> str:
    states = ", ".join(
        f"process {j}: {'partitions on disk' if s and s['disk'] == 'local' else 'empty'}"
        for j, s in enumerate(starts)
    )
    return (
        f"recovery directories disagree ({states}). A cluster resumes either entirely from its "
        "local partitions or entirely from one backup set: empty the recovery directory of "
        "every process (they then restore the newest complete backup set) and start them all."
    )


def _write_json(store: BackupStore, key: str, body: dict[str, Any]) -> None:
    store.write(key, json.dumps(body).encode())


def _read_json(store: BackupStore, key: str) -> dict[str, Any] | None:
    data = store.read(key)
    if data is None:
        return None
    body = json.loads(data)
    return body if isinstance(body, dict) else None
