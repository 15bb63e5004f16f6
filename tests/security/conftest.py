"""A dedicated Kafka broker with a TLS listener (client certificates required) and a SASL_SSL
listener (SCRAM-SHA-512), started once per session on free ports under its own INFRA_RUN, so
the shared broker other sessions use is never reconfigured (as in
``tests/smoke/test_kafka_outage.py``). Certificates come from a private CA made for the
session (:mod:`tests.security.pki`); the SCRAM user is created through the PLAINTEXT listener.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.helpers import wait_until
from tests.infra.services import InfraConfig, free_ports, start, stop
from tests.security.pki import Pki, make_pki

SCRAM_USER = "torghut-app"
SCRAM_PASSWORD = "scram-pass-7Qx"  # a throw-away credential of the test broker


@dataclass(frozen=True)
class SecureKafka:
    """Where the dedicated broker listens and with which credentials."""

    plaintext: str
    ssl: str
    sasl_ssl: str
    pki: Pki
    other_pki: Pki
    """A second CA (and certificates) the broker does not know: the wrong-CA cases."""
    scram_user: str = SCRAM_USER
    scram_password: str = SCRAM_PASSWORD


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("other-pki"), name="unknown")


@pytest.fixture(scope="session")
def secure_kafka(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, other_pki: Pki
) -> Iterator[SecureKafka]:
    root = tmp_path_factory.mktemp("secure-kafka")
    kport, cport, ssl_port, sasl_port = free_ports(4)
    extra = root / "security.properties"
    extra.write_text(_broker_security(pki))
    cfg = InfraConfig.from_env(
        {
            "INFRA_RUN": str(root / "infra"),
            "KAFKA_PORT": str(kport),
            "KAFKA_CONTROLLER_PORT": str(cport),
            "KAFKA_EXTRA_LISTENERS": (
                f"SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_port}"
            ),
            "KAFKA_EXTRA_CONFIG": str(extra),
        }
    )
    start(["kafka"], cfg)
    try:
        _create_scram_user(cfg.kafka_bootstrap)
        yield SecureKafka(
            plaintext=cfg.kafka_bootstrap,
            ssl=f"127.0.0.1:{ssl_port}",
            sasl_ssl=f"127.0.0.1:{sasl_port}",
            pki=pki,
            other_pki=other_pki,
        )
    finally:
        stop(["kafka"], cfg)


def _broker_security(pki: Pki) -> str:
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return "\n".join(
        [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={pki.server_keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={pki.ca}",
            "listener.name.ssl.ssl.client.auth=required",
            "listener.name.sasl_ssl.ssl.client.auth=none",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
            "",
        ]
    )


def _create_scram_user(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    upsert = UserScramCredentialUpsertion(
        SCRAM_USER,
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
        SCRAM_PASSWORD.encode(),
    )
    futures = admin.alter_user_scram_credentials([upsert], request_timeout=30)
    for fut in futures.values():
        fut.result(timeout=30)

    def described() -> bool:
        found = admin.describe_user_scram_credentials([SCRAM_USER], request_timeout=10)
        return bool(found[SCRAM_USER].result(timeout=10).scram_credential_infos)

    wait_until(described, timeout=30, message="SCRAM user not visible", ignore=(KafkaException,))


@pytest.fixture
def secure_topic(secure_kafka: SecureKafka, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh topic on the dedicated broker (created over its PLAINTEXT listener)."""
    admin = AdminClient({"bootstrap.servers": secure_kafka.plaintext})
    name = f"sec-{request.node.name[:40].replace('[', '-').replace(']', '')}"
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)
    wait_until(
        lambda: name in admin.list_topics(timeout=5).topics,
        timeout=30,
        message=f"topic {name} not visible",
        ignore=(KafkaException,),
    )
    yield name
    admin.delete_topics([name])[name].result(timeout=30)
