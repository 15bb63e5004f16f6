"""How the TA flow reads its place in a cluster and its recovery directory from the
``bytewax.run`` command line and environment (the way ``bytewax.run`` itself reads them)."""

from __future__ import annotations

from pathlib import Path

from dataflows.startup import BytewaxRun, bytewax_run_args
from torghut.recovery import SOLO, ClusterMember

RUN = "/venv/lib/python3.11/site-packages/bytewax/run.py"


def test_not_started_by_bytewax_run() -> None:
    assert bytewax_run_args(["pytest", "-r", "x"], {}) is None
    assert bytewax_run_args([], {}) is None


def test_flags() -> None:
    argv = [RUN, "dataflows.ta:flow", "-w", "1", "-i", "1", "-a", "h0:1;h1:1;h2:1", "-r", "d"]
    assert bytewax_run_args([*argv, "-s", "5", "-b", "300"], {}) == BytewaxRun(
        Path("d"), ClusterMember(1, 3), 300, 5.0
    )
    long = [RUN, "m:flow", "--recovery-directory=d2", "--process-id", "0", "--addresses", "a:1"]
    assert bytewax_run_args(long, {}) == BytewaxRun(Path("d2"), SOLO, None, None)
    assert bytewax_run_args([RUN, "x:flow", "--snapshot-interval=2.5"], {}) == BytewaxRun(
        None, SOLO, None, 2.5
    )


def test_environment_of_a_statefulset_pod(tmp_path: Path) -> None:
    hosts = tmp_path / "hostfile.txt"
    hosts.write_text("ta-0.ta:2101\nta-1.ta:2101\n\n")
    env = {
        "BYTEWAX_POD_NAME": "ta-1",
        "BYTEWAX_STATEFULSET_NAME": "ta",
        "BYTEWAX_HOSTFILE_PATH": str(hosts),
        "BYTEWAX_RECOVERY_DIRECTORY": "/var/rec",
        "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "300",
        "BYTEWAX_SNAPSHOT_INTERVAL": "7",
    }
    assert bytewax_run_args([RUN, "dataflows.ta:flow"], env) == BytewaxRun(
        Path("/var/rec"), ClusterMember(1, 2), 300, 7.0
    )
    # flags win over the environment, as in bytewax.run
    flags = [RUN, "dataflows.ta:flow", "-i", "0", "-a", "x:1;y:1;z:1"]
    run = bytewax_run_args(flags, env)
    assert run is not None
    assert run.member == ClusterMember(0, 3)
