"""Strimzi ``KafkaTopic`` resources generated from ``infra/kafka/topics.toml``.

Why generated: the TOML file is the single source of truth for topics (the local applier
``python -m torghut.kafka.topics`` reads it with :func:`torghut.kafka.topics.load_spec`, and so
does this module); on Kubernetes the Strimzi Topic Operator converges the same specs. The output
is committed as ``infra/k8s/base/kafka-topics.yaml`` and a test fails when it drifts::

    python -m infra.k8s.topics > infra/k8s/base/kafka-topics.yaml

``metadata.name`` is the topic name with dots turned into dashes (a plain DNS label), and
``spec.topicName`` keeps the real name. ``strimzi.io/cluster`` names the ``Kafka`` resource
(``--cluster``, default ``torghut``); the Topic Operator must watch the namespace the overlay
deploys to (``entityOperator.topicOperator.watchedNamespace``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from torghut.kafka.topics import SPEC_PATH, TopicSpec, load_spec

__all__ = ["HEADER", "kafka_topic", "main", "render"]

HEADER = (
    "# GENERATED from infra/kafka/topics.toml by `python -m infra.k8s.topics` — do not edit;\n"
    "# tests/infra/test_k8s_manifests.py fails when this file and the spec disagree.\n"
)


def kafka_topic(spec: TopicSpec, cluster: str) -> dict[str, Any]:
    """One ``kafka.strimzi.io/v1beta2`` ``KafkaTopic`` for ``spec``."""
    return {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaTopic",
        "metadata": {
            "name": spec.name.replace(".", "-"),
            "labels": {"strimzi.io/cluster": cluster},
        },
        "spec": {
            "topicName": spec.name,
            "partitions": spec.partitions,
            "replicas": spec.replication_factor,
            "config": dict(spec.config),
        },
    }


def render(specs: Sequence[TopicSpec], cluster: str = "torghut") -> str:
    """The YAML stream of every topic, in spec order, with the generated-file header."""
    body = yaml.safe_dump_all(
        [kafka_topic(s, cluster) for s in specs], sort_keys=False, default_flow_style=False
    )
    return HEADER + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.k8s.topics", description=__doc__)
    parser.add_argument("--spec", type=Path, default=SPEC_PATH)
    parser.add_argument("--cluster", default="torghut", help="the Strimzi Kafka resource name")
    args = parser.parse_args(argv)
    sys.stdout.write(render(load_spec(args.spec), args.cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
