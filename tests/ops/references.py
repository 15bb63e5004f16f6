"""What the alert rules and the dashboard refer to: metric names, alert names, runbooks.

Read from the files themselves (``infra/prometheus/torghut-alerts.yml``,
``infra/grafana/torghut.json``), so a query added there is checked at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "infra" / "prometheus" / "torghut-alerts.yml"
RULE_TESTS = REPO / "infra" / "prometheus" / "torghut-alerts.test.yml"
DASHBOARD = REPO / "infra" / "grafana" / "torghut.json"
RUNBOOKS = REPO / "docs" / "runbooks"

METRIC = re.compile(r"\b(?:torghut|bytewax|process)_[A-Za-z0-9_]+")
"""Names of metrics Torghut processes export (ours, Bytewax's, prometheus_client's process_*)."""


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def metric_names(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)}


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name → where it is used (``rule AlertName`` / ``dashboard``)."""
    used: dict[str, set[str]] = {}
    for rule in rules():
        for name in metric_names([rule["expr"]]):
            used.setdefault(name, set()).add(f"rule {rule.get('alert', rule.get('record'))}")
    for name in metric_names(dashboard_queries()):
        used.setdefault(name, set()).add("dashboard")
    return used
