"""App-level behaviour: probes, ClickHouse outage, validation errors, dashboard, metrics."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from api.app import create_app
from tests.api.conftest import MakeClient, closed_port, insert_signals, settings_for, signal
from torghut.clickhouse import Client
from torghut.config import ApiSettings, ClickHouseSettings

BAD_QUERIES = [
    ("/api/torghut/ta/bars?symbol=AAPL&window=PT5S", "window", "Invalid enum value 'PT5S'"),
    (
        "/api/torghut/ta/bars?symbol=AAPL&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from",
        "is after to=",
    ),
    ("/api/torghut/ta/signals?symbol=AAPL&from=yesterday", "from", "not in the documented format"),
    ("/api/torghut/ta/signals?symbol=AAPL&to=2026-13-01", "to", "not in the documented format"),
    ("/api/torghut/ta/signals?symbol=AAPL&to=2026-02-30", "to", "not a valid ISO-8601 timestamp"),
    ("/api/torghut/ta/bars?symbol=AAPL&limit=0", "limit", "Expected `int` >= 1"),
    ("/api/torghut/ta/bars?symbol=AAPL&limit=100001", "limit", "Expected `int` <= 100000"),
    ("/api/torghut/ta/latest", "symbol", "symbol: is required (query)"),
    ("/api/torghut/ta/latest?symbol=AA%20PL", "symbol", "not in the documented format"),
    ("/api/torghut/ta/latest?symbol=1ABC", "symbol", "not in the documented format"),
    ("/trading/decisions?limit=0", "limit", "Expected `int` >= 1"),
    ("/trading/decisions?since=not-a-time", "since", "not in the documented format"),
    ("/trading/decisions?since=2999-01-01T00:00:00Z", "since", "in the future"),
    ("/trading/decisions?since=9999-12-31T23:59:59-01:00", "since", "in the future"),
    ("/trading/executions?symbol=%24%24", "symbol", "not in the documented format"),
    ("/trading/dead-letters?symbol=%24%24", "symbol", "not in the documented format"),
    ("/api/torghut/console/update", "symbol", "symbol: is required (query)"),
]


@pytest.mark.parametrize(("url", "parameter", "message"), BAD_QUERIES)
def test_bad_query_parameters_are_400_problems(
    make_client: MakeClient, url: str, parameter: str, message: str
) -> None:
    with make_client() as client:
        r = client.get(url)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 400
    assert body["parameter"] == parameter
    assert message in body["detail"]
    assert body["instance"] == url.split("?")[0]


def test_non_integer_limit_is_a_400_problem(make_client: MakeClient) -> None:
    with make_client() as client:
        r = client.get("/trading/executions?limit=ten")
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["parameter"] == "limit"
    assert "int" in r.json()["detail"]


def test_clickhouse_unreachable_fails_readiness_not_liveness(make_client: MakeClient) -> None:
    down = ClickHouseSettings(dsn=f"http://127.0.0.1:{closed_port()}", database="torghut")
    with make_client(clickhouse=down) as client:
        live = client.get("/healthz")
        ready = client.get("/readyz")
        health = client.get("/trading/health")
        latest = client.get("/api/torghut/ta/latest?symbol=AAPL")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "clickhouse": "error",
        "postgres": "ok",
        "kill_switch": False,
        "halts": [],
    }
    assert health.status_code == 503
    assert (health.json()["clickhouse"], health.json()["postgres"]) == ("error", "ok")
    assert latest.status_code == 503
    assert latest.json()["dependency"] == "clickhouse"


def test_ready_when_dependencies_answer(make_client: MakeClient) -> None:
    with make_client() as client:
        r = client.get("/readyz")
    assert (r.status_code, r.json()) == (
        200,
        {"status": "ok", "clickhouse": "ok", "postgres": "ok", "kill_switch": False, "halts": []},
    )


def test_dashboard_page_and_script_are_served(make_client: MakeClient) -> None:
    with make_client() as client:
        page = client.get("/")
        script = client.get("/dashboard/app.js")
        library = client.get("/dashboard/vendor/lightweight-charts-5.3.0.standalone.production.js")
        missing = client.get("/dashboard/nope.js")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/dashboard/app.js">' in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # nothing from outside
    assert "https://" not in page.text
    assert script.status_code == 200
    for endpoint in (
        "/api/torghut/ta/bars",
        "/api/torghut/console/stream",
        "/trading/positions",
        "/trading/kill-switch",
    ):
        assert endpoint in script.text
    assert "sessionStorage" in script.text
    assert "localStorage" not in script.text
    assert library.status_code == 200
    assert "Lightweight Charts" in library.text[:400]
    assert missing.status_code == 404


def test_metrics_use_route_templates_and_status_classes(
    ch: Client, make_client: MakeClient
) -> None:
    insert_signals(ch, [signal(0)])
    with make_client() as client:
        for sym in ("AAPL", "MSFT", "NVDA"):
            assert client.get(f"/api/torghut/ta/latest?symbol={sym}").status_code == 200
        assert client.get("/api/torghut/ta/latest?symbol=@@").status_code == 400
        text = client.get("/metrics").text
    latest_ok = (
        'torghut_api_requests_total{method="GET",route="/api/torghut/ta/latest",status="2xx"} 3.0'
    )
    assert latest_ok in text
    assert 'route="/api/torghut/ta/latest",status="4xx"} 1.0' in text
    assert "torghut_api_request_duration_seconds_bucket" in text
    # the API's own families carry no symbol (the process-wide registry may hold other
    # stages' families, e.g. per-symbol position drift, when tests share the process)
    api_lines = [line for line in text.splitlines() if line.startswith("torghut_api_")]
    assert api_lines
    assert not [line for line in api_lines if "MSFT" in line or "NVDA" in line]


def test_405_names_the_allowed_methods_and_no_cors_unless_configured(
    ch_settings: ClickHouseSettings, sqlite_url: str, make_client: MakeClient
) -> None:
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    with make_client() as client:
        wrong = client.delete("/trading/status")
        plain = client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("application/problem+json")
    assert "GET" in wrong.headers["allow"]
    assert "DELETE" not in wrong.headers["allow"]
    assert "access-control-allow-origin" not in plain.headers

    settings = settings_for(ch_settings, sqlite_url)
    settings.api = ApiSettings(cors_origins=("https://ops.example",))
    app = create_app(settings, alpaca_check=lambda: "ok")
    with TestClient(app) as client:
        allowed = client.options(
            "/trading/status", headers={**preflight, "Origin": "https://ops.example"}
        )
        other = client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
    assert "access-control-allow-origin" not in other.headers
