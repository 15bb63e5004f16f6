"""Dedup: first sightings pass, repeats within the window drop, memory stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from operators.alpaca_decode import Family, MarketEvent
from operators.dedup import SeenWindow, dedup, identity, identity_bytes
from torghut.events import Bar, Envelope, Quote, Trade, TradingStatus, Window

T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def env(payload: Any, symbol: str = "AAPL", at: float = 0.0, **kw: Any) -> Envelope[Any]:
    ts = T0 + timedelta(seconds=at)
    return Envelope(ts, kw.pop("ingest_ts", ts), symbol, 1, payload, **kw)


def trade(i: int, **kw: Any) -> MarketEvent:
    return ("trades", env(Trade(i, "V", 10.0, 1.0), **kw))


@given(
    st.lists(st.tuples(st.integers(0, 30), st.floats(0, 8, allow_nan=False)), max_size=300),
    st.integers(1, 20),
)
def test_window_never_exceeds_max_keys_and_agrees_with_a_reference(
    steps: list[tuple[int, float]], max_keys: int
) -> None:
    """A repeat within ``window_s`` of the first sighting always drops, one more than 1.5 ×
    ``window_s`` after it always passes (in between either); a small window never holds more
    than ``max_keys`` and still drops a repeat within half the window and a third of
    ``max_keys`` identities."""
    window_s = 10.0
    w = SeenWindow(window_s, max_keys)
    big = SeenWindow(window_s, 10_000)
    first_seen: dict[int, float] = {}
    small_seen: dict[int, float] = {}
    small_order: list[int] = []  # the small window's first sightings, oldest first
    now = 0.0
    for key, dt in steps:
        now += dt
        age = now - first_seen[key] if key in first_seen else None
        fresh = big.first_sighting(key, now)
        if age is not None and age < window_s:
            assert not fresh, (key, age)
        if age is None or age > 1.5 * window_s:
            assert fresh, (key, age)
        if fresh:
            first_seen[key] = now
        # full: a repeat within half the window and a third of max_keys identities still drops
        recent = key in small_order[-(max_keys // 3) :] if max_keys >= 3 else False
        young = key in small_seen and now - small_seen[key] < window_s / 2
        small_fresh = w.first_sighting(key, now)
        if recent and young:
            assert not small_fresh, (key, max_keys)
        if small_fresh:
            small_seen[key] = now
            small_order.append(key)
        assert len(w) <= max_keys


def test_identities_follow_the_message_content() -> None:
    quote = Quote("V", 10.0, 100.0, "V", 10.1, 200.0)
    bar = Bar("updated_bar", 1.0, 2.0, 0.5, 1.5, 100.0, 10, 1.2)
    window = Window("PT1M", start=T0, end=T0 + timedelta(minutes=1))
    same_trade_later_receipt = env(Trade(7, "V", 10.0, 1.0), ingest_ts=T0 + timedelta(seconds=3))
    assert identity("trades", env(Trade(7, "V", 10.0, 1.0))) == identity(
        "trades", same_trade_later_receipt
    )
    assert identity("trades", env(Trade(7, "V", 10.0, 1.0))) != identity(
        "trades", env(Trade(7, "Q", 10.0, 1.0))
    )
    assert identity("quotes", env(quote)) != identity(
        "quotes", env(Quote("V", 10.0, 100.0, "V", 10.1, 300.0))
    )
    corrected = Bar("updated_bar", 1.0, 2.0, 0.5, 1.6, 120.0, 12, 1.3)
    assert identity("bars", env(bar, window=window)) != identity(
        "bars", env(corrected, window=window)
    )
    assert identity("bars", env(bar, window=window)) == identity("bars", env(bar, window=window))
    halt = TradingStatus("H", "Trading Halt", "LUDP", "pause")
    resume = TradingStatus("T", "Trading Resumption", "LUDP", "pause")
    assert identity("status", env(halt)) != identity("status", env(resume))
    # the bytes the window holds are equal exactly when the identities are
    assert identity_bytes("trades", env(Trade(7, "V", 10.0, 1.0))) == identity_bytes(
        "trades", same_trade_later_receipt
    )
    assert identity_bytes("quotes", env(quote)) != identity_bytes(
        "quotes", env(Quote("V", 10.0, 100.0, "V", 10.1, 300.0))
    )
    assert identity_bytes("bars", env(bar, window=window)) != identity_bytes(
        "bars", env(corrected, window=window)
    )


def test_operator_drops_repeats_keeps_order_and_counts() -> None:
    items: list[MarketEvent] = [
        trade(1, at=0),
        trade(2, at=0.1),
        trade(1, at=0, ingest_ts=T0 + timedelta(seconds=1)),  # reconnect overlap
        ("quotes", env(Quote("V", 1.0, 1.0, "V", 1.1, 1.0), at=0.2)),
        trade(3, at=0.3),
        trade(2, at=0.1, ingest_ts=T0 + timedelta(seconds=2)),
        trade(1, at=0, ingest_ts=T0 + timedelta(seconds=460)),  # past 1.5 x the 300 s window
    ]
    drops: list[tuple[Family, int]] = []
    before = REGISTRY.get_sample_value("torghut_ingest_duplicates_total", {"family": "trades"})
    out: list[MarketEvent] = []
    flow = Dataflow("dedup_test")
    up = op.input("in", flow, TestingSource(items, batch_size=10))
    op.output(
        "out", dedup("dedup", up, 300, 1000, lambda f, n: drops.append((f, n))), TestingSink(out)
    )
    run_main(flow)
    trade_ids = [e.payload.trade_id for f, e in out if f == "trades"]
    assert trade_ids == [1, 2, 3, 1]
    assert [f for f, _ in out].count("quotes") == 1
    assert sum(n for _, n in drops) == 2
    after = REGISTRY.get_sample_value("torghut_ingest_duplicates_total", {"family": "trades"})
    assert (after or 0) - (before or 0) == 2
