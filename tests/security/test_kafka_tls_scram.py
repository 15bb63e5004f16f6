"""Kafka over TLS with a private CA and client certificates, and SASL/SCRAM, against a real
broker (``secure_kafka``): the settings connect and carry messages both ways; a wrong CA, a
missing client certificate or a wrong password fails within its deadline with a message that
says which.

The settings are read the way a pod reads them: variables, with the password and key paths as
mounted files (``KAFKA_SASL_PASSWORD_FILE``), through :func:`torghut.config.load_section`.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from dlq.consumer import DeadLetterConsumer
from dlq.store import DeadLetterQuery, DeadLetterStore
from operators.kafka_io import PRODUCER_DEFAULTS, encode_dead_letter
from tests.helpers import wait_until
from tests.security.conftest import SecureKafka
from torghut.config import KafkaSettings, load_section
from torghut.dead_letters import DeadLetter
from torghut.kafka_check import KafkaUnreachable, check_connection
from trading.adapters.store import create_engine, upgrade

DEADLINE_S = 4.0
SLACK_S = 3.0  # librdkafka's last request may run up to a second past the deadline
NOW = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)


def _tls_env(kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.ssl)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", str(kafka.pki.ca))
    monkeypatch.setenv("KAFKA_SSL_CERTIFICATE_LOCATION", str(kafka.pki.client_cert))
    monkeypatch.setenv("KAFKA_SSL_KEY_LOCATION", str(kafka.pki.client_key))


def _scram_env(
    kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, password: str
) -> None:
    secret = tmp_path / "sasl-password"
    secret.write_text(password + "\n")  # as `kubectl create secret --from-file` often has it
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.sasl_ssl)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", kafka.scram_user)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", str(kafka.pki.ca))


def _round_trip(settings: KafkaSettings, topic: str) -> None:
    """Produce one message with the settings and read it back with them."""
    value = uuid.uuid4().hex.encode()
    producer = Producer({**PRODUCER_DEFAULTS, **settings.client_config()})
    producer.produce(topic, value)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            **settings.client_config(),
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])

        def received() -> bool:
            msg = consumer.poll(0.5)
            assert msg is None or msg.error() is None, msg.error()
            return msg is not None and msg.value() == value

        wait_until(received, timeout=30, message=f"{value!r} not read back from {topic}")
    finally:
        consumer.close()


def _fails_within_deadline(settings: KafkaSettings) -> str:
    t0 = time.monotonic()
    with pytest.raises(KafkaUnreachable) as exc:
        check_connection(settings.client_config(), DEADLINE_S)
    assert time.monotonic() - t0 < DEADLINE_S + SLACK_S
    return str(exc.value)


def test_tls_with_client_certificate_carries_messages(
    secure_kafka: SecureKafka, secure_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tls_env(secure_kafka, monkeypatch)
    settings = load_section(KafkaSettings)
    check_connection(settings.client_config(), 30)
    _round_trip(settings, secure_topic)


def test_tls_with_a_wrong_ca_fails_clearly(
    secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tls_env(secure_kafka, monkeypatch)
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", str(secure_kafka.other_pki.ca))
    message = _fails_within_deadline(load_section(KafkaSettings))
    assert f"cannot reach Kafka at {secure_kafka.ssl} over SSL" in message
    assert "certificate verify failed" in message


def test_tls_without_a_client_certificate_is_refused(
    secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tls_env(secure_kafka, monkeypatch)
    monkeypatch.delenv("KAFKA_SSL_CERTIFICATE_LOCATION")
    monkeypatch.delenv("KAFKA_SSL_KEY_LOCATION")
    message = _fails_within_deadline(load_section(KafkaSettings))
    assert f"cannot reach Kafka at {secure_kafka.ssl} over SSL" in message
    assert "bad certificate" in message or "certificate required" in message, message


def test_scram_with_the_password_from_a_mounted_file_carries_messages(
    secure_kafka: SecureKafka,
    secure_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _scram_env(secure_kafka, monkeypatch, tmp_path, secure_kafka.scram_password)
    settings = load_section(KafkaSettings)
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == secure_kafka.scram_password
    check_connection(settings.client_config(), 30)
    _round_trip(settings, secure_topic)


def test_scram_with_a_wrong_password_fails_clearly(
    secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _scram_env(secure_kafka, monkeypatch, tmp_path, "not-the-password")
    message = _fails_within_deadline(load_section(KafkaSettings))
    assert f"over SASL_SSL within {DEADLINE_S:g} s" in message
    assert "Authentication failed" in message, message
    assert "not-the-password" not in message


def test_scram_over_tls_with_a_wrong_ca_fails_clearly(
    secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _scram_env(secure_kafka, monkeypatch, tmp_path, secure_kafka.scram_password)
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", str(secure_kafka.other_pki.ca))
    message = _fails_within_deadline(load_section(KafkaSettings))
    assert "certificate verify failed" in message


def test_the_dead_letter_consumer_reads_over_scram_and_tls(
    secure_kafka: SecureKafka,
    secure_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
) -> None:
    """A part built from the settings (the dead-letter consumer) inherits TLS + SCRAM."""
    _scram_env(secure_kafka, monkeypatch, tmp_path, secure_kafka.scram_password)
    settings = load_section(KafkaSettings)
    raw = b"\x00\x01 secured"
    key, value = encode_dead_letter(DeadLetter("alpaca_decode", "invalid_message", "e", raw, NOW))
    producer = Producer({**PRODUCER_DEFAULTS, **settings.client_config()})
    producer.produce(secure_topic, value, key)
    assert producer.flush(30) == 0
    upgrade(pg_url)
    engine = create_engine(pg_url)
    try:
        store = DeadLetterStore(engine)
        consumer = DeadLetterConsumer(
            settings.client_config(), [secure_topic], store, group_id="dlq-sec", poll_timeout_s=0.2
        )
        try:
            wait_until(
                lambda: consumer.poll_once() or store.find(DeadLetterQuery()),
                timeout=30,
                message="dead letter not stored over SASL_SSL",
            )
        finally:
            consumer.close()
        [stored] = store.find(DeadLetterQuery())
        assert (stored.topic, stored.raw, stored.reason) == (secure_topic, raw, "invalid_message")
    finally:
        engine.dispose()
