"""The alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``),
every alert has a case where it fires, and every alert names a runbook that exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.ops.references import REPO, RULE_TESTS, RULES, RUNBOOKS, alerts, dashboard_queries

SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe is not None, "promtool not found: `make sysdeps` installs Debian's prometheus"
    return subprocess.run(
        [exe, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_test_rules() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: an alert expected at a time it cannot fire is reported."""
    doc = yaml.safe_load(RULE_TESTS.read_text())
    doc["rule_files"] = [str(RULES)]
    case = doc["tests"][0]
    case["alert_rule_test"] = [
        {
            "eval_time": "1m",  # auth_failed only starts at 2m
            "alertname": "TorghutIngestAuthFailed",
            "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
        }
    ]
    doc["tests"] = [case]
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(doc))
    done = promtool("test", "rules", str(broken))
    assert done.returncode != 0
    assert "TorghutIngestAuthFailed" in done.stdout + done.stderr


def test_every_alert_has_a_firing_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fired = {
        check["alertname"]
        for case in doc["tests"]
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    assert set(alerts()) - fired == set()


def test_every_alert_has_a_severity_a_summary_and_an_existing_runbook() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"], name
        runbook = REPO / rule["annotations"]["runbook"]
        assert runbook.parent == RUNBOOKS, name
        assert runbook.is_file(), f"{name}: {runbook}"


def test_dashboard_queries_are_prometheus_expressions(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule of a scratch file)."""
    queries = dashboard_queries()
    assert queries
    scratch = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(scratch))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
