"""Session-wide fixtures for tests that need the real local services.

Kafka (KRaft, Maven Central jars), S3 (SeaweedFS) and PostgreSQL 15 are provisioned by
``infra/local/services.sh`` the first time a test asks for one of them (all three are started in
parallel). Services that this run had to start are stopped when the last concurrent pytest
session ends; services that were already running (``make services-up``) are left alone. Nothing
is skipped: if a service cannot be provisioned the run fails with the service's log tail.

ClickHouse is chdb, in-process: one data dir per pytest process (``chdb_path``) and one fresh
database per test (``ch_database`` / ``ch_client``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import clickhouse_connect
import pytest
import sqlalchemy as sa
from botocore.config import Config as BotoConfig
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy.engine import make_url

from tests.helpers import wait_until
from tests.infra.services import InfraConfig, S3Settings, ServiceSession

SERVICE_FIXTURES = frozenset(
    {
        "kafka_bootstrap",
        "kafka_admin",
        "unique_topic",
        "s3_settings",
        "s3_client",
        "s3_bucket",
        "pg_admin_url",
        "pg_url",
    }
)

TopicFactory = Callable[..., str]


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag every test that uses a real-service fixture with the ``services`` marker."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


# --------------------------------------------------------------------------- services


@pytest.fixture(scope="session")
def infra_config() -> InfraConfig:
    """Ports, credentials and run dir of the local services (env overrides as in the scripts)."""
    return InfraConfig.from_env()


@pytest.fixture(scope="session")
def _services(infra_config: InfraConfig) -> Iterator[ServiceSession]:
    session = ServiceSession(infra_config)
    session.acquire()
    try:
        yield session
    finally:
        session.release()


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(_services: ServiceSession, infra_config: InfraConfig) -> str:
    """``"127.0.0.1:PORT"`` of the single-node Kafka 4.x broker."""
    return infra_config.kafka_bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    wait_until(
        lambda: admin.list_topics(timeout=5).brokers,
        timeout=30,
        message=f"Kafka at {kafka_bootstrap} has no brokers",
        ignore=(KafkaException,),
    )
    return admin


@pytest.fixture
def unique_topic(kafka_admin: AdminClient) -> Iterator[TopicFactory]:
    """Factory ``make(name, partitions=1, config=None) -> topic`` creating ``t-{name}-{uuid8}``.

    Waits until the topic's metadata (all partitions) is visible; deletes the topics at teardown.
    """
    created: list[str] = []

    def make(name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        topic = f"t-{name}-{_uid()}"
        futures = kafka_admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=30,
            request_timeout=30,
        )
        futures[topic].result(timeout=60)
        created.append(topic)

        def visible() -> bool:
            md = kafka_admin.list_topics(topic=topic, timeout=5).topics.get(topic)
            return md is not None and md.error is None and len(md.partitions) == partitions

        wait_until(
            visible,
            timeout=30,
            message=f"topic {topic} metadata not visible",
            ignore=(KafkaException,),
        )
        return topic

    yield make
    if created:
        for fut in kafka_admin.delete_topics(created, operation_timeout=30).values():
            fut.result(timeout=60)


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_settings(_services: ServiceSession, infra_config: InfraConfig) -> S3Settings:
    """endpoint_url / access_key / secret_key / region of the SeaweedFS S3 gateway."""
    return S3Settings.from_config(infra_config)


@pytest.fixture(scope="session")
def s3_client(s3_settings: S3Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_settings.endpoint_url,
        aws_access_key_id=s3_settings.access_key,
        aws_secret_access_key=s3_settings.secret_key,
        region_name=s3_settings.region,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A freshly created, uniquely named bucket; emptied and deleted at teardown."""
    bucket = f"t-{_uid()}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    for up in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3_client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3_client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3_client.delete_bucket(Bucket=bucket)


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_admin_url(_services: ServiceSession, infra_config: InfraConfig) -> str:
    """``postgresql+psycopg://postgres@127.0.0.1:55432/postgres`` (trust auth)."""
    return infra_config.pg_admin_url


@pytest.fixture(scope="session")
def _pg_admin_engine(pg_admin_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(_pg_admin_engine: sa.Engine, pg_admin_url: str) -> Iterator[str]:
    """URL of a freshly created database ``t_<uuid8>``; dropped (WITH (FORCE)) at teardown."""
    name = f"t_{_uid()}"
    with _pg_admin_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    with _pg_admin_engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --------------------------------------------------------------------------- ClickHouse (chdb)


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chdb data dir of this pytest process.

    chdb allows ONE engine path per process (and locks the dir against other processes), so
    every in-process ClickHouse user in the test run must use this path.
    """
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def _ch_admin(chdb_path: Path) -> Iterator[Any]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")
    yield client
    client.close()


@pytest.fixture
def ch_database(_ch_admin: Any) -> Iterator[str]:
    """A freshly created chdb database ``t_<uuid8>``; dropped at teardown."""
    name = f"t_{_uid()}"
    _ch_admin.command(f"CREATE DATABASE {name}")
    yield name
    _ch_admin.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture
def ch_client(chdb_path: Path, ch_database: str) -> Iterator[Any]:
    """clickhouse-connect client on ``chdb://{chdb_path}``; default database ``ch_database``."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=ch_database)
    yield client
    client.close()
