"""Read, copy and migrate Bytewax recovery partitions, from a child process.

Why a child process: Bytewax writes the partitions with its own copy of SQLite (rusqlite,
bundled), and two SQLite libraries in one process must never open the same database file:
POSIX advisory locks belong to the process, so when one library closes its descriptor the
other library's locks on that file are silently released (sqlite.org, "How To Corrupt An
SQLite Database File", §2.2). Measured here: with Python's ``sqlite3`` copying the partitions
of the TA flow running in the same process every second, the flow never completed another
epoch (no snapshot, no worker frontier), while it kept emitting rows. A short-lived child
process has locks of its own, so the copy is as safe as SQLite's online backup between
processes is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PartitionError",
    "PartitionInfo",
    "copy_partitions",
    "inspect_partitions",
    "move_step_state",
]

_TIMEOUT_S = 120.0

_SCRIPT = r"""
import json, sqlite3, sys
from contextlib import closing
req = json.loads(sys.argv[1])

def open_(path):
    return closing(sqlite3.connect(path, timeout=5.0))

def part_count(conn, path):
    row = conn.execute("SELECT part_count FROM parts").fetchone()
    if row is None:
        raise SystemExit(f"{path} has no parts row: not a Bytewax recovery partition")
    return int(row[0])

out = []
if req["op"] == "move":
    for path in req["paths"]:
        with open_(path) as conn, conn:
            part_count(conn, path)
            moved = 0
            for old, new in req["moves"]:
                def count(step):
                    return conn.execute(
                        "SELECT COUNT(*) FROM snaps WHERE step_id = ? OR substr(step_id, 1, ?) = ?",
                        (step, len(step) + 1, step + "."),
                    ).fetchone()[0]
                if count(old) and count(new):
                    raise SystemExit(f"{path} holds state of both {old!r} and {new!r}")
                moved += conn.execute(
                    "UPDATE OR FAIL snaps SET step_id = ? || substr(step_id, ?) "
                    "WHERE step_id = ? OR substr(step_id, 1, ?) = ?",
                    (new, len(old) + 1, old, len(old) + 1, old + "."),
                ).rowcount
            out.append(moved)
elif req["op"] == "inspect":
    for path in req["paths"]:
        with open_(path) as conn:
            exs = conn.execute("SELECT MAX(ex_num) FROM exs").fetchone()[0]
            fronts = [r[0] for r in conn.execute("SELECT DISTINCT ex_num FROM fronts")]
            out.append({"part_count": part_count(conn, path), "exs": exs, "fronts": fronts})
else:
    for src, dest in req["pairs"]:
        with open_(src) as source:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)
            finally:
                target.close()
            out.append(part_count(source, src))  # refuses a file that is no partition
print(json.dumps(out))
"""


class PartitionError(RuntimeError):
    """A partition could not be read or copied; the message says which and why."""


@dataclass(frozen=True)
class PartitionInfo:
    """What a backup needs to know of one partition."""

    part_count: int
    newest_ex: int | None
    """The newest execution number in its ``exs`` or ``fronts`` rows."""
    front_exs: frozenset[int]
    """The executions it holds worker frontiers (progress rows) of."""


def inspect_partitions(paths: dict[int, Path]) -> dict[int, PartitionInfo]:
    """Partition count, newest execution and progress rows of each partition."""
    order = sorted(paths)
    rows = _run({"op": "inspect", "paths": [str(paths[i]) for i in order]})
    out: dict[int, PartitionInfo] = {}
    for index, row in zip(order, rows, strict=True):
        known = [e for e in (row["exs"], *row["fronts"]) if e is not None]
        out[index] = PartitionInfo(
            int(row["part_count"]),
            max(known) if known else None,
            frozenset(int(e) for e in row["fronts"]),
        )
    return out


def copy_partitions(pairs: list[tuple[Path, Path]]) -> None:
    """Consistent one-file copies (SQLite's online backup) of live WAL databases."""
    if pairs:
        _run({"op": "copy", "pairs": [[str(s), str(d)] for s, d in pairs]})


def move_step_state(paths: Collection[Path], moves: Mapping[str, str]) -> int:
    """Re-file the snapshots of renamed steps under their new ids; the number of rows moved.

    ``moves`` maps an old step id to its new one, substeps included (``a.b`` → ``a.x.b`` also
    moves ``a.b.batch`` to ``a.x.b.batch``). Bytewax finds a step's state by its id only, so a
    step that moved in the flow (a new enclosing operator) would otherwise resume empty, and a
    sink batcher would lose the rows it held at the snapshot. Idempotent; a partition holding
    state under both ids is refused (:class:`PartitionError`), never merged by guess.
    Call it before Bytewax opens the partitions.
    """
    if not paths or not moves:
        return 0
    moved = _run(
        {
            "op": "move",
            "paths": sorted(str(p) for p in paths),
            "moves": sorted(moves.items()),
        }
    )
    return sum(int(n) for n in moved)


def _run(request: dict[str, object]) -> list[Any]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", _SCRIPT, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise PartitionError(f"recovery partitions ({request['op']}): {done.stderr.strip()[-500:]}")
    result: list[Any] = json.loads(done.stdout)
    return result
