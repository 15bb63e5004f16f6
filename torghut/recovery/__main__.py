"""``python -m torghut.recovery {backup,restore,list} [--dir D] [--flow F] [--process I/N]``:
the backup sets of a flow by hand (settings from ``RECOVERY_*``).

``backup`` and ``restore`` act on one process's recovery directory; ``--process 1/2`` names
its place in a cluster (it then restores only its partitions of the set). A manual backup is
for a single process holding every partition; the processes of a cluster back up together,
from their backup loops.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from torghut.config import RecoverySettings, SettingsError, load_section
from torghut.logs import configure_logging
from torghut.recovery.backup import backup_once, complete_sets, restore_latest
from torghut.recovery.cluster import SOLO, ClusterMember
from torghut.recovery.store import store_from_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torghut.recovery",
        description="Back up / restore Bytewax recovery partitions (settings from RECOVERY_*).",
    )
    parser.add_argument("command", choices=("backup", "restore", "list"))
    parser.add_argument("--dir", type=Path, help="recovery directory (default RECOVERY_DIR)")
    parser.add_argument("--flow", default="ta", help="flow name: one backup root per flow")
    parser.add_argument(
        "--process", default="0/1", help="this directory's place in a cluster, I/N (restore)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_section(RecoverySettings)
        index, count = (int(x) for x in args.process.split("/", 1))
        member = ClusterMember(index, count)
    except (SettingsError, ValueError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    recovery_dir = args.dir or settings.dir
    store = store_from_settings(settings, args.flow)
    if args.command == "backup":
        if member != SOLO:
            sys.stderr.write("a manual backup is for one process holding every partition\n")
            return 2
        manifest = backup_once(recovery_dir, store, settings.keep_sets)
        sys.stdout.write(f"{manifest.set_id}\n")
    elif args.command == "restore":
        restored = restore_latest(recovery_dir, store, member)
        sys.stdout.write(f"{restored.set_id if restored else 'no complete backup set'}\n")
    else:
        for m in complete_sets(store):
            size = sum(p.size for p in m.partitions)
            sys.stdout.write(
                f"{m.set_id}\t{m.part_count} partitions\t{m.processes} process(es)\t{size} bytes\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
