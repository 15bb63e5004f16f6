"""The Kubernetes manifests: every overlay renders with the pinned kustomize and passes the
offline check; each policy fails a manifest that breaks it; the committed Strimzi topics are
the ones ``infra/kafka/topics.toml`` generates.

Violating variants are built from the rendered objects (deep copies, one change each) and, for
the headline case, from a real temporary overlay on top of the base, so kustomize's own output
is what the check rejects.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.k8s import check as k8s
from infra.k8s.topics import render as render_topics
from torghut.kafka.topics import load_spec

Obj = dict[str, Any]
Mutation = Callable[[list[Obj]], None]

BASE = k8s.REPO / "infra" / "k8s" / "base"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {d.name: k8s.render(d) for d in k8s.overlays()}


def test_the_overlays_are_paper_and_live(rendered: dict[str, list[Obj]]) -> None:
    assert set(rendered) == {"paper", "live"}


@pytest.mark.parametrize("overlay", ["paper", "live"])
def test_every_overlay_passes_the_check(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "StatefulSet", "Service", "Job", "NetworkPolicy", "KafkaTopic"} <= kinds
    assert k8s.check(objects) == []


def settings_of(objects: list[Obj]) -> dict[str, str]:
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


def test_paper_overlay_trades_paper(rendered: dict[str, list[Obj]]) -> None:
    settings = settings_of(rendered["paper"])
    assert settings["TRADING_MODE"] == "paper"
    assert settings["TRADING_LIVE_ENABLED"] == "false"
    assert "ALPACA_LIVE_BASE_URL" not in settings
    assert {o["metadata"].get("namespace") for o in rendered["paper"]} <= {"torghut-paper", None}


def test_live_overlay_sets_every_live_gate(rendered: dict[str, list[Obj]]) -> None:
    settings = settings_of(rendered["live"])
    assert settings["TRADING_MODE"] == "live"
    assert settings["TRADING_LIVE_ENABLED"] == "true"
    assert settings["ALPACA_LIVE_BASE_URL"] == "https://api.alpaca.markets"
    assert {o["metadata"].get("namespace") for o in rendered["live"]} <= {"torghut-live", None}


def test_every_part_reads_the_same_hashed_settings(rendered: dict[str, list[Obj]]) -> None:
    """The Knative Service too: kustomize rewrites its reference (base/kustomizeconfig.yaml)."""
    objects = rendered["paper"]
    name = next(o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap")
    refs = {
        src["configMapRef"]["name"]
        for o in objects
        for c in k8s.containers(o)
        for src in c.get("envFrom", [])
    }
    assert name.startswith("torghut-settings-")
    assert refs == {name}


def test_a_setting_that_only_mentions_keys_is_no_secret(rendered: dict[str, list[Obj]]) -> None:
    objects = copy.deepcopy(rendered["paper"])
    settings_of(objects).update(TA_DEDUP_MAX_KEYS="500000")
    assert k8s.check(objects) == []


# --- violations ------------------------------------------------------------------------------


def component(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name
    )


def container(objects: list[Obj], kind: str, name: str) -> Obj:
    c: Obj = k8s.pod_spec(component(objects, kind, name))["containers"][0]  # type: ignore[index]
    return c


def settings_map(objects: list[Obj]) -> dict[str, str]:
    return settings_of(objects)


def second_ingest(objects: list[Obj]) -> None:
    twin = copy.deepcopy(component(objects, "Deployment", "ingest"))
    twin["metadata"]["name"] = "torghut-ingest-b"
    objects.append(twin)


def drop_default_deny(objects: list[Obj]) -> None:
    objects[:] = [o for o in objects if o["metadata"]["name"] != "default-deny"]


def internet_any_port(objects: list[Obj]) -> None:
    policy = next(
        o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "ingest"
    )
    for rule in policy["spec"]["egress"]:
        if any("ipBlock" in peer for peer in rule["to"]):
            del rule["ports"]


VIOLATIONS: dict[str, tuple[Mutation, str, str]] = {
    "two ingest replicas": (
        lambda o: component(o, "Deployment", "ingest")["spec"].update(replicas=2),
        "ingest-single",
        "replicas is 2",
    ),
    "ingest rolling update": (
        lambda o: component(o, "Deployment", "ingest")["spec"].update(
            strategy={"type": "RollingUpdate"}
        ),
        "ingest-single",
        "Recreate",
    ),
    "a second ingest deployment": (second_ingest, "ingest-single", "2 objects run"),
    "two trading replicas": (
        lambda o: component(o, "Deployment", "trading")["spec"].update(replicas=2),
        "trading-single",
        "replicas is 2",
    ),
    "TA without a readiness probe": (
        lambda o: container(o, "StatefulSet", "ta").pop("readinessProbe"),
        "probes",
        "no readinessProbe",
    ),
    "ingest without a liveness probe": (
        lambda o: container(o, "Deployment", "ingest").pop("livenessProbe"),
        "probes",
        "no livenessProbe",
    ),
    "API without a startup probe": (
        lambda o: container(o, "Service", "api").pop("startupProbe"),
        "probes",
        "no startupProbe",
    ),
    "inline Alpaca secret": (
        lambda o: container(o, "Deployment", "trading")["env"].append(
            {"name": "ALPACA_SECRET_KEY", "value": "hunter2"}
        ),
        "inline-secret",
        "ALPACA_SECRET_KEY has an inline value",
    ),
    "DSN with a password in a ConfigMap": (
        lambda o: settings_map(o).update(CH_DSN="https://torghut:hunter2@clickhouse:8443"),
        "inline-secret",
        "CH_DSN is a credential",
    ),
    "password in an env URL": (
        lambda o: container(o, "Deployment", "ingest")["env"].append(
            {"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "sasl://u:hunter2@kafka:9092"}
        ),
        "inline-secret",
        "holds a password",
    ),
    "a Secret with data": (
        lambda o: o.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "torghut-alpaca", "namespace": "torghut-paper"},
                "stringData": {"ALPACA_SECRET_KEY": "hunter2"},
            }
        ),
        "inline-secret",
        "a Secret with data",
    ),
    "no default deny": (drop_default_deny, "default-deny", "denies all ingress and egress"),
    "internet on every port": (internet_any_port, "egress-internet", "other than 443"),
    "egress to every destination": (
        lambda o: next(
            p for p in o if p["kind"] == "NetworkPolicy" and p["metadata"]["name"] == "migrate"
        )["spec"]["egress"].append({}),
        "egress-internet",
        "other than 443",
    ),
    "TA replicas out of step with -a": (
        lambda o: component(o, "StatefulSet", "ta")["spec"].update(replicas=3),
        "ta-cluster",
        "with 3 replicas",
    ),
    "TA with fewer recovery partitions than processes": (
        lambda o: settings_map(o).update(RECOVERY_PARTITIONS="1"),
        "ta-cluster",
        "RECOVERY_PARTITIONS=1 is fewer than its 2 replicas",
    ),
    "TA rolled pod by pod": (
        lambda o: component(o, "StatefulSet", "ta")["spec"].update(
            updateStrategy={"type": "RollingUpdate"}
        ),
        "ta-cluster",
        "OnDelete",
    ),
    "API without containerConcurrency": (
        lambda o: component(o, "Service", "api")["spec"]["template"]["spec"].pop(
            "containerConcurrency"
        ),
        "schema",
        "containerConcurrency must be an int >= 1",
    ),
    "API port not the serving port": (
        lambda o: settings_map(o).update(API_PORT="9000"),
        "settings",
        "API_PORT=9000 but Knative serves port 8080",
    ),
    "API reading an unhashed ConfigMap name": (
        lambda o: container(o, "Service", "api")["envFrom"][0]["configMapRef"].update(
            name="torghut-settings"
        ),
        "references",
        "ConfigMap 'torghut-settings' is not in the render",
    ),
    "a misspelt setting": (
        lambda o: settings_map(o).update(TRADNG_MODE="live"),
        "settings",
        "TRADNG_MODE is not a setting",
    ),
    "live without its gates": (
        lambda o: settings_map(o).update(TRADING_MODE="live"),
        "settings",
        "TRADING_MODE=live also needs",
    ),
    "an unknown container field": (
        lambda o: container(o, "Service", "api").update(bogus=1),
        "schema",
        "'bogus' was unexpected",
    ),
    "a topic with no partitions": (
        lambda o: next(t for t in o if t["kind"] == "KafkaTopic")["spec"].update(partitions=0),
        "schema",
        "spec.partitions",
    ),
    "a flow module that does not exist": (
        lambda o: container(o, "Deployment", "trading").update(
            command=["python", "-m", "bytewax.run", "dataflows.tradng:flow"]
        ),
        "references",
        "dataflows.tradng: not found",
    ),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_a_violating_manifest_fails(rendered: dict[str, list[Obj]], case: str) -> None:
    mutate, rule, text = VIOLATIONS[case]
    objects = copy.deepcopy(rendered["paper"])
    mutate(objects)
    problems = k8s.check(objects)
    assert any(p.rule == rule and text in p.message for p in problems), problems


def test_an_overlay_with_two_ingest_replicas_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real overlay on top of the base: what kustomize renders is what the check rejects."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "namespace: torghut-test\n"
        f"resources:\n  - {os.path.relpath(BASE, tmp_path)}\n"
        "patches:\n"
        "  - target: {kind: Deployment, name: torghut-ingest}\n"
        "    patch: |\n"
        "      - op: replace\n"
        "        path: /spec/replicas\n"
        "        value: 2\n"
    )
    assert k8s.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "[ingest-single] Deployment/torghut-test/torghut-ingest: replicas is 2" in out
    assert k8s.main([str(k8s.OVERLAYS_DIR / "paper")]) == 0


# --- Strimzi topics --------------------------------------------------------------------------


def test_committed_kafka_topics_are_generated_from_the_spec() -> None:
    committed = (BASE / "kafka-topics.yaml").read_text()
    assert committed == render_topics(load_spec()), (
        "run: python -m infra.k8s.topics > infra/k8s/base/kafka-topics.yaml"
    )


def test_every_spec_topic_becomes_a_kafka_topic(rendered: dict[str, list[Obj]]) -> None:
    topics = {
        o["spec"]["topicName"]: o["spec"] for o in rendered["live"] if o["kind"] == "KafkaTopic"
    }
    for spec in load_spec():
        assert topics[spec.name]["partitions"] == spec.partitions
        assert topics[spec.name]["replicas"] == spec.replication_factor
        assert topics[spec.name]["config"] == spec.config
    assert len(topics) == len(load_spec())
