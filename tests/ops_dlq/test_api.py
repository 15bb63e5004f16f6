"""``/dead-letters`` over the real app (lifespan included) on a migrated Postgres store: the
list filters and orders, one record's page has its raw bytes and replays, bad parameters are
400s and an unknown id a 404, all as problem details."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from api.app import create_app
from dlq.store import DeadLetterStore
from tests.ops_dlq.conftest import incoming
from torghut.clickhouse import connect
from torghut.config import ApiSettings, ClickHouseSettings, Settings, StoreSettings

INGEST, TA = "torghut.ingest.dlq.v1", "torghut.ta.dlq.v1"


@pytest.fixture
def client(
    dlq_engine: sa.Engine, pg_url: str, chdb_path: Path, ch_database: str
) -> Iterator[TestClient[Any]]:
    ch = ClickHouseSettings(dsn=f"chdb://{chdb_path}", database=ch_database)
    settings = Settings(
        clickhouse=ch, store=StoreSettings(url=pg_url), api=ApiSettings(max_rows=50)
    )
    app = create_app(
        settings,
        ch_client_factory=lambda: connect(ch),
        store_engine=dlq_engine,
        alpaca_check=lambda: "ok",
    )
    with TestClient(app) as c:
        yield c


@pytest.fixture
def seeded(store: DeadLetterStore) -> DeadLetterStore:
    store.record(
        [
            incoming(INGEST, 0, stage="alpaca_decode", reason="invalid_message", raw=b"\x01\xff"),
            incoming(
                INGEST,
                1,
                stage="alpaca_decode",
                reason="invalid_message",
                raw=b"\x01\xff",
                seconds=30,
            ),
            incoming(
                INGEST, 2, stage="alpaca_decode", reason="malformed_frame", raw=b"[", seconds=10
            ),
            incoming(
                TA,
                0,
                stage="ta_microbars",
                reason="invalid_message",
                raw=b"{}",
                seconds=20,
                symbol="AAPL",
            ),
        ],
        {(INGEST, 0): 3, (TA, 0): 1},
    )
    return store


def test_the_list_is_most_recent_first_and_filters(
    client: TestClient[Any], seeded: DeadLetterStore
) -> None:
    page = client.get("/dead-letters").json()
    assert page["count"] == 3
    rows = page["dead_letters"]
    assert [(r["topic"], r["reason"]) for r in rows] == [
        (INGEST, "invalid_message"),
        (TA, "invalid_message"),
        (INGEST, "malformed_frame"),
    ]
    top = rows[0]
    assert top["count"] == 2
    assert top["raw_bytes"] == 2
    assert top["first_seen_at"].startswith("2026-12-01T14:30:00")
    assert top["last_seen_at"].startswith("2026-12-01T14:30:30")
    assert top["replays"] == 0
    assert "raw" not in top

    by_reason = client.get("/dead-letters", params={"reason": "malformed_frame"}).json()
    assert [r["reason"] for r in by_reason["dead_letters"]] == ["malformed_frame"]
    by_topic = client.get("/dead-letters", params={"topic": TA}).json()
    assert [r["symbol"] for r in by_topic["dead_letters"]] == ["AAPL"]
    window = client.get(
        "/dead-letters",
        params={"since": "2026-12-01T14:30:10Z", "until": "2026-12-01T14:30:25Z"},
    ).json()
    assert [(r["topic"], r["reason"]) for r in window["dead_letters"]] == [
        (TA, "invalid_message"),
        (INGEST, "malformed_frame"),
    ]
    assert len(client.get("/dead-letters", params={"limit": 1}).json()["dead_letters"]) == 1


def test_one_record_has_its_raw_bytes_and_replays(
    client: TestClient[Any], seeded: DeadLetterStore
) -> None:
    top = client.get("/dead-letters").json()["dead_letters"][0]
    seeded.record_replays(
        [(top["id"], "torghut.trades.v1", 1)], datetime(2026, 12, 5, tzinfo=UTC), "fixed"
    )
    detail = client.get(f"/dead-letters/{top['id']}").json()
    assert base64.b64decode(detail["raw"]) == b"\x01\xff"
    assert detail["dead_letter"]["replays"] == 1
    assert detail["replay_history"] == [
        {
            "replayed_at": "2026-12-05T00:00:00Z",
            "target_topic": "torghut.trades.v1",
            "messages": 1,
            "note": "fixed",
        }
    ]


def test_bad_requests_are_problem_details(client: TestClient[Any], seeded: DeadLetterStore) -> None:
    missing = client.get("/dead-letters/999999")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/dead-letters/{2**64}").status_code == 404
    assert client.get("/dead-letters", params={"since": "yesterday"}).status_code == 400
    assert client.get("/dead-letters", params={"reason": "a\x00b"}).status_code == 400
    assert client.get("/dead-letters", params={"limit": 0}).status_code == 400
    capped = client.get("/dead-letters", params={"limit": 51})  # API_MAX_ROWS=50 caps a page
    assert capped.status_code == 200
    assert capped.json()["count"] <= 50
