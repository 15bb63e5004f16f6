"""The provisioning scripts' lifecycle: start, idempotent re-start, stop with nothing left behind.

Runs a second set of services on free ports with its own INFRA_RUN under tmp_path, through the
same code path conftest uses (``ServiceSession``), so the shared services are never touched.
SeaweedFS and Postgres only: Kafka's start/stop/restart (ports closed, process group gone) is
covered by tests/smoke/test_kafka_outage.py, which runs its own broker the same way.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.services import (
    INFRA_DIR,
    InfraConfig,
    ServiceSession,
    free_ports,
    group_alive,
    is_up,
    listening_ports,
    start,
    stop,
)

NAMES = ("s3", "pg")


def _pids(cfg: InfraConfig, pg_cluster: str) -> dict[str, int]:
    pg_pid = Path(f"/var/lib/postgresql/15/{pg_cluster}/postmaster.pid")
    return {
        "s3": int((cfg.run_dir / "s3" / "weed.pid").read_text()),
        "pg": int(pg_pid.read_text().splitlines()[0]),
    }


@pytest.fixture
def alt_stack(tmp_path: Path) -> Iterator[tuple[InfraConfig, list[int], str]]:
    (pgport,) = free_ports(1)
    s3, master, volume, filer = free_ports(4, plus_10000=True)
    cluster = f"torghut_{pgport}"
    env = {
        "INFRA_RUN": str(tmp_path / "infra"),
        "S3_PORT": str(s3),
        "S3_MASTER_PORT": str(master),
        "S3_VOLUME_PORT": str(volume),
        "S3_FILER_PORT": str(filer),
        "PG_TEST_PORT": str(pgport),
        # weed's graceful stop takes ~16 s (filer gRPC drain); escalate to SIGKILL after 2 s here,
        # which also proves the SIGKILL path leaves nothing behind
        "S3_STOP_GRACE": "2",
    }
    cfg = InfraConfig.from_env(env)
    ports = [pgport] + [p + d for p in (s3, master, volume, filer) for d in (0, 10000)]
    try:
        yield cfg, ports, cluster
    finally:
        stop(list(NAMES), cfg)
        subprocess.run(  # remove the throwaway Postgres cluster
            [str(INFRA_DIR / "pg.sh"), "drop"], env=cfg.env(), check=True, capture_output=True
        )


def test_sessions_start_once_and_last_one_out_stops_everything(
    alt_stack: tuple[InfraConfig, list[int], str],
) -> None:
    cfg, ports, cluster = alt_stack
    assert not set(ports) & listening_ports()

    first = ServiceSession(cfg, NAMES)
    first.acquire()
    assert first.started == list(NAMES)
    assert set(ports) <= listening_ports(), "every service port (incl. weed gRPC) is bound"
    pids = _pids(cfg, cluster)

    # a concurrent session finds everything up: starts nothing, and re-start is a cheap no-op
    t0 = time.monotonic()
    second = ServiceSession(cfg, NAMES)
    second.acquire()
    assert second.started == []
    start(list(NAMES), cfg, owner="pytest")  # as conftest calls it: does not claim ownership
    assert time.monotonic() - t0 < 10

    # the first session leaving does not pull the services from under the second one
    assert first.release() == []
    assert all(is_up(n, cfg) for n in NAMES)

    # the last session out stops what a session started, leaving no process and no port
    assert second.release() == list(NAMES)
    assert not set(ports) & listening_ports()
    for name, pid in pids.items():
        alive = group_alive(pid) if name == "s3" else Path(f"/proc/{pid}").exists()
        assert not alive, name
    assert not any(is_up(n, cfg) for n in NAMES)


def test_manually_started_services_are_kept(alt_stack: tuple[InfraConfig, list[int], str]) -> None:
    cfg, _ports, _cluster = alt_stack
    env = cfg.env()
    env.pop("INFRA_OWNER", None)
    subprocess.run([str(INFRA_DIR / "services.sh"), "up", "pg"], env=env, check=True)
    session = ServiceSession(cfg, names=("pg",))
    session.acquire()
    assert session.started == []
    assert session.release() == []
    assert is_up("pg", cfg), "a developer's service must survive the test session"
