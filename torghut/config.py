"""Settings for every Torghut process, read once from environment variables.

Why one module: configuration is read at the edge (process start) and passed inward, so
nothing deep in the code reads the environment, and an invalid value fails at start with a
message naming the variable and the accepted values (see :class:`SettingsError`).

With nothing set, every section falls back to the embedded defaults of ``shared/design.md``:
a ``chdb://`` data directory for ClickHouse, a SQLite file for the trading store, a local
recovery directory, no Kafka broker (stages joined in one process) and the built-in Alpaca
simulators. Variable names follow the product design where it names them (``TRADING_ENABLED``,
``TRADING_MODE``, ``TRADING_SIGNAL_SCHEMA``, ``CH_DATABASE``, ...).

Secrets as Kubernetes mounts them: every variable ``X`` can also be given as a file, either
``X_FILE=/path`` (the path of one mounted key) or a file named ``X`` in the directory
``TORGHUT_SECRETS_DIR`` (a whole Secret mounted as a volume). The environment wins over
``X_FILE``, which wins over the directory; ``X`` and ``X_FILE`` together are an error (which one
was meant is a guess). Trailing newlines of a file are dropped (``echo`` and most editors add
one); an unreadable file is an error naming the variable and the path, never its content.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as _SourceError

from torghut.redact import mask_dsn, url_passwords

__all__ = [
    "AlpacaSettings",
    "ApiSettings",
    "ClickHouseSettings",
    "DeadLetterSettings",
    "KafkaSettings",
    "LlmSettings",
    "MetricsSettings",
    "RecoverySettings",
    "RiskSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "TaSettings",
    "TracingSettings",
    "TradingSettings",
    "load_section",
    "load_settings",
    "secrets_in_environment",
]


def _data_dir() -> Path:
    return Path(os.environ.get("TORGHUT_DATA_DIR", "var/data")).resolve()


def _csv(v: object) -> object:
    """Comma-separated lists in the environment (``AAPL,MSFT``) become tuples of stripped items."""
    if isinstance(v, str):
        return tuple(s.strip() for s in v.split(",") if s.strip())
    return v


CsvList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_csv)]


class SettingsError(ValueError):
    """An environment variable holds a value Torghut cannot use.

    The message names each offending variable, the value's problem and what is accepted,
    so an operator can fix the deployment without reading code.
    """


SECRETS_DIR_VAR = "TORGHUT_SECRETS_DIR"
"""Directory of mounted secret files, one per variable, named like the variable."""


def _file_value(var: str, env: Mapping[str, str]) -> str | None:
    """The value of ``var`` given as a file (``var_FILE`` or the secrets dir), or None.

    Raises :class:`_SourceError` naming the variable and path when the file cannot be read.
    """
    path = env.get(f"{var}_FILE")
    if path:
        if var in env:
            raise _SourceError(f"{var} and {var}_FILE are both set: set only one of them")
    else:
        secrets_dir = env.get(SECRETS_DIR_VAR)
        if not secrets_dir:
            return None
        candidates = (Path(secrets_dir) / var, Path(secrets_dir) / var.lower())
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            return None
        path = str(found)
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise _SourceError(
            f"{var}: cannot read the secret file {path}: {type(exc).__name__}"
        ) from None


class _SecretFiles(PydanticBaseSettingsSource):
    """Field values read from files (see the module docstring), below the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        prefix = str(self.config.get("env_prefix", ""))
        var = f"{prefix}{field_name}".upper()
        return _file_value(var, _upper_env()), var, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(info, name)
            if value is not None:
                values[name] = value
        return values


def _upper_env() -> dict[str, str]:
    return {k.upper(): v for k, v in os.environ.items()}


class _Section(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, case_sensitive=False, validate_default=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SecretFiles(settings_cls))


_S = TypeVar("_S", bound=_Section)


class KafkaSettings(_Section):
    """Kafka connection. Empty bootstrap servers = embedded mode (stages joined in-process).

    TLS (``KAFKA_SECURITY_PROTOCOL=SSL`` or ``SASL_SSL``): ``KAFKA_SSL_CA_LOCATION`` is the PEM
    of the private CA that signed the brokers' certificates (unset = the system's CAs);
    ``KAFKA_SSL_CERTIFICATE_LOCATION`` / ``KAFKA_SSL_KEY_LOCATION`` (+ ``KAFKA_SSL_KEY_PASSWORD``
    for an encrypted key) the client certificate a broker with ``ssl.client.auth=required``
    asks for. The broker's name is checked against its certificate unless
    ``KAFKA_SSL_ENDPOINT_IDENTIFICATION=none``.
    """

    model_config = SettingsConfigDict(env_prefix="KAFKA_")

    bootstrap_servers: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification: Literal["https", "none"] = "https"
    topic_trades: str = "torghut.trades.v1"
    topic_quotes: str = "torghut.quotes.v1"
    topic_bars: str = "torghut.bars.v1"
    topic_status: str = "torghut.status.v1"
    topic_ingest_dlq: str = "torghut.ingest.dlq.v1"
    topic_ta_bars: str = "torghut.ta.bars.1s.v1"
    topic_ta_signals: str = "torghut.ta.signals.v1"
    topic_ta_status: str = "torghut.ta.status.v1"
    topic_ta_dlq: str = "torghut.ta.dlq.v1"

    @property
    def embedded(self) -> bool:
        return not self.bootstrap_servers

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by producers, consumers and the admin client."""
        cfg = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            cfg["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            cfg["sasl.username"] = self.sasl_username
        if self.sasl_password:
            cfg["sasl.password"] = self.sasl_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            cfg["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification
            tls_files = (
                ("ssl.ca.location", self.ssl_ca_location),
                ("ssl.certificate.location", self.ssl_certificate_location),
                ("ssl.key.location", self.ssl_key_location),
            )
            cfg.update((key, str(path)) for key, path in tls_files if path is not None)
            if self.ssl_key_password:
                cfg["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return cfg


class ClickHouseSettings(_Section):
    """ClickHouse through clickhouse-connect: ``http(s)://user:pass@host:8123`` or ``chdb:///dir``."""

    model_config = SettingsConfigDict(env_prefix="CH_")

    dsn: str = Field(default_factory=lambda: f"chdb://{_data_dir() / 'chdb'}")
    database: str = "torghut"
    cluster: str | None = None
    insert_batch_rows: int = Field(default=5000, ge=1)
    insert_batch_seconds: float = Field(default=1.0, gt=0)

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not v.startswith(("chdb:", "http://", "https://", "clickhouse://", "clickhouses://")):
            raise ValueError(
                "must start with chdb:, http://, https://, clickhouse:// or clickhouses://"
            )
        return v

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")


class StoreSettings(_Section):
    """The trading audit store: Postgres in production, a SQLite file by default."""

    model_config = SettingsConfigDict(env_prefix="TRADING_DB_")

    url: str = Field(default_factory=lambda: f"sqlite:///{_data_dir() / 'trading.sqlite'}")
    wait_s: float = Field(default=240.0, ge=0.0)
    """How long the trading flow waits at start for a store that does not answer (a database
    restart or failover) before it gives up; within the pod's start-up probe (300 s)."""

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if not v.startswith(("postgresql+psycopg://", "sqlite:///", "sqlite://")):
            raise ValueError("must be a postgresql+psycopg:// or sqlite:/// SQLAlchemy URL")
        return v


class RecoverySettings(_Section):
    """Where dataflow recovery partitions live and where their backups go.

    ``RECOVERY_S3_BUCKET`` empty = backups stay in ``RECOVERY_BACKUP_DIR`` (embedded default).
    ``RECOVERY_S3_CA_BUNDLE``: PEM of the private CA an ``https://`` endpoint's certificate is
    signed by (unset = the system's CAs).
    """

    model_config = SettingsConfigDict(env_prefix="RECOVERY_")

    dir: Path = Field(default_factory=lambda: _data_dir() / "recovery")
    backup_dir: Path = Field(default_factory=lambda: _data_dir() / "recovery-backups")
    partitions: int = Field(default=2, ge=1)
    snapshot_interval_s: int = Field(default=5, ge=1)
    backup_interval_s: int = Field(default=60, ge=0)
    keep_sets: int = Field(default=5, ge=1)
    cluster_start_timeout_s: float = Field(default=120.0, gt=0)
    """How long the processes of a TA cluster wait for each other at start before a process
    started alone gives up (:mod:`torghut.recovery.cluster`)."""
    s3_bucket: str = ""
    s3_prefix: str = "torghut/recovery"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_ca_bundle: Path | None = None


class AlpacaSettings(_Section):
    """Alpaca endpoints and credentials. Empty URLs = the built-in simulators."""

    model_config = SettingsConfigDict(env_prefix="ALPACA_")

    key_id: SecretStr = SecretStr("sim-key")
    secret_key: SecretStr = SecretStr("sim-secret")
    feed: Literal["iex", "sip", "delayed_sip", "test"] = "iex"
    data_ws_url: str = ""
    symbols: CsvList = ("AAPL", "MSFT", "NVDA", "SPY", "TSLA")
    paper_base_url: str = ""
    live_base_url: str = ""
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    connection_limited_backoff_s: float = Field(default=95.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    """How often the ingest publishes its ``IngestStatus``; its ``caught_up_at`` bounds how far
    the TA flow may close a wholly quiet feed's bars on the wall clock (operators/upstream.py),
    so a longer interval delays those bars' final rows by as much."""


class TaSettings(_Section):
    """Technical-analysis flow parameters."""

    model_config = SettingsConfigDict(env_prefix="TA_")

    allowed_lateness_ms: int = Field(default=2000, ge=0)
    correction_horizon_s: int = Field(default=60, ge=0)
    idle_close_ms: int = Field(default=2500, ge=0)
    quote_max_age_ms: int = Field(default=5000, ge=0)
    session_start: str = "09:30"
    session_timezone: str = "America/New_York"
    dedup_window_s: int = Field(default=300, ge=1)
    dedup_max_keys: int = Field(default=1_000_000, ge=1)
    symbol_allowlist: CsvList = ()
    """Symbols the TA flow accepts (``TA_SYMBOL_ALLOWLIST=AAPL,MSFT``); empty = any symbol."""
    exit_at_end: bool = False
    """Read the input topics to their current end, publish what is open, then stop (backfills)."""
    kafka_batch_size: int = Field(default=20_000, ge=1)
    """Most messages one Kafka poll returns. A poll returns what is there, so this only bites
    when the flow is behind: then larger batches spread each batch's fixed cost over more
    events, which is what lets the flow catch up (``bench/README.md``)."""
    kafka_prefetch_kb: int = Field(default=2048, ge=64)
    """Most kilobytes librdkafka prefetches per input partition (``queued.max.messages.kbytes``;
    a fetch in flight adds up to half as much): the bound on the flow's input buffering."""
    status_interval_s: float = Field(default=5.0, gt=0)


class RiskSettings(_Section):
    """Risk limits checked after review and before every order."""

    model_config = SettingsConfigDict(env_prefix="RISK_")

    symbol_allowlist: CsvList = ()
    max_notional_per_order: Decimal = Decimal("10000")
    max_position_per_symbol: Decimal = Decimal("25000")
    max_gross_exposure: Decimal = Decimal("100000")
    allow_shorting: bool = False
    max_orders_per_minute: int = Field(default=30, ge=0)
    symbol_cooldown_s: int = Field(default=60, ge=0)
    daily_loss_limit: Decimal = Decimal("2000")
    max_drawdown_pct: Decimal = Decimal("10")
    max_signal_staleness_s: float | None = Field(default=None, gt=0)
    """Oldest signal an order may act on; unset = derived from the strategy's bar
    (:func:`trading.core.risk.default_signal_staleness`: 7 s for 1-second bars on the defaults)."""
    max_pipeline_lag_s: float | None = Field(default=None, gt=0)
    """Halt trading while now − event time of the signal being processed exceeds this; clears by
    itself when the lag recovers. Unset = the signal staleness bound."""
    require_market_open: bool = True
    halt_on_position_drift: bool = True
    reconcile_max_age_s: float = Field(default=60.0, gt=0)
    """Halt trading (fail closed) when no reconciliation pass has completed for this long."""


class LlmSettings(_Section):
    """Optional advisory LLM review (OpenAI-compatible chat completions). Off by default."""

    model_config = SettingsConfigDict(env_prefix="LLM_")

    enabled: bool = False
    base_url: str = ""
    model: str = ""
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    """Deadline of the whole call (connect + every byte of the answer), not of each read."""
    min_confidence: float = Field(default=0.6, ge=0, le=1)
    shadow: bool = True
    fallback: Literal["pass", "veto"] = "veto"
    min_qty_ratio: float = Field(default=0.25, ge=0, le=1)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=60.0, gt=0)
    max_response_bytes: int = Field(default=1_048_576, ge=1024)
    """A larger answer is an error (``too_large``), found without reading it all."""
    max_concurrency: int = Field(default=2, ge=1)
    """Reviews in flight at once, on their own threads, off the dataflow worker."""
    max_pending: int = Field(default=8, ge=1)
    """Reviews queued or in flight; a decision beyond that takes the fallback unreviewed."""


class ApiSettings(_Section):
    """The HTTP API and dashboard (``python -m api``): address, TA cache, accepted windows."""

    model_config = SettingsConfigDict(env_prefix="API_")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    ta_cache_ttl_ms: int = Field(default=500, ge=0)
    """TA query results are reused this long (0 = no cache); the p95 < 200 ms SLO relies on it."""
    ta_windows: CsvList = ("PT1S", "PT1M")
    """Window sizes the TA endpoints accept; anything else is a 400."""
    max_rows: int = Field(default=20_000, ge=1)
    """Upper bound of ``limit`` on list endpoints (bars, signals, decisions, executions)."""
    alpaca_check_timeout_s: float = Field(default=2.0, gt=0)
    control_token: SecretStr | None = None
    """Bearer token of the control endpoints (``POST /trading/...``); unset = they answer 403."""
    cors_origins: CsvList = ()
    """Origins allowed to call the API from a browser page served elsewhere (CORS); none by
    default: the dashboard is served by the API itself and needs none."""


class MetricsSettings(_Section):
    """Where a dataflow process serves Prometheus ``/metrics`` (the API serves it on its port).

    ``METRICS_PORT`` set = the process serves Bytewax's series and every Torghut metric on
    ``0.0.0.0:METRICS_PORT`` (:mod:`torghut.observability.metrics`); unset = no endpoint (the
    local default: several processes on one host would otherwise fight for one port).
    """

    model_config = SettingsConfigDict(env_prefix="METRICS_")

    port: int | None = Field(default=None, ge=1, le=65535)
    graph_dir: Path = Field(default_factory=_data_dir)
    """Where Bytewax writes ``dataflow.json``, the flow's graph (also served at ``/dataflow``)."""


class TracingSettings(_Section):
    """OpenTelemetry spans of Kafka produce and consume (:mod:`torghut.observability.tracing`).

    Off by default (``none``): no span, no header, one check per batch.
    """

    model_config = SettingsConfigDict(env_prefix="TRACING_")

    exporter: Literal["none", "otlp", "console"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """OTLP over HTTP (protobuf) traces endpoint of a collector."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of traces started here that are recorded; a consumer follows its producer's choice."""


class TradingSettings(_Section):
    """The trading loop's switches. Paper by default; live needs every gate set explicitly."""

    model_config = SettingsConfigDict(env_prefix="TRADING_")

    enabled: bool = False
    mode: Literal["paper", "live"] = "paper"
    live_enabled: bool = False
    kill_switch: bool = False
    """Engage the persisted kill switch at start (audited, origin ``startup``); release it at run
    time through the API or ``python -m trading.controls``."""
    signal_schema: Literal["auto", "envelope", "flat"] = "auto"
    signal_table: str = "ta_signals"
    signal_window_size: str = "PT1S"
    poll_interval_s: float = Field(default=0.5, gt=0)
    """How often the trading loop reads new final signal rows (and refreshes its controls).
    The decision lag after a row is queryable is at most one interval plus the read and the
    decision (the design's SLI: decision lag < 2 × interval); 0.5 s keeps it within the
    1 s target; ``poll_probe_s`` keeps it far below that, at a few small reads a second."""
    poll_probe_s: float = Field(default=0.05, ge=0)
    """Around the time the next signal window's final rows are expected (one window after the
    last ones came), poll this often until they come, so a row waits about this long once
    queryable instead of up to ``poll_interval_s`` (``operators/trading_source.py``); a few
    more small reads a window. 0: poll every ``poll_interval_s`` only."""
    strategies: CsvList = ("macd_rsi", "bollinger_reversion")
    order_qty: Decimal = Decimal("1")
    fractional_symbols: CsvList = ()
    """Symbols this account may trade in fractions (increment 10⁻⁹); every other symbol is
    traded in whole shares (see :mod:`trading.core.quantity`)."""
    strategy_params: dict[str, dict[str, str | int | float | bool]] = Field(default_factory=dict)
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    signal_settle_s: float | None = Field(default=None, ge=0)
    """Read only final signals this much older than the newest final one in the table (rows
    inserted behind newer ones); unset = 0: the TA sink inserts each second's final rows
    together (``trading/signals.py``)."""
    signal_batch_size: int = Field(default=500, ge=1)
    exit_at_end: bool = False
    """Read every settled and unsettled signal to the current end, reconcile, then stop."""
    dead_letter_path: Path = Field(
        default_factory=lambda: _data_dir() / "trading-signal-dead-letters.jsonl"
    )
    """JSON lines of signal rows the trading loop could not use, and of corrections it skipped."""
    stop_grace_s: float = Field(default=3.0, gt=0)
    """After SIGINT/SIGTERM (no order is sent from then on), the process ends by itself within
    this long even if a remote call is still in flight."""


class DeadLetterSettings(_Section):
    """The dead-letter store (``python -m torghut.dlq_store``): consumer of the ``*.dlq.v1`` topics.

    ``DLQ_DB_URL`` unset = the trading store's database (``TRADING_DB_URL``), whose migrations
    create the dead-letter tables.
    """

    model_config = SettingsConfigDict(env_prefix="DLQ_")

    db_url: str | None = None
    group_id: str = "torghut-dead-letters"
    batch_size: int = Field(default=500, ge=1)
    poll_timeout_s: float = Field(default=1.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    """How long start-up waits for the broker before failing with what went wrong."""

    @field_validator("db_url")
    @classmethod
    def _known_driver(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql+psycopg://", "sqlite:///", "sqlite://")):
            raise ValueError("must be a postgresql+psycopg:// or sqlite:/// SQLAlchemy URL")
        return v


class Settings:
    """All sections, built once per process by :func:`load_settings`."""

    __slots__ = (
        "alpaca",
        "api",
        "clickhouse",
        "dead_letters",
        "kafka",
        "llm",
        "metrics",
        "recovery",
        "risk",
        "store",
        "ta",
        "tracing",
        "trading",
    )

    def __init__(
        self,
        *,
        kafka: KafkaSettings | None = None,
        clickhouse: ClickHouseSettings | None = None,
        store: StoreSettings | None = None,
        recovery: RecoverySettings | None = None,
        alpaca: AlpacaSettings | None = None,
        ta: TaSettings | None = None,
        trading: TradingSettings | None = None,
        risk: RiskSettings | None = None,
        llm: LlmSettings | None = None,
        api: ApiSettings | None = None,
        metrics: MetricsSettings | None = None,
        tracing: TracingSettings | None = None,
        dead_letters: DeadLetterSettings | None = None,
    ) -> None:
        """Sections not given are read from the environment (their defaults when unset)."""
        self.kafka = kafka or KafkaSettings()
        self.clickhouse = clickhouse or ClickHouseSettings()
        self.store = store or StoreSettings()
        self.recovery = recovery or RecoverySettings()
        self.alpaca = alpaca or AlpacaSettings()
        self.ta = ta or TaSettings()
        self.trading = trading or TradingSettings()
        self.risk = risk or RiskSettings()
        self.llm = llm or LlmSettings()
        self.api = api or ApiSettings()
        self.metrics = metrics or MetricsSettings()
        self.tracing = tracing or TracingSettings()
        self.dead_letters = dead_letters or DeadLetterSettings()


_SECRET_HINT = re.compile(r"KEY|SECRET|PASSWORD|TOKEN")

_SECTIONS: dict[str, type[_Section]] = {
    "kafka": KafkaSettings,
    "clickhouse": ClickHouseSettings,
    "store": StoreSettings,
    "recovery": RecoverySettings,
    "alpaca": AlpacaSettings,
    "ta": TaSettings,
    "trading": TradingSettings,
    "risk": RiskSettings,
    "llm": LlmSettings,
    "api": ApiSettings,
    "metrics": MetricsSettings,
    "tracing": TracingSettings,
    "dead_letters": DeadLetterSettings,
}


def load_settings() -> Settings:
    """Read every section from the environment; a bad value raises :class:`SettingsError`."""
    built: dict[str, _Section] = {}
    problems: list[str] = []
    for name, cls in _SECTIONS.items():
        section = _build(cls, problems)
        if section is not None:
            built[name] = section
    if problems:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    return Settings(**built)  # type: ignore[arg-type]


def load_section(cls: type[_S]) -> _S:
    """One section from the environment, for a command that needs no other; errors as above."""
    problems: list[str] = []
    section = _build(cls, problems)
    if section is None:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    return section


def _build(cls: type[_S], problems: list[str]) -> _S | None:
    """The section, or None with its problems appended (values shown with DSNs masked)."""
    try:
        return cls()
    except _SourceError as exc:
        problems.append(mask_dsn(str(exc)))
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            var = f"{prefix}{field}".upper()
            shown = (
                "<hidden>"
                if _SECRET_HINT.search(var)
                else repr(mask_dsn(_raw_value(var, _upper_env()) or "<unset>"))
            )
            problems.append(f"{var}={shown}: {err['msg']}")
    return None


_UNDECLARED_SECRETS = ("API_CONTROL_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""Credentials read from the environment outside these sections: the API's control token and
the variables boto3 falls back to when no S3 keys are configured."""


def secrets_in_environment() -> list[str]:
    """The credential values the environment gives the settings, for log redaction at start.

    Read from the variables, not from built sections, so it also works when a value is invalid
    (the settings error must not be the line that leaks it): every ``SecretStr`` field, the
    password inside every URL-valued variable of a section (``TRADING_DB_URL``, ``CH_DSN``,
    endpoint URLs) and :data:`_UNDECLARED_SECRETS`.
    """
    env = _upper_env()
    values: list[str] = [_raw_value(var, env) for var in _UNDECLARED_SECRETS]
    for cls in _SECTIONS.values():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field, info in cls.model_fields.items():
            value = _raw_value(f"{prefix}{field}".upper(), env)
            if "SecretStr" in str(info.annotation):
                values.append(value)
            values.extend(url_passwords(value))
    return [v for v in values if v]


def _raw_value(var: str, env: Mapping[str, str]) -> str:
    """What the settings will read for ``var``: the environment, else its secret file."""
    if var in env:
        return env[var]
    try:
        return _file_value(var, env) or ""
    except _SourceError:
        return ""  # the settings report it; nothing was read, so nothing can leak
