"""The control tables on both backends: the kill switch is its latest engage/release, commands
stay pending until completed, halts are raised once, cleared by their cause or by a resume, and
every change is in the audit trail; the CLI writes the same rows (origin ``cli``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.trading.conftest import T0
from trading.adapters.store import ControlAction, HaltKind, Origin, TradingStore

REPO = Path(__file__).resolve().parents[2]


def test_kill_switch_is_the_latest_engage_or_release(store: TradingStore) -> None:
    controls = store.controls
    assert not controls.state().kill_switch.engaged
    assert controls.state().kill_switch_reason() is None
    controls.set_kill_switch(True, "incident 7", Origin.API)
    state = controls.state()
    assert (state.kill_switch.engaged, state.kill_switch.origin) == (True, "api")
    assert state.kill_switch_reason() == "kill switch engaged (api): incident 7"
    controls.set_kill_switch(False, "resolved", Origin.CLI)
    released = controls.state().kill_switch
    assert (released.engaged, released.reason, released.origin) == (False, "resolved", "cli")


def test_commands_stay_pending_until_the_flow_completes_them(store: TradingStore) -> None:
    controls = store.controls
    cancel = controls.record(ControlAction.CANCEL_ALL, "flat for the close", Origin.API)
    flatten = controls.record(ControlAction.FLATTEN, "eod", Origin.CLI)
    assert [(e.action, e.state) for e in controls.state().pending] == [
        ("cancel_all", "pending"),
        ("flatten", "pending"),
    ]
    controls.complete(cancel.id, ok=True, result={"canceled": ["a"], "remaining": []})
    controls.complete(flatten.id, ok=False, result={"error": "403 forbidden"})
    assert controls.state().pending == ()
    events = {e.id: e for e in controls.events()}
    assert (events[cancel.id].state, events[cancel.id].result) == (
        "done",
        {"canceled": ["a"], "remaining": []},
    )
    assert events[flatten.id].state == "failed"
    assert events[flatten.id].completed_at is not None


def test_a_halt_waiting_for_resume_clears_only_after_its_cause_is_gone(
    store: TradingStore,
) -> None:
    controls = store.controls
    assert controls.raise_halt(
        HaltKind.POSITION_DRIFT, "AAPL broker 5 local 0", requires_resume=True
    )
    assert not controls.raise_halt(
        HaltKind.POSITION_DRIFT, "AAPL broker 6 local 0", requires_resume=True
    )
    (halt,) = controls.state().halts
    assert (halt.kind, halt.detail, halt.cause_gone_at) == (
        "position_drift",
        "AAPL broker 6 local 0",
        None,
    )
    early = controls.resume("too early", Origin.API)
    assert early.result == {
        "cleared": [],
        "still_halted": [{"kind": "position_drift", "detail": "AAPL broker 6 local 0"}],
    }
    assert not controls.cause_gone(HaltKind.POSITION_DRIFT)
    assert controls.state().halts[0].cause_gone_at is not None
    assert controls.state().halted_reason() == "position_drift: AAPL broker 6 local 0"
    done = controls.resume("explained", Origin.API)
    assert done.result == {"cleared": ["position_drift"], "still_halted": []}
    assert controls.state().halts == ()
    assert [e.action for e in reversed(controls.events())] == ["halt", "resume", "resume"]


def test_a_halt_without_resume_clears_with_its_cause(store: TradingStore) -> None:
    controls = store.controls
    controls.raise_halt(HaltKind.PIPELINE_LAG, "lag 12.000s > 10.5s", requires_resume=False)
    assert controls.state().halted_reason() == "pipeline_lag: lag 12.000s > 10.5s"
    assert controls.cause_gone(HaltKind.PIPELINE_LAG)
    assert controls.state().halts == ()
    assert not controls.cause_gone(HaltKind.PIPELINE_LAG)
    assert [(e.action, e.origin) for e in reversed(controls.events())] == [
        ("halt", "automatic"),
        ("halt_cleared", "automatic"),
    ]


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trading.controls", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "TRADING_DB_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_writes_the_same_rows_as_the_api(store: TradingStore, store_url: str) -> None:
    engaged = _cli(store_url, "engage", "--reason", "api is down")
    assert engaged.returncode == 0, engaged.stderr
    assert json.loads(engaged.stdout)["state"]["kill_switch"]["engaged"] is True
    flatten = _cli(store_url, "flatten", "--reason", "close out")
    assert json.loads(flatten.stdout)["event"]["state"] == "pending"
    missing = _cli(store_url, "resume")
    assert missing.returncode == 2
    assert "--reason" in missing.stderr
    status = json.loads(_cli(store_url, "status").stdout)
    assert [e["action"] for e in status["state"]["pending"]] == ["flatten"]
    state = store.controls.state()
    assert state.kill_switch.engaged
    assert state.kill_switch.origin == "cli"
    assert [(e.action, e.origin) for e in reversed(store.controls.events())] == [
        ("engage", "cli"),
        ("flatten", "cli"),
    ]
    assert state.kill_switch.since is not None
    assert state.kill_switch.since > T0
