"""Create and converge Torghut's Kafka topics from ``infra/kafka/topics.toml``.

Why an applier of our own: topics must exist with the right ``cleanup.policy`` (delete for
time series, compact+delete for status) and ``retention.ms`` before any flow produces, and
broker-side auto-creation would give them defaults. Running it again is harmless: it creates
what is missing, adds partitions up to the spec, and sets listed configs that drifted. It never
deletes a topic, never shrinks partitions (Kafka cannot) and leaves unlisted configs alone.

Usage::

    python -m torghut.kafka.topics [--spec infra/kafka/topics.toml] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, untyped
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from torghut.config import KafkaSettings, SettingsError, load_section
from torghut.logs import configure_logging, get_logger

__all__ = ["SPEC_PATH", "ApplyReport", "TopicSpec", "apply_topics", "load_spec", "main"]

SPEC_PATH = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "topics.toml"
_MIN_ISR = "min.insync.replicas"

log = get_logger("torghut.kafka.topics")


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the spec wants it."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass
class ApplyReport:
    """What :func:`apply_topics` did; ``changed`` is false when everything already matched."""

    created: list[str] = field(default_factory=list)
    partitions_added: dict[str, tuple[int, int]] = field(default_factory=dict)
    configs_set: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.partitions_added or self.configs_set)


def load_spec(path: Path = SPEC_PATH) -> list[TopicSpec]:
    """Read the spec file; defaults apply to every topic, a topic's own values win."""
    raw = tomllib.loads(path.read_text())
    defaults: dict[str, Any] = raw.get("defaults", {})
    default_config = _strings(defaults.get("config", {}))
    specs: list[TopicSpec] = []
    for topic in raw.get("topic", []):
        partitions = int(topic["partitions"])
        if partitions < 1:
            raise ValueError(f"{path}: topic {topic['name']}: partitions must be >= 1")
        specs.append(
            TopicSpec(
                name=str(topic["name"]),
                partitions=partitions,
                replication_factor=int(
                    topic.get("replication_factor", defaults.get("replication_factor", 1))
                ),
                config={**default_config, **_strings(topic.get("config", {}))},
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate topic names")
    return specs


def _strings(table: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in table.items()}


def apply_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float = 30.0
) -> ApplyReport:
    """Make the cluster match ``specs`` (create, add partitions, set drifted configs)."""
    report = ApplyReport()
    metadata = admin.list_topics(timeout=timeout)
    brokers = max(1, len(metadata.brokers))
    fitted = [_fit_to_cluster(spec, brokers, report) for spec in specs]
    missing = [s for s in fitted if s.name not in metadata.topics]
    _create(admin, missing, timeout, report)
    _await_visible(admin, report.created, timeout)
    existing = [s for s in fitted if s.name in metadata.topics]
    for spec in existing:
        have = len(metadata.topics[spec.name].partitions)
        if have < spec.partitions:
            _wait(admin.create_partitions([NewPartitions(spec.name, spec.partitions)]), timeout)
            report.partitions_added[spec.name] = (have, spec.partitions)
        elif have > spec.partitions:
            report.warnings.append(
                f"{spec.name} has {have} partitions, spec says {spec.partitions}; "
                "Kafka cannot shrink a topic, left as is"
            )
    _converge_configs(admin, existing, timeout, report)
    log.info(
        "kafka_topics_applied",
        created=report.created,
        partitions_added=report.partitions_added,
        configs_set=report.configs_set,
        warnings=report.warnings,
    )
    return report


def _fit_to_cluster(spec: TopicSpec, brokers: int, report: ApplyReport) -> TopicSpec:
    """Cap replication (and ``min.insync.replicas``) at the broker count, with a warning."""
    if spec.replication_factor <= brokers:
        return spec
    report.warnings.append(
        f"{spec.name}: replication_factor {spec.replication_factor} capped at {brokers} broker(s)"
    )
    config = dict(spec.config)
    if _MIN_ISR in config:
        config[_MIN_ISR] = str(min(int(config[_MIN_ISR]), brokers))
    return TopicSpec(spec.name, spec.partitions, brokers, config)


def _create(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float, report: ApplyReport
) -> None:
    if not specs:
        return
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in specs],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            report.warnings.append(f"{name} was created concurrently by someone else")
            continue
        report.created.append(name)


def _await_visible(admin: AdminClient, names: Sequence[str], timeout: float) -> None:
    """Return once every broker answers for the new topics, so the caller can use them."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        topics = admin.list_topics(timeout=timeout).topics
        pending = {n for n in pending if n not in topics or topics[n].error is not None}
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout:g} s: {sorted(pending)}")
        if pending:
            time.sleep(0.1)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    while resources:
        try:
            _wait(admin.describe_configs(resources, request_timeout=timeout), timeout)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _converge_configs(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout: float, report: ApplyReport
) -> None:
    if not specs:
        return
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
    described = admin.describe_configs(resources, request_timeout=timeout)
    current = {res.name: fut.result(timeout) for res, fut in described.items()}
    to_alter: list[ConfigResource] = []
    for spec in specs:
        entries = current[spec.name]
        drift = {
            key: value
            for key, value in spec.config.items()
            if key not in entries or entries[key].value != value
        }
        if not drift:
            continue
        report.configs_set[spec.name] = drift
        to_alter.append(
            ConfigResource(
                ConfigResource.Type.TOPIC,
                spec.name,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in drift.items()
                ],
            )
        )
    if to_alter:
        _wait(admin.incremental_alter_configs(to_alter, request_timeout=timeout), timeout)


def _wait(futures: dict[Any, Any], timeout: float) -> None:
    for fut in futures.values():
        fut.result(timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """Apply the spec to the cluster of ``KAFKA_BOOTSTRAP_SERVERS`` (or ``--bootstrap``)."""
    parser = argparse.ArgumentParser(prog="python -m torghut.kafka.topics", description=__doc__)
    parser.add_argument("--spec", type=Path, default=SPEC_PATH)
    parser.add_argument("--bootstrap", help="override KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        kafka = load_section(KafkaSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    config: dict[str, str | int | float | bool] = {**kafka.client_config()}
    if args.bootstrap:
        config["bootstrap.servers"] = args.bootstrap
    if not config["bootstrap.servers"]:
        print("no Kafka: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap", file=sys.stderr)
        return 2
    report = apply_topics(AdminClient(config), load_spec(args.spec), args.timeout)
    print(
        json.dumps(
            {
                "created": report.created,
                "partitions_added": report.partitions_added,
                "configs_set": report.configs_set,
                "warnings": report.warnings,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
