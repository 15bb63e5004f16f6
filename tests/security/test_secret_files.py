"""Secrets read from files as Kubernetes mounts them (``X_FILE`` or ``TORGHUT_SECRETS_DIR``),
for every section, with the environment's precedence, clear errors that never show a value,
and redaction of what a file gave (``secrets_in_environment``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from torghut.config import (
    SECRETS_DIR_VAR,
    AlpacaSettings,
    KafkaSettings,
    SettingsError,
    load_section,
    load_settings,
    secrets_in_environment,
)


def test_a_variable_file_gives_the_value_without_its_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text("s3cr3t-from-file\n")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    kafka = load_section(KafkaSettings)
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == "s3cr3t-from-file"
    assert "s3cr3t-from-file" in secrets_in_environment()


def test_a_mounted_secret_directory_serves_every_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mount = tmp_path / "secrets"
    mount.mkdir()
    (mount / "ALPACA_KEY_ID").write_text("AKID-mounted")
    (mount / "ALPACA_SECRET_KEY").write_text("alpaca-mounted-secret")
    (mount / "TRADING_DB_URL").write_text("postgresql+psycopg://app:pg-mounted-pw@db:5432/t\n")
    (mount / "api_control_token").write_text("token-mounted")  # lower-case keys work too
    monkeypatch.setenv(SECRETS_DIR_VAR, str(mount))
    settings = load_settings()
    assert settings.alpaca.key_id.get_secret_value() == "AKID-mounted"
    assert settings.alpaca.secret_key.get_secret_value() == "alpaca-mounted-secret"
    assert settings.store.url == "postgresql+psycopg://app:pg-mounted-pw@db:5432/t"
    assert settings.api.control_token is not None
    assert settings.api.control_token.get_secret_value() == "token-mounted"
    masked = secrets_in_environment()
    for value in ("AKID-mounted", "alpaca-mounted-secret", "pg-mounted-pw", "token-mounted"):
        assert value in masked


def test_the_environment_wins_over_the_secret_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ALPACA_KEY_ID").write_text("from-dir")
    monkeypatch.setenv(SECRETS_DIR_VAR, str(tmp_path))
    monkeypatch.setenv("ALPACA_KEY_ID", "from-env")
    assert load_section(AlpacaSettings).key_id.get_secret_value() == "from-env"


def test_a_file_variable_wins_over_the_secret_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ALPACA_KEY_ID").write_text("from-dir")
    (tmp_path / "key-id").write_text("from-file-var")
    monkeypatch.setenv(SECRETS_DIR_VAR, str(tmp_path))
    monkeypatch.setenv("ALPACA_KEY_ID_FILE", str(tmp_path / "key-id"))
    assert load_section(AlpacaSettings).key_id.get_secret_value() == "from-file-var"


def test_both_a_variable_and_its_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text("file-value")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "env-value")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    with pytest.raises(SettingsError) as exc:
        load_settings()
    text = str(exc.value)
    assert "KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set" in text
    assert "file-value" not in text
    assert "env-value" not in text


def test_an_unreadable_file_names_the_variable_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope"
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(missing))
    with pytest.raises(
        SettingsError, match=f"KAFKA_SASL_PASSWORD: cannot read the secret file {missing}"
    ):
        load_settings()
    assert secrets_in_environment() == []  # nothing was read, nothing to mask, no crash


def test_an_invalid_value_from_a_file_is_reported_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "url").write_text("mysql://root:hunter2-in-file@db/x")
    monkeypatch.setenv("TRADING_DB_URL_FILE", str(tmp_path / "url"))
    with pytest.raises(SettingsError) as exc:
        load_settings()
    text = str(exc.value)
    assert "TRADING_DB_URL=" in text
    assert "hunter2-in-file" not in text


def test_tls_file_settings_reach_librdkafka_only_for_tls_protocols(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "c.key"
    tls = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SSL",
        ssl_ca_location=ca,
        ssl_certificate_location=cert,
        ssl_key_location=key,
    ).client_config()
    assert tls["ssl.ca.location"] == str(ca)
    assert tls["ssl.certificate.location"] == str(cert)
    assert tls["ssl.key.location"] == str(key)
    assert tls["ssl.endpoint.identification.algorithm"] == "https"
    plain = KafkaSettings(bootstrap_servers="b:9092", ssl_ca_location=ca).client_config()
    assert not any(k.startswith("ssl.") for k in plain)
