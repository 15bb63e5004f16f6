"""The control endpoints without a trading flow running: commands are recorded and stay
pending, visibly; a bad body is a 400 problem and changes nothing; reads need no token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from pydantic import SecretStr

from api.app import create_app
from tests.api.conftest import settings_for
from torghut.clickhouse import Client, connect
from torghut.config import ApiSettings, ClickHouseSettings

TOKEN = "t0ken-for-api-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(
    ch: Client, ch_settings: ClickHouseSettings, sqlite_url: str, store_engine: sa.Engine
) -> Iterator[TestClient[Any]]:
    settings = settings_for(ch_settings, sqlite_url)
    settings.api = ApiSettings(control_token=SecretStr(TOKEN))
    app = create_app(
        settings,
        ch_client_factory=lambda: connect(ch_settings),
        store_engine=store_engine,
        alpaca_check=lambda: "ok",
    )
    with TestClient(app) as c:
        yield c


def test_commands_stay_pending_without_a_trading_flow_and_status_shows_them(
    client: TestClient[Any],
) -> None:
    r = client.post("/trading/orders/cancel-all", json={"reason": "close"}, headers=AUTH)
    assert r.status_code == 202
    assert (r.json()["event"]["action"], r.json()["event"]["state"]) == ("cancel_all", "pending")
    status = client.get("/trading/status").json()
    assert [(c["action"], c["state"], c["origin"]) for c in status["pending_commands"]] == [
        ("cancel_all", "pending", "api")
    ]
    assert client.get("/readyz").status_code == 200  # pending is not a halt


def test_a_bad_body_is_a_400_problem_and_records_nothing(client: TestClient[Any]) -> None:
    unknown = client.post(
        "/trading/kill-switch", json={"engaged": True, "reason": "x", "extra": 1}, headers=AUTH
    )
    not_json = client.post(
        "/trading/resume",
        content=b"{",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    too_long = client.post("/trading/resume", json={"reason": "x" * 1001}, headers=AUTH)
    for r in (unknown, not_json, too_long):
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert too_long.json()["parameter"] == "reason"
    assert client.get("/trading/controls").json()["events"] == []


def test_reads_need_no_token_and_a_resume_with_nothing_halted_is_audited(
    client: TestClient[Any],
) -> None:
    r = client.post("/trading/resume", json={"reason": "routine"}, headers=AUTH)
    assert r.json()["event"]["result"] == {"cleared": [], "still_halted": []}
    controls = client.get("/trading/controls", params={"limit": 5}).json()
    assert controls["kill_switch"] == {
        "engaged": False,
        "reason": None,
        "since": None,
        "origin": None,
    }
    assert [(e["action"], e["reason"]) for e in controls["events"]] == [("resume", "routine")]
