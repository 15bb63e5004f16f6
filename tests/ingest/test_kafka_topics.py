"""The topic spec covers every Torghut topic and the applier converges a real Kafka idempotently."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.helpers import wait_until
from torghut.config import KafkaSettings
from torghut.kafka.topics import TopicSpec, apply_topics, load_spec, main


def test_spec_names_every_topic_with_the_right_cleanup_policy() -> None:
    specs = {s.name: s for s in load_spec()}
    settings = KafkaSettings()
    topics = {getattr(settings, f) for f in KafkaSettings.model_fields if f.startswith("topic_")}
    assert set(specs) == topics
    compacted = {"torghut.status.v1", "torghut.ta.status.v1"}
    for name, spec in specs.items():
        expected = "compact,delete" if name in compacted else "delete"
        assert spec.config["cleanup.policy"] == expected, name
        assert int(spec.config["retention.ms"]) > 0
        assert spec.config["min.insync.replicas"] == "2"
        assert spec.replication_factor == 3


def _configs(admin: AdminClient, name: str) -> dict[str, str]:
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([res])[res].result(30)
    return {k: v.value for k, v in entries.items()}


@pytest.fixture
def renamed_spec(kafka_admin: AdminClient) -> Iterator[list[TopicSpec]]:
    """The real spec under throw-away names (two topics: a compacted one and a deleting one)."""
    tag = uuid.uuid4().hex[:8]
    chosen = [s for s in load_spec() if s.name in ("torghut.status.v1", "torghut.trades.v1")]
    specs = [replace(s, name=f"t-{tag}-{s.name}") for s in chosen]
    yield specs
    futures = kafka_admin.delete_topics([s.name for s in specs], operation_timeout=30)
    for fut in futures.values():
        fut.result(60)


def test_applier_creates_then_converges_and_is_idempotent(
    kafka_admin: AdminClient, renamed_spec: list[TopicSpec]
) -> None:
    first = apply_topics(kafka_admin, renamed_spec)
    assert sorted(first.created) == sorted(s.name for s in renamed_spec)
    assert any("capped at 1 broker" in w for w in first.warnings)
    status = next(s for s in renamed_spec if s.name.endswith("torghut.status.v1"))
    trades = next(s for s in renamed_spec if s.name.endswith("torghut.trades.v1"))
    live = _configs(kafka_admin, status.name)
    assert live["cleanup.policy"] == "compact,delete"
    assert live["retention.ms"] == status.config["retention.ms"]
    assert live["min.insync.replicas"] == "1"
    md = kafka_admin.list_topics(timeout=10).topics
    assert len(md[trades.name].partitions) == trades.partitions

    again = apply_topics(kafka_admin, renamed_spec)
    assert not again.changed, again

    drifted = [
        replace(status, config={**status.config, "retention.ms": "3600000"}),
        replace(trades, partitions=trades.partitions + 2),
    ]
    converged = apply_topics(kafka_admin, drifted)
    assert converged.configs_set == {status.name: {"retention.ms": "3600000"}}
    assert converged.partitions_added == {trades.name: (trades.partitions, trades.partitions + 2)}
    wait_until(
        lambda: _configs(kafka_admin, status.name)["retention.ms"] == "3600000",
        timeout=20,
        message="altered retention.ms not visible",
    )
    assert _configs(kafka_admin, status.name)["cleanup.policy"] == "compact,delete"

    shrink = apply_topics(kafka_admin, renamed_spec)
    assert shrink.configs_set == {status.name: {"retention.ms": status.config["retention.ms"]}}
    assert any("cannot shrink" in w for w in shrink.warnings)
    assert not apply_topics(kafka_admin, drifted[1:]).changed


def test_command_line_applies_a_spec_file(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}-cli"
    spec = tmp_path / "topics.toml"
    spec.write_text(
        f'[[topic]]\nname = "{name}"\npartitions = 2\n'
        'config = { "cleanup.policy" = "compact,delete", "retention.ms" = "60000" }\n'
    )
    try:
        assert main(["--spec", str(spec), "--bootstrap", kafka_bootstrap]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["created"] == [name]
        assert _configs(kafka_admin, name)["cleanup.policy"] == "compact,delete"
        assert main(["--spec", str(spec), "--bootstrap", kafka_bootstrap]) == 0
        again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert again == {"created": [], "partitions_added": {}, "configs_set": {}, "warnings": []}
    finally:
        kafka_admin.delete_topics([name], operation_timeout=30)[name].result(60)
