"""The manifests scrape what the processes serve: every dataflow container sets
``METRICS_PORT``, exposes it as its ``metrics`` port, its pod is annotated for Prometheus on
that port, and its exec probes read that endpoint; the API is annotated on its serving port."""

from __future__ import annotations

from typing import Any

import yaml

from tests.ops.references import REPO

BASE = REPO / "infra" / "k8s" / "base"


def workloads() -> list[dict[str, Any]]:
    docs = [d for p in sorted(BASE.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return [d for d in docs if d and d.get("kind") in ("Deployment", "StatefulSet")]


def test_every_dataflow_serves_and_is_scraped_on_its_metrics_port() -> None:
    dataflows = 0
    for obj in workloads():
        pod = obj["spec"]["template"]
        for container in pod["spec"]["containers"]:
            if container["command"][:3] != ["python", "-m", "bytewax.run"]:
                continue
            dataflows += 1
            name = obj["metadata"]["name"]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            port = env.get("METRICS_PORT")
            assert port is not None, f"{name}: no METRICS_PORT"
            assert not any(k.startswith("BYTEWAX_DATAFLOW_API") for k in env), name
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert str(ports["metrics"]) == port, name
            notes = pod["metadata"]["annotations"]
            assert notes["prometheus.io/scrape"] == "true", name
            assert notes["prometheus.io/port"] == port, name
            assert notes["prometheus.io/path"] == "/metrics", name
            for probe in ("readinessProbe", "livenessProbe"):
                command = container[probe].get("exec", {}).get("command", [])
                if command:
                    assert f"http://127.0.0.1:{port}/metrics" in command, (name, probe)
    assert dataflows == 3  # ingest, TA, trading


def test_the_api_is_scraped_on_its_serving_port() -> None:
    api = yaml.safe_load((BASE / "api.yaml").read_text())
    notes = api["spec"]["template"]["metadata"]["annotations"]
    settings = dict(
        line.split("=", 1)
        for line in (BASE / "settings.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert notes["prometheus.io/port"] == settings["API_PORT"]
    assert notes["prometheus.io/path"] == "/metrics"
