"""No planted secret in any output: every command of the project, at DEBUG, through failing
connections of each kind.

Distinctive values are planted in every credential setting (Alpaca key id and secret, LLM API
key, Kafka SASL password, S3 secret key, the API control token, Postgres and ClickHouse
passwords inside their URLs). Then, all at once, as subprocesses with ``LOG_LEVEL=DEBUG``:

* the demo (its Alpaca simulators accept the planted keys, so the websocket library logs the
  real auth frame; the store is the Postgres fixture with a planted password in its URL; LLM
  review on, at a closed port), and the demo with invalid DSNs (the settings error);
* the API with ClickHouse and Postgres at closed ports and the broker simulator refusing the
  planted Alpaca keys (the health probe gets a 401);
* the trading flow reading seeded signals, paper trading on a broker simulator that accepts the
  planted keys, with the LLM at a closed port; and the trading flow against a broker simulator
  that refuses them (reconciliation at start gets a 401);
* the ingest flow against the market-data simulator with wrong keys, Kafka SASL at a closed port;
* the CLIs: both simulators, ClickHouse migrations (HTTP DSN at a closed port), Kafka topics
  (SASL, closed port), recovery backups (the real SeaweedFS with a wrong secret, and a closed
  port), topic schemas, Alembic (Postgres at a closed port).

Every stdout and stderr, every file under each data dir and every HTTP body fetched from the
two APIs (status, health, probes, metrics, error responses) is scanned for any run of
:data:`FRAGMENT` characters of any planted value — libraries shorten what they log, so a leak
can be a secret's tail. :func:`test_the_scan_sees_an_unscrubbed_leak` proves the scan finds the
planted values when redaction is bypassed.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from tests.helpers import wait_until
from tests.infra.services import S3Settings, free_ports
from torghut.config import SettingsError, load_settings
from torghut.redact import mask_dsn, remember_secrets, scrub, scrub_record

REPO = Path(__file__).resolve().parents[2]
ALEMBIC_INI = "infra/postgres/alembic.ini"
FRAGMENT = 8
"""A leak is any run of this many characters of a planted value (``torghut.redact`` masks runs
of the same length)."""

ALPACA_KEY_ID = "PLANTED-ALPACA-KEYID-1c9e4b27"
ALPACA_SECRET = "PLANTED-ALPACA-SECRET-7f3a90c1"
PG_PASSWORD = "PLANTED-PG-PASS-a41c07d3"
CH_PASSWORD = "PLANTED-CH-PASS-9d2b5e66"
PLANTED_ENV = {
    "ALPACA_KEY_ID": ALPACA_KEY_ID,
    "ALPACA_SECRET_KEY": ALPACA_SECRET,
    "LLM_API_KEY": "PLANTED-LLM-KEY-52d1e8f4",
    "KAFKA_SASL_PASSWORD": "PLANTED-KAFKA-PASS-88b0c2aa",
    "RECOVERY_S3_SECRET_KEY": "PLANTED-S3-SECRET-3e47f1b9",
    "API_CONTROL_TOKEN": "PLANTED-API-TOKEN-6e15aa02",
}
PLANTED = (*PLANTED_ENV.values(), PG_PASSWORD, CH_PASSWORD)

_OWN_VARS = re.compile(
    r"^(KAFKA|CH|TRADING|ALPACA|LLM|RECOVERY|API|RISK|TA|TORGHUT|AWS|DEMO)_|^LOG_LEVEL$"
)
_HTTP_PATHS = (
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/trading/status",
    "/trading/health",
    "/trading/decisions?limit=5",
    "/trading/executions?limit=5",
    "/trading/decisions?limit=not-a-number",
    "/api/torghut/ta/latest?symbol=AAPL",
    "/api/torghut/ta/bars?symbol=AAPL&window=PT9S",
    "/api/torghut/ta/symbols",
    "/no/such/path",
)

_SEED = """
import sys
from datetime import datetime
from torghut.clickhouse import connect
from tests.trading.flow_fixtures import ch_settings, crossing_signals, insert_signals
from tests.trading.flow_fixtures import prepare_signals
settings = ch_settings(sys.argv[1], "torghut")
client = connect(settings)
prepare_signals(client, settings)
insert_signals(client, crossing_signals(datetime.fromisoformat(sys.argv[2]), 6))
"""


# --------------------------------------------------------------------------- the scan


def leaks(text: str) -> list[str]:
    """Each planted value of which some run of :data:`FRAGMENT` characters is in ``text``: the
    first such run and its surroundings."""
    found = []
    for secret in PLANTED:
        for i in range(len(secret) - FRAGMENT + 1):
            run = secret[i : i + FRAGMENT]
            at = text.find(run)
            if at != -1:
                found.append(f"{run!r} of {secret}: …{text[max(0, at - 80) : at + 80]!r}…")
                break
    return found


def test_the_scan_sees_an_unscrubbed_leak() -> None:
    """The scan finds what a library logs when redaction is bypassed, whole or shortened, and
    nothing once the record is scrubbed; DSNs print masked, settings errors too."""
    remember_secrets(PLANTED)
    frame = f'{{"action": "authenticate", "data": {{"key_id": "{ALPACA_KEY_ID}", "secret_key": '
    frame += f'"{ALPACA_SECRET}"}}}}'
    shortened = f"> TEXT '{frame[:40]}...{frame[-24:]}' [{len(frame)} bytes]"
    for message, args in (("> TEXT %r", (frame,)), (shortened, None)):
        record = logging.LogRecord("websockets.client", logging.DEBUG, "", 0, message, args, None)
        assert leaks(record.getMessage()), "the scan misses an unscrubbed frame"
        scrub_record(record)
        assert leaks(record.getMessage()) == []
    try:
        raise ConnectionError(f"cannot reach postgresql+psycopg://torghut:{PG_PASSWORD}@db/x")
    except ConnectionError:
        record = logging.LogRecord("sqlalchemy", logging.ERROR, "", 0, "x", None, sys.exc_info())
    assert leaks(logging.Formatter().format(record))
    scrub_record(record)
    assert leaks(logging.Formatter().format(record)) == []
    assert leaks(f"ALPACA-SECRET-7f3a90c1 {ALPACA_SECRET[:8]}") != []
    assert mask_dsn(f"http://default:{CH_PASSWORD}@ch:8123/db") == "http://default:***@ch:8123/db"
    assert mask_dsn("chdb:///var/data/chdb") == "chdb:///var/data/chdb"
    assert scrub(f"host=db password={PG_PASSWORD} user=x") == "host=db password=*** user=x"


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql+psycopg://torghut:pw@db:5432/t", "postgresql+psycopg://torghut:***@db:5432/t"),
        (
            "postgresql+psycopg://u:p%40ss/w@db/t?sslmode=require",
            "postgresql+psycopg://u:***@db/t?sslmode=require",
        ),
        ("https://default:pw@ch.example:8443/?db=x", "https://default:***@ch.example:8443/?db=x"),
        ("SASL_SSL://user:pw@broker:9093,other:9093", "SASL_SSL://user:***@broker:9093,other:9093"),
        ("http://ch:8123", "http://ch:8123"),
        ("http://user@ch:8123", "http://user@ch:8123"),
        ("chdb:///var/data/chdb", "chdb:///var/data/chdb"),
        ("sqlite:////var/data/trading.sqlite", "sqlite:////var/data/trading.sqlite"),
        ("not a url: x://a:b@c and y://d:e@f", "not a url: x://a:***@c and y://d:***@f"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_scrub_masks_secret_values_runs_of_them_and_secret_pairs() -> None:
    remember_secrets(["sk-0123456789abcdef"])
    assert scrub("key sk-0123456789abcdef end") == "key *** end"
    assert scrub("tail ...456789abcdef' [119 bytes]") == "tail ...***' [119 bytes]"
    assert scrub("short 4567 stays") == "short 4567 stays"
    assert scrub("sasl.password: hunter22, X-Api-Key: k1") == "sasl.password: ***, X-Api-Key: ***"
    assert scrub("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert scrub("max_tokens=10 tokens_in=5") == "max_tokens=10 tokens_in=5"


@given(
    st.lists(
        st.one_of(
            st.text(alphabet="PLANTED-ALPCSKYI0123456789abcdef.' ", max_size=12),
            st.builds(
                lambda secret, i, j: secret[min(i, j) : max(i, j)],
                st.sampled_from(PLANTED),
                st.integers(0, 31),
                st.integers(0, 31),
            ),
        ),
        max_size=8,
    )
)
def test_no_run_of_a_secret_survives_scrub(pieces: list[str]) -> None:
    """Whatever a library cuts out of a secret and glues around it, no :data:`FRAGMENT`-long
    run of it is left (the property the process scan relies on)."""
    remember_secrets(PLANTED)
    assert leaks(scrub("".join(pieces))) == []


def test_settings_error_masks_the_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_DB_URL", f"mysql://torghut:{PG_PASSWORD}@db:3306/torghut")
    monkeypatch.setenv("CH_DSN", f"ftp://default:{CH_PASSWORD}@ch:8123")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    text = str(raised.value)
    assert "TRADING_DB_URL='mysql://torghut:***@db:3306/torghut'" in text
    assert "CH_DSN='ftp://default:***@ch:8123'" in text
    assert leaks(text) == []


# --------------------------------------------------------------------------- the processes


@dataclass
class Run:
    """One command as a subprocess with its own data dir; output goes to files there."""

    name: str
    args: list[str]
    env: dict[str, str]
    root: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / self.name / "data"

    def start(self) -> Run:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = (self.root / self.name / "stdout").open("wb")
        err = (self.root / self.name / "stderr").open("wb")
        with out, err:
            self.proc = subprocess.Popen(
                self.args,
                cwd=REPO,
                env={**self.env, "TORGHUT_DATA_DIR": str(self.data_dir)},
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self

    def stdout(self) -> str:
        return (self.root / self.name / "stdout").read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + (self.root / self.name / "stderr").read_text(errors="replace")

    def first_line(self, timeout: float = 30) -> str:
        """The first stdout line (the simulators print their URLs there)."""
        return wait_until(
            lambda: self.stdout().partition("\n")[0] if "\n" in self.stdout() else "",
            timeout,
            message=lambda: f"{self.name} printed nothing: {self.output()[-2000:]}",
        )

    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def wait(self, timeout: float = 40) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running: {self.output()[-2000:]}") from None

    def interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def reap(self, grace: float) -> None:
        """Wait ``grace`` seconds for the end (after :meth:`interrupt`), then SIGKILL."""
        if self.proc is None:
            return
        try:
            self.proc.wait(max(grace, 0.1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def files(self) -> Iterator[tuple[str, str]]:
        """Every file of this run (its output and its data dir) as text."""
        for path in sorted((self.root / self.name).rglob("*")):
            if path.is_file():
                yield str(path), path.read_bytes().decode("utf-8", errors="replace")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _OWN_VARS.search(k)}
    return {**env, **PLANTED_ENV, "PYTHONPATH": str(REPO), "LOG_LEVEL": "DEBUG"}


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _fetch_all(base_url: str) -> list[str]:
    """Every probe, read and error body of one API (the control endpoint with a wrong token)."""
    bodies = []
    with httpx.Client(base_url=base_url, timeout=15) as client:
        for path in _HTTP_PATHS:
            r = client.get(path)
            bodies.append(f"GET {path} {r.status_code} {dict(r.headers)}\n{r.text}")
        r = client.post(
            "/trading/kill-switch",
            headers={"Authorization": "Bearer wrong-token"},
            json={"engaged": True, "reason": "secret scan"},
        )
        bodies.append(f"POST /trading/kill-switch {r.status_code} {dict(r.headers)}\n{r.text}")
    return bodies


def test_no_planted_secret_in_any_output(
    tmp_path: Path, pg_url: str, s3_settings: S3Settings
) -> None:
    base = _base_env()
    closed = free_ports(1)[0]
    api_port, demo_port = free_ports(2)
    pg_closed = f"postgresql+psycopg://torghut:{PG_PASSWORD}@127.0.0.1:{closed}/torghut"
    ch_closed = f"http://default:{CH_PASSWORD}@127.0.0.1:{closed}"
    kafka_closed = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "torghut",
    }
    llm_closed = {
        "LLM_ENABLED": "true",
        "LLM_BASE_URL": f"http://127.0.0.1:{closed}/v1",
        "LLM_MODEL": "scan-model",
        "LLM_TIMEOUT_S": "0.5",
    }
    trading = {
        "ALPACA_SYMBOLS": "AAPL,MSFT",
        "TRADING_ENABLED": "true",
        "TRADING_STRATEGIES": "macd_rsi",
        "TRADING_EXIT_AT_END": "true",
        "TRADING_SIGNAL_SETTLE_S": "0",
        "TRADING_POLL_INTERVAL_S": "0.05",
        "TRADING_RECONCILE_INTERVAL_S": "0.5",
        "RISK_SYMBOL_COOLDOWN_S": "0",
        "RISK_MAX_SIGNAL_STALENESS_S": "3600",
    }
    s3 = {
        "RECOVERY_S3_BUCKET": "torghut-secret-scan",
        "RECOVERY_S3_ACCESS_KEY": s3_settings.access_key,
        "RECOVERY_S3_REGION": s3_settings.region,
    }

    def run(name: str, args: list[str], **env: str) -> Run:
        return Run(name, args, {**base, **env}, tmp_path).start()

    accepting_keys = ("--key-id", ALPACA_KEY_ID, "--secret-key", ALPACA_SECRET)
    seed_dir = tmp_path / "trading-paper" / "data" / "chdb"
    seed_start = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    runs = [
        broker_ok := run(
            "broker-ok",
            _py("-m", "torghut.sim.broker", *accepting_keys),
        ),
        broker_other := run("broker-other-keys", _py("-m", "torghut.sim.broker")),
        market := run("market", _py("-m", "torghut.sim.market", "--rate", "50")),
        seed := run("seed", _py("-c", _SEED, str(seed_dir), seed_start.isoformat())),
        demo := run(
            "demo",
            _py("-m", "dataflows.demo", "--seconds", "10", "--port", str(demo_port)),
            TRADING_DB_URL=make_url(pg_url).set(password=PG_PASSWORD).render_as_string(False),
            **llm_closed,
        ),
        bad_settings := run(
            "demo-bad-settings",
            _py("-m", "dataflows.demo", "--seconds", "1"),
            TRADING_DB_URL=f"mysql://torghut:{PG_PASSWORD}@db:3306/torghut",
            CH_DSN=f"ftp://default:{CH_PASSWORD}@ch:8123",
        ),
        ch_cli := run("clickhouse-migrate", _py("-m", "torghut.clickhouse"), CH_DSN=ch_closed),
        topics := run(
            "kafka-topics", _py("-m", "torghut.kafka.topics", "--timeout", "3"), **kafka_closed
        ),
        s3_wrong := run(
            "backup-wrong-secret",
            _py("-m", "torghut.recovery", "list"),
            RECOVERY_S3_ENDPOINT_URL=s3_settings.endpoint_url,
            **s3,
        ),
        s3_closed := run(
            "backup-closed-port",
            _py("-m", "torghut.recovery", "list"),
            RECOVERY_S3_ENDPOINT_URL=f"http://127.0.0.1:{closed}",
            **s3,
        ),
        schemas := run("schemas", _py("-m", "torghut.schemas", "check")),
        alembic := run(
            "alembic",
            [str(Path(sys.executable).parent / "alembic"), "-c", ALEMBIC_INI, "upgrade", "head"],
            TRADING_DB_URL=pg_closed,
        ),
    ]
    bodies: list[str] = []
    try:
        refusing_url = _json_url(broker_other.first_line())
        runs += [
            api := run(
                "api",
                _py("-m", "api"),
                API_PORT=str(api_port),
                CH_DSN=ch_closed,
                TRADING_DB_URL=pg_closed,
                ALPACA_PAPER_BASE_URL=refusing_url,
                ALPACA_API_CHECK_TIMEOUT_S="1",
            ),
            refused := run(
                "trading-refused",
                _py("-m", "bytewax.run", "dataflows.trading:flow"),
                ALPACA_PAPER_BASE_URL=refusing_url,
                **trading,
            ),
            ingest := run(
                "ingest",
                _py("-m", "bytewax.run", "dataflows.ingest:flow"),
                ALPACA_DATA_WS_URL=_json_url(market.first_line(), "url"),
                ALPACA_SYMBOLS="AAPL,MSFT",
                **kafka_closed,
            ),
        ]
        assert seed.wait() == 0, seed.output()[-2000:]
        runs.append(
            paper := run(
                "trading-paper",
                _py("-m", "bytewax.run", "dataflows.trading:flow"),
                ALPACA_PAPER_BASE_URL=_json_url(broker_ok.first_line()),
                CH_DSN=f"chdb://{seed_dir}",
                CH_DATABASE="torghut",
                **trading,
                **llm_closed,
            )
        )
        wait_until(
            lambda: "dashboard:" in demo.stdout(),
            60,
            message=lambda: f"the demo did not serve: {demo.output()[-3000:]}",
        )
        bodies += _fetch_all(f"http://127.0.0.1:{demo_port}")
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{api_port}/healthz"),
            60,
            message=lambda: f"the API did not start: {api.output()[-3000:]}",
        )
        bodies += _fetch_all(f"http://127.0.0.1:{api_port}")
        wait_until(
            lambda: "alpaca_ws_auth_failed" in ingest.output() or ingest.exited(),
            60,
            message=lambda: f"ingest never failed auth: {ingest.output()[-3000:]}",
        )
        wait_until(
            lambda: refused.exited() or re.search(r"\b401\b", refused.output()),
            60,
            message=lambda: f"no 401 for the refused keys: {refused.output()[-3000:]}",
        )
        for r in (demo, paper, bad_settings, ch_cli, topics, s3_wrong, s3_closed, schemas, alembic):
            r.wait(60)
    finally:
        for r in runs:
            r.interrupt()
        deadline = time.monotonic() + 10
        for r in runs:
            r.reap(deadline - time.monotonic())

    # Each failing connection was really attempted and failed (otherwise the scan proves little).
    assert "Torghut demo summary" in demo.stdout(), demo.output()[-3000:]
    assert "postgresql+psycopg://postgres:***@127.0.0.1" in demo.stdout()
    assert bad_settings.returncode() == 2
    assert "TRADING_DB_URL='mysql://torghut:***@db:3306/torghut'" in bad_settings.output()
    assert "llm_review_failed" in paper.output(), paper.output()[-3000:]
    assert "alpaca_ws_auth_failed" in ingest.output(), ingest.output()[-3000:]
    assert re.search(r"\b401\b", refused.output()), refused.output()[-3000:]
    assert any(b.startswith("GET /trading/health 503") for b in bodies), bodies
    for failing in (ch_cli, topics, s3_wrong, s3_closed, alembic):
        assert failing.returncode() not in (0, None), failing.name
    assert re.search(r"SignatureDoesNotMatch|AccessDenied|403", s3_wrong.output())
    assert schemas.returncode() == 0, schemas.output()

    found = [f"{where}: {leak}" for r in runs for where, text in r.files() for leak in leaks(text)]
    found += [f"HTTP {b.partition(chr(10))[0]}: {leak}" for b in bodies for leak in leaks(b)]
    assert found == [], "\n".join(found[:20])


def _json_url(line: str, key: str = "base_url") -> str:
    match = re.search(rf'"{key}": "([^"]+)"', line)
    assert match, line
    return match.group(1)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False
