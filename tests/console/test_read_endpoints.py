"""The console's read endpoints over the seeded stores, values checked against what was seeded."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import httpx

from tests.console.conftest import SYMBOL, Console


def test_positions_account_pnl_and_rejections(console: Console) -> None:
    with httpx.Client(base_url=console.url, timeout=30) as http:
        positions = http.get("/trading/positions").json()
        account = http.get("/trading/account").json()
        pnl = http.get("/trading/pnl").json()
        rejections = http.get("/trading/rejections").json()
    (pos,) = positions["positions"]
    assert (pos["symbol"], Decimal(pos["qty"])) == (SYMBOL, Decimal(6))
    assert Decimal(pos["broker_qty"]) == Decimal(6)
    assert Decimal(pos["drift_qty"]) == 0
    last = Decimal(str(console.closes[-1]))
    assert Decimal(pos["last_price"]) == last
    assert Decimal(pos["market_value"]) == last * 6
    assert Decimal(pos["realized_pnl"]) == console.seeded.realized_pnl
    assert Decimal(positions["gross_exposure"]) == last * 6
    assert Decimal(account["realized_pnl"]) == console.seeded.realized_pnl
    assert account["fills"] == 2
    assert account["broker"] == "unknown"  # no broker attached to this app
    assert account["equity"] is None
    assert Decimal(pnl["realized_pnl"]) == console.seeded.realized_pnl
    assert [r["fills"] for r in pnl["by_symbol"]] == [2]
    assert sum(Decimal(d["realized_pnl"]) for d in pnl["by_day"]) == console.seeded.realized_pnl
    assert rejections["decisions"] == 1
    assert [(r["code"], r["count"]) for r in rejections["by_reason"]] == [
        ("max_notional_per_order", 1)
    ]
    assert rejections["by_reason"][0]["last_detail"] == "notional 50000 > limit 5000"


def test_dead_letters_corrections_markers_and_update(console: Console) -> None:
    with httpx.Client(base_url=console.url, timeout=30) as http:
        dead = http.get("/trading/dead-letters", params={"symbol": SYMBOL}).json()
        corrections = http.get("/trading/signal-corrections").json()
        none = http.get("/trading/dead-letters", params={"symbol": "MSFT"}).json()
        markers = http.get("/api/torghut/console/markers", params={"symbol": SYMBOL}).json()
        update = http.get("/api/torghut/console/update", params={"symbol": SYMBOL}).json()
    assert dead["count"] == 2
    assert {d["detail"] for d in dead["items"]} == {"rsi14 is NaN", "close is NaN"}
    assert none["count"] == 0
    (c,) = corrections["items"]
    assert (c["kind"], c["reason"], c["record"]["version"]) == (
        "correction",
        "signal_corrected_after_use",
        2,
    )
    kinds = sorted(m["kind"] for m in markers["markers"])
    assert kinds == ["decision", "decision", "fill", "fill", "rejection", "veto"]
    # the update: the last two minutes of bars and signals, the markers in them, the panel
    assert 100 <= len(update["bars"]) <= 121
    assert len(update["signals"]) == len(update["bars"])
    since = datetime.fromisoformat(update["since"])
    recent = [m for m in markers["markers"] if datetime.fromisoformat(m["at"]) >= since]
    assert update["markers"] == recent
    assert "veto" in [m["kind"] for m in recent]  # 60 s before the end
    assert "rejection" not in [m["kind"] for m in recent]  # 180 s before it
    assert update["trading"]["kill_switch"]["engaged"] is False
    panel = update["pipeline"]
    assert panel["ingest_state"] == "unknown"
    assert panel["dead_letters"] == [
        {"source": "trading_correction", "reason": "signal_corrected_after_use", "count": 1},
        {"source": "trading_dead_letter", "reason": "bad_value", "count": 2},
    ]
    assert panel["last_reconcile_at"] is not None
    assert timedelta(milliseconds=panel["decision_lag_ms"]) >= timedelta(seconds=59)
