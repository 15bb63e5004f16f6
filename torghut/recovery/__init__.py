"""Bytewax recovery state kept safe: backup sets in S3 (or a directory), restore on an empty
disk, and the start rule of a multi-process cluster.

Not a Bytewax operator (hence not in :mod:`operators`): the dataflows call it at start, before
Bytewax opens the recovery directory, and it runs a backup thread beside them.

* :mod:`torghut.recovery.store`: where sets live (:class:`LocalDirStore`, :class:`S3Store`);
* :mod:`torghut.recovery.backup`: the safe backup and restore procedure, one process or many;
* :mod:`torghut.recovery.cluster`: one start for the whole cluster, partial restarts refused;
* :mod:`torghut.recovery.partitions`: reading, copying and migrating the partitions (steps
  renamed between versions keep their state).

``python -m torghut.recovery list|backup|restore`` works on the sets by hand.
"""

from torghut.recovery.backup import (
    MANIFEST,
    BackupError,
    BackupLoop,
    Manifest,
    PartitionCopy,
    RecoveryStart,
    backup_once,
    complete_sets,
    prepare_recovery,
    restore_latest,
    restore_latest_if_empty,
    round_set_id,
)
from torghut.recovery.cluster import (
    EXIT_PEER_RESTARTED,
    SOLO,
    ClusterMember,
    ClusterStart,
    ClusterStartError,
    ClusterWatch,
    join_cluster,
)
from torghut.recovery.partitions import move_step_state
from torghut.recovery.store import BackupStore, LocalDirStore, S3Store, store_from_settings

__all__ = [
    "EXIT_PEER_RESTARTED",
    "MANIFEST",
    "SOLO",
    "BackupError",
    "BackupLoop",
    "BackupStore",
    "ClusterMember",
    "ClusterStart",
    "ClusterStartError",
    "ClusterWatch",
    "LocalDirStore",
    "Manifest",
    "PartitionCopy",
    "RecoveryStart",
    "S3Store",
    "backup_once",
    "complete_sets",
    "join_cluster",
    "move_step_state",
    "prepare_recovery",
    "restore_latest",
    "restore_latest_if_empty",
    "round_set_id",
    "store_from_settings",
]
