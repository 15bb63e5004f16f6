"""Start/stop the local real services (Kafka, SeaweedFS S3, PostgreSQL) for tests.

The shell scripts under ``infra/local/`` do the work; this module calls them and adds the
session bookkeeping used by ``tests/conftest.py``:

* every pytest session holds a *lease* (``$INFRA_RUN/leases/<pid>-<id>``) while it runs;
* a service that was down when a session needed it is started and marked *autostarted*
  (``$INFRA_RUN/autostarted/<name>``);
* when the last live lease is released, autostarted services are stopped again. Services a
  developer started by hand (``make services-up`` / ``infra/local/services.sh up``) carry no
  mark and are left running.

All of it is guarded by an ``flock`` on ``$INFRA_RUN/.lease.lock`` so concurrent sessions
(several engineers, or several terminals) neither double-start nor stop services under each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO / "infra" / "local"
SERVICES: tuple[str, ...] = ("kafka", "s3", "pg")
# the scripts' default ports (weed HTTP ports plus their +10000 gRPC twins); never handed out
# by free_ports() even while the shared services are down
DEFAULT_PORTS = frozenset(
    {19092, 19093, 18333, 28333, 19333, 29333, 18340, 28340, 18888, 28888, 55432}
)


class ServiceError(RuntimeError):
    """A service could not be started or stopped; the message carries the log tail."""


@dataclass(frozen=True)
class InfraConfig:
    """Where the services run. Mirrors the env defaults of ``infra/local/*.sh``."""

    run_dir: Path
    kafka_port: int
    kafka_controller_port: int
    s3_port: int
    s3_access_key: str
    s3_secret_key: str
    pg_port: int
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InfraConfig:
        e = os.environ if env is None else env
        return cls(
            run_dir=Path(e.get("INFRA_RUN", str(REPO / "var" / "infra"))),
            kafka_port=int(e.get("KAFKA_PORT", "19092")),
            kafka_controller_port=int(e.get("KAFKA_CONTROLLER_PORT", "19093")),
            s3_port=int(e.get("S3_PORT", "18333")),
            s3_access_key=e.get("S3_ACCESS_KEY", "torghut"),
            s3_secret_key=e.get("S3_SECRET_KEY", "torghut-secret"),
            pg_port=int(e.get("PG_TEST_PORT", "55432")),
            extra_env=dict(env) if env is not None else {},
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pg_admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/postgres"

    def env(self) -> dict[str, str]:
        """Environment for the scripts: the caller's env plus this config's values."""
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(
            INFRA_RUN=str(self.run_dir),
            KAFKA_PORT=str(self.kafka_port),
            KAFKA_CONTROLLER_PORT=str(self.kafka_controller_port),
            S3_PORT=str(self.s3_port),
            S3_ACCESS_KEY=self.s3_access_key,
            S3_SECRET_KEY=self.s3_secret_key,
            PG_TEST_PORT=str(self.pg_port),
        )
        env.setdefault("PYTHON", str(REPO / ".venv" / "bin" / "python"))
        env.pop("PGCLUSTER", None)
        return env


def _run(
    args: Sequence[str], cfg: InfraConfig, timeout: float, extra: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = cfg.env()
    if extra:
        env.update(extra)
    return subprocess.run(
        list(args),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def log_path(name: str, cfg: InfraConfig) -> Path:
    proc = _run([str(INFRA_DIR / f"{name}.sh"), "logs"], cfg, timeout=30)
    return Path(proc.stdout.strip())


def log_tail(name: str, cfg: InfraConfig, lines: int = 60) -> str:
    path = log_path(name, cfg)
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return f"----- last {lines} lines of {path} -----\n" + "\n".join(text[-lines:])


def is_up(name: str, cfg: InfraConfig) -> bool:
    return _run([str(INFRA_DIR / f"{name}.sh"), "status"], cfg, timeout=30).returncode == 0


def start(names: Sequence[str], cfg: InfraConfig, *, owner: str = "") -> None:
    """``services.sh up NAMES``; raises ServiceError with output and log tails on failure."""
    if not names:
        return
    extra = {"INFRA_OWNER": owner} if owner else None
    try:
        proc = _run([str(INFRA_DIR / "services.sh"), "up", *names], cfg, timeout=600, extra=extra)
    except subprocess.TimeoutExpired as exc:
        tails = "\n".join(log_tail(n, cfg) for n in names)
        raise ServiceError(
            f"starting {list(names)} timed out after {exc.timeout}s\n{tails}"
        ) from exc
    if proc.returncode != 0:
        tails = "\n".join(log_tail(n, cfg) for n in names)
        raise ServiceError(
            f"could not start {list(names)} (rc={proc.returncode})\n"
            f"{proc.stdout}\n{proc.stderr}\n{tails}"
        )


def stop(names: Sequence[str], cfg: InfraConfig) -> None:
    """``services.sh down NAMES``; raises ServiceError on failure."""
    if not names:
        return
    proc = _run([str(INFRA_DIR / "services.sh"), "down", *names], cfg, timeout=180)
    if proc.returncode != 0:
        raise ServiceError(
            f"could not stop {list(names)} (rc={proc.returncode})\n{proc.stdout}\n{proc.stderr}"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(cfg: InfraConfig) -> Iterator[None]:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.run_dir / ".lease.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _live_leases(cfg: InfraConfig) -> list[Path]:
    leases = cfg.run_dir / "leases"
    leases.mkdir(parents=True, exist_ok=True)
    live = []
    for p in leases.iterdir():
        pid = p.name.split("-", 1)[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            live.append(p)
        else:
            p.unlink(missing_ok=True)
    return live


class ServiceSession:
    """A pytest session's claim on the services (see the module docstring)."""

    def __init__(self, cfg: InfraConfig, names: Sequence[str] = SERVICES) -> None:
        self.cfg = cfg
        self.names = tuple(names)
        self.lease = cfg.run_dir / "leases" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.started: list[str] = []

    def acquire(self) -> None:
        with _locked(self.cfg):
            _live_leases(self.cfg)
            self.lease.write_text("pytest\n")
            down = [n for n in self.names if not is_up(n, self.cfg)]
            marks = self.cfg.run_dir / "autostarted"
            marks.mkdir(exist_ok=True)
            try:
                start(down, self.cfg, owner="pytest")
            except BaseException:
                self.lease.unlink(missing_ok=True)
                raise
            for n in down:
                (marks / n).write_text(f"{os.getpid()}\n")
            self.started = down

    def release(self) -> list[str]:
        """Drop the lease; if it was the last one, stop autostarted services. Returns them."""
        with _locked(self.cfg):
            self.lease.unlink(missing_ok=True)
            if _live_leases(self.cfg):
                return []
            marks = self.cfg.run_dir / "autostarted"
            names = [n for n in self.names if (marks / n).exists()]
            stop(names, self.cfg)
            for n in names:
                (marks / n).unlink(missing_ok=True)
            return names


@dataclass(frozen=True)
class S3Settings:
    """How to reach the test S3 server (SeaweedFS); plain S3, path-style addressing."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @classmethod
    def from_config(cls, cfg: InfraConfig) -> S3Settings:
        return cls(cfg.s3_endpoint, cfg.s3_access_key, cfg.s3_secret_key)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int, *, plus_10000: bool = False) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (and port+10000 free too if ``plus_10000``).

    Chosen below Linux's ephemeral range (32768+) so that no outgoing connection can grab one
    between this check and the service binding it.
    """
    rng = random.Random()
    out: list[int] = []
    while len(out) < count:
        p = rng.randrange(20000, 22700) if plus_10000 else rng.randrange(23000, 32700)
        taken = set(out) | {q + 10000 for q in out} | DEFAULT_PORTS
        if p in taken or (plus_10000 and p + 10000 in taken):
            continue
        if _bindable(p) and (not plus_10000 or _bindable(p + 10000)):
            out.append(p)
    return out


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this machine (from /proc/net/tcp{,6})."""
    ports: set[int] = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
